"""The distribution is one import root, ``rmwatch``, that works inside anyone's application.

The repository keeps the top-level folders ``store/`` and ``watcher/``; ``rmwatch/store`` and
``rmwatch/watcher`` are links to them. These tests build the wheel from the repository, look
inside it (nothing named ``store`` or ``watcher`` at the top of site-packages, where pip would
overwrite another distribution's package of that name), install it into a directory of its own
and import every module from there while the current directory holds an application's own
``store/`` and ``watcher/`` packages that raise when imported. They also check that this test
run itself imports the installed package, not the repository root.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

import rmwatch

REPO = Path(__file__).resolve().parents[1]
# What a build must not copy: the venv (~300 MB), git data, caches and earlier build output.
_NOT_SOURCES = shutil.ignore_patterns(
    ".venv", ".git", "*_cache", ".hypothesis", "build", "dist", "*.egg-info", "__pycache__"
)


def _project_version() -> str:
    """The version written in pyproject.toml, the one place it lives."""
    with (REPO / "pyproject.toml").open("rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert isinstance(version, str)
    return version


def _package_sources() -> set[str]:
    """Every ``.py`` file of the rmwatch package in the repository, following the two links."""
    found = set()
    for directory, dirs, files in os.walk(REPO / "rmwatch", followlinks=True):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                found.add((Path(directory) / name).relative_to(REPO).as_posix())
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel pip builds from a copy of the repository (~15 s: an isolated build env).

    A copy, because setuptools writes ``build/`` and ``rmwatch.egg-info/`` into the tree it
    builds; the checkout stays as it is and two runs can build at once.
    """
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=_NOT_SOURCES)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet"]
    built = subprocess.run(
        [*pip_wheel, "--wheel-dir", str(work / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    (path,) = (work / "dist").glob("rmwatch-*.whl")
    return path


@pytest.fixture(scope="module")
def wheel_files(wheel: Path) -> set[str]:
    """The paths inside the wheel."""
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding only the wheel's files (``pip install --no-deps --target``)."""
    target = tmp_path_factory.mktemp("installed")
    pip_install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet"]
    done = subprocess.run(
        [*pip_install, "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return target


@pytest.fixture(scope="module")
def application(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An application's directory with its own ``store`` and ``watcher`` packages.

    Their ``__init__`` raises, so any ``import store`` / ``import watcher`` left inside rmwatch
    fails loudly instead of loading the application's module.
    """
    app = tmp_path_factory.mktemp("application")
    for name in ("store", "watcher"):
        (app / name).mkdir()
        (app / name / "__init__.py").write_text(
            f"raise ImportError('the application\\'s own {name} package was imported')\n"
        )
    return app


def _run_isolated(
    args: list[str], *, installed: Path, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run this interpreter with ``-S`` on the installed wheel plus the venv's dependencies.

    ``-S`` skips site-packages' ``.pth`` files, so the editable install of the checkout is not
    on the path: rmwatch can only come from ``installed``. The current directory stays first on
    ``sys.path`` (``-c`` and ``-m`` put it there), as it does for an application's scripts.
    """
    dependencies = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    env = dict(os.environ)
    env.pop("PYTHONSAFEPATH", None)
    env["PYTHONPATH"] = os.pathsep.join([str(installed), *sorted(dependencies)])
    return subprocess.run(
        [sys.executable, "-S", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# Imports every module of the installed rmwatch (but __main__, which would run the CLI), then
# reports where rmwatch, its metadata and the application's own `store` come from.
_IMPORT_EVERYTHING = """
import importlib, importlib.metadata, importlib.util, json, pkgutil, sys
import rmwatch
from rmwatch.store import KeyLayout, Writer
from rmwatch.watcher import Replica
modules = [m.name for m in pkgutil.walk_packages(rmwatch.__path__, "rmwatch.")]
for name in modules:
    if not name.endswith(".__main__"):
        importlib.import_module(name)
print(json.dumps({
    "rmwatch": rmwatch.__file__,
    "replica": sys.modules[Replica.__module__].__file__,
    "version": rmwatch.__version__,
    "metadata": str(importlib.metadata.distribution("rmwatch").locate_file("")),
    "modules": modules,
    "loaded": sorted(n for n in sys.modules if n.split(".")[0] in ("store", "watcher")),
    "app_store": importlib.util.find_spec("store").origin,
}))
"""


class TestWheelContents:
    """What ``pip wheel`` puts in the distribution."""

    def test_nothing_named_store_or_watcher_at_the_top(self, wheel_files: set[str]) -> None:
        """Every file is under rmwatch/ or the dist-info: no top-level store/ or watcher/."""
        tops = {name.split("/")[0] for name in wheel_files}
        assert tops == {"rmwatch", f"rmwatch-{_project_version()}.dist-info"}

    def test_top_level_names_only_rmwatch(self, wheel_files: set[str], wheel: Path) -> None:
        """The dist-info's top_level.txt, which tools read for import names, says rmwatch."""
        (top_level,) = [n for n in wheel_files if n.endswith(".dist-info/top_level.txt")]
        with zipfile.ZipFile(wheel) as archive:
            assert archive.read(top_level).decode().split() == ["rmwatch"]

    def test_linked_packages_typing_marker_and_proto_are_inside(
        self, wheel_files: set[str]
    ) -> None:
        """The linked folders land under rmwatch/, with py.typed and the .proto as data."""
        for path in (
            "rmwatch/store/keys.py",
            "rmwatch/store/etcd/client.py",
            "rmwatch/watcher/replica.py",
            "rmwatch/py.typed",
            "rmwatch/store/proto/resource_manager.proto",
            "rmwatch/store/proto/meta_storagepb.proto",
            "rmwatch/store/_pb/resource_manager_pb2.pyi",
            "rmwatch/grpc/stubs/resource_manager_pb2_grpc.py",
        ):
            assert path in wheel_files, path

    def test_every_module_of_the_repository_is_in_the_wheel(self, wheel_files: set[str]) -> None:
        """No package of the source tree is left out (e.g. a folder without __init__.py)."""
        missing = _package_sources() - wheel_files
        assert not missing

    def test_the_rmwatch_command_is_declared(self, wheel_files: set[str], wheel: Path) -> None:
        """The console script ``rmwatch`` points at the CLI's main."""
        (entry_points,) = [n for n in wheel_files if n.endswith(".dist-info/entry_points.txt")]
        with zipfile.ZipFile(wheel) as archive:
            text = archive.read(entry_points).decode()
        assert "rmwatch = rmwatch.cli.main:main" in text


class TestInstalledInsideAnApplication:
    """The installed wheel, run from a directory holding the application's store/ and watcher/."""

    def test_every_module_imports_from_the_wheel(self, installed: Path, application: Path) -> None:
        """All modules import, from the installed copy, never touching the app's packages."""
        done = _run_isolated(["-c", _IMPORT_EVERYTHING], installed=installed, cwd=application)
        assert done.returncode == 0, done.stderr[-4000:]
        seen = json.loads(done.stdout)
        assert Path(seen["rmwatch"]).is_relative_to(installed)
        assert Path(seen["replica"]) == installed / "rmwatch" / "watcher" / "replica.py"
        assert Path(seen["metadata"]) == installed
        assert seen["version"] == _project_version()
        assert "rmwatch.store.writer" in seen["modules"]
        assert "rmwatch.watcher.replica" in seen["modules"]
        assert seen["loaded"] == []
        # The app's own package is what `store` means there: the shadowing above was real.
        assert Path(seen["app_store"]) == application / "store" / "__init__.py"

    def test_python_m_rmwatch_version(self, installed: Path, application: Path) -> None:
        """``python -m rmwatch --version`` prints the version from the package metadata."""
        done = _run_isolated(["-m", "rmwatch", "--version"], installed=installed, cwd=application)
        assert done.returncode == 0, done.stderr[-4000:]
        assert done.stdout.strip() == f"rmwatch {_project_version()}"

    def test_rmwatch_command_version(self, installed: Path, application: Path) -> None:
        """The installed ``rmwatch`` script answers ``--version`` from the app's directory."""
        env = dict(os.environ, PYTHONPATH=str(installed))
        done = subprocess.run(
            [str(installed / "bin" / "rmwatch"), "--version"],
            cwd=application,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        assert done.stdout.strip() == f"rmwatch {_project_version()}"


class TestThisTestRun:
    """The tests themselves import the installed package, not the repository's folders."""

    def test_repository_folders_are_not_importable(self) -> None:
        """The repository root is not on sys.path: top-level store/watcher do not resolve.

        Run the tests with ./scripts/test or .venv/bin/pytest; ``python -m pytest`` from the
        repository root puts the root on sys.path and fails this test.
        """
        assert importlib.util.find_spec("store") is None
        assert importlib.util.find_spec("watcher") is None

    def test_rmwatch_is_the_installed_distribution(self) -> None:
        """rmwatch's metadata is installed and its version is pyproject's."""
        assert rmwatch.__version__ == _project_version()
