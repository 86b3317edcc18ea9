"""The public surface: the version, the names each package exports, and the one error tree.

Users write ``from rmwatch.watcher import Replica``, ``from rmwatch.store import Writer`` and
catch errors from ``rmwatch.errors``; these tests keep those promises honest: every exported
name exists and is rmwatch's own, each package exports the errors its callers can meet, the
tree drawn in ``rmwatch.errors``' docstring is exactly the class hierarchy, and the version is
written in one place (pyproject.toml) and read from the installed metadata.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

import rmwatch
import rmwatch.errors
import rmwatch.store
import rmwatch.testing
import rmwatch.watcher
from rmwatch.errors import ReplicaError, RmwatchError, WriteError

REPO = Path(__file__).resolve().parents[1]
PUBLIC_PACKAGES = ["rmwatch", "rmwatch.store", "rmwatch.watcher", "rmwatch.testing"]

# Errors a package should export but does not yet, each with its reason. Colleagues own those
# packages; every entry is removed once the name is exported (a stale entry fails
# test_known_gaps_are_still_gaps).
KNOWN_EXPORT_GAPS: dict[tuple[str, str], str] = {}

# Files that still carry the version as a literal, each with its reason; removed once they
# read rmwatch.__version__ (a stale entry fails test_known_version_copies_are_still_there).
KNOWN_VERSION_COPIES: dict[str, str] = {}


def _project_version() -> str:
    """The version written in pyproject.toml."""
    with (REPO / "pyproject.toml").open("rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert isinstance(version, str)
    return version


def _error_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in rmwatch.errors, by name."""
    return {
        name: obj
        for name, obj in vars(rmwatch.errors).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == "rmwatch.errors"
    }


def _subclasses_of(base: type[BaseException]) -> set[str]:
    """The names of ``base`` and every error in rmwatch.errors that derives from it."""
    return {name for name, cls in _error_classes().items() if issubclass(cls, base)}


@dataclass(frozen=True)
class TreeEntry:
    """One line of the error tree: the class name, its parent in the tree, its description."""

    name: str
    parent: str | None
    text: str


_TREE_LINE = re.compile(r"^(?P<prefix>(?:[│ ]   )*(?:[├└]── )?)(?P<name>\w+)\s*(?P<text>.*)$")


def parse_error_tree(doc: str) -> list[TreeEntry]:
    """The tree drawn in a docstring: from the line ``RmwatchError`` to the first blank line.

    Each level indents by four columns (``├── ``, ``│   ``), so a line's depth is the width of
    its prefix over four, and its parent is the nearest line above it one level up.
    """
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "RmwatchError")
    entries: list[TreeEntry] = []
    stack: list[str] = []
    for line in lines[start:]:
        if not line.strip():
            break
        match = _TREE_LINE.match(line)
        assert match, f"not a tree line: {line!r}"
        depth = len(match["prefix"]) // 4
        del stack[depth:]
        entries.append(TreeEntry(match["name"], stack[-1] if stack else None, match["text"]))
        stack.append(match["name"])
    return entries


class TestVersion:
    """One version, in pyproject.toml, read at run time from the installed metadata."""

    def test_version_is_the_installed_metadata(self) -> None:
        """``rmwatch.__version__`` is what importlib.metadata says, which is pyproject's."""
        assert rmwatch.__version__ == importlib.metadata.version("rmwatch")
        assert rmwatch.__version__ == _project_version()

    def test_no_other_copy_of_the_version_in_code_or_scripts(self) -> None:
        """Python files, scripts, CI and pyproject name the version only in [project].

        docker/ is left out: its image tags (``rmwatch:<version>``) are deployment examples.
        """
        found = _files_with_version_literal()
        unexpected = sorted(set(found) - set(KNOWN_VERSION_COPIES))
        assert not unexpected, f"use rmwatch.__version__ instead of a literal in: {unexpected}"

    def test_known_version_copies_are_still_there(self) -> None:
        """Each allow-listed copy still exists; remove the entries that were fixed."""
        stale = sorted(set(KNOWN_VERSION_COPIES) - set(_files_with_version_literal()))
        assert not stale, f"fixed, remove from KNOWN_VERSION_COPIES: {stale}"


def _files_with_version_literal() -> list[str]:
    """Repository paths of code and scripts that contain the version as a literal."""
    version = re.compile(rf"(?<![\w.]){re.escape(_project_version())}(?![\w.])")
    paths: set[Path] = set()
    for folder in ("rmwatch", "tests", "bench"):
        for directory, dirs, files in os.walk(REPO / folder, followlinks=True):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            paths.update(Path(directory) / f for f in files if f.endswith(".py"))
    paths.update(p for p in (REPO / "scripts").iterdir() if p.is_file())
    paths.update(p for p in (REPO / ".ci").iterdir() if p.is_file())
    found = sorted(p.relative_to(REPO).as_posix() for p in paths if version.search(p.read_text()))
    # pyproject.toml: the [project] table's `version = ...` is the one place; nothing else.
    pyproject = (REPO / "pyproject.toml").read_text().splitlines()
    others = [line for line in pyproject if version.search(line)]
    if len(others) != 1 or not others[0].startswith("version = "):
        found.append("pyproject.toml")
    return found


class TestExports:
    """Each public package's ``__all__`` names real, importable objects of rmwatch's own."""

    @pytest.mark.parametrize("name", PUBLIC_PACKAGES)
    def test_all_names_exist_once(self, name: str) -> None:
        """Every name in ``__all__`` is an attribute of the package, listed once."""
        module = importlib.import_module(name)
        exported = list(module.__all__)
        assert exported
        assert len(exported) == len(set(exported))
        missing = [n for n in exported if not hasattr(module, n)]
        assert not missing

    @pytest.mark.parametrize("name", PUBLIC_PACKAGES)
    def test_star_import_gives_exactly_all(self, name: str) -> None:
        """``from package import *`` binds exactly the names of ``__all__``."""
        namespace: dict[str, object] = {}
        exec(f"from {name} import *", namespace)
        namespace.pop("__builtins__")
        assert set(namespace) == set(importlib.import_module(name).__all__)

    @pytest.mark.parametrize("name", PUBLIC_PACKAGES)
    def test_exported_classes_and_functions_are_rmwatch_own(self, name: str) -> None:
        """No third-party class or function leaks into the public surface."""
        module = importlib.import_module(name)
        foreign = [
            n
            for n in module.__all__
            if (inspect.isclass(obj := getattr(module, n)) or inspect.isfunction(obj))
            and not obj.__module__.startswith("rmwatch.")
        ]
        assert not foreign

    def test_watcher_exports_the_replica_and_its_errors(self) -> None:
        """``rmwatch.watcher``: Replica, and every error a replica's reader can meet."""
        wanted = {"Replica"} | _subclasses_of(ReplicaError)
        _assert_exports(rmwatch.watcher, wanted)

    def test_store_exports_writer_layout_and_their_errors(self) -> None:
        """``rmwatch.store``: Writer, KeyLayout, and every error a write or a key can raise."""
        wanted = {"Writer", "KeyLayout", "RmwatchError"} | _subclasses_of(WriteError)
        wanted |= {"InvalidKeyError", "DecodeError", "InvalidInputError"}
        wanted |= {"EtcdUnavailableError", "EtcdAuthError"}
        _assert_exports(rmwatch.store, wanted)

    @pytest.mark.parametrize("module", [rmwatch.store, rmwatch.watcher])
    def test_exported_errors_are_the_ones_of_rmwatch_errors(self, module: ModuleType) -> None:
        """A re-exported error is the very class of rmwatch.errors (one tree, no copies)."""
        errors = _error_classes()
        names = [n for n in module.__all__ if n.endswith("Error")]
        assert names
        for name in names:
            assert getattr(module, name) is errors[name], name

    def test_known_gaps_are_still_gaps(self) -> None:
        """Each allow-listed missing export is still missing; remove the ones now exported."""
        stale = [
            (package, name)
            for package, name in KNOWN_EXPORT_GAPS
            if name in importlib.import_module(package).__all__
        ]
        assert not stale, f"exported now, remove from KNOWN_EXPORT_GAPS: {stale}"


def _assert_exports(module: ModuleType, wanted: set[str]) -> None:
    """``module.__all__`` holds every wanted name but the allow-listed gaps."""
    gaps = {name for package, name in KNOWN_EXPORT_GAPS if package == module.__name__}
    missing = sorted(wanted - set(module.__all__) - gaps)
    assert not missing, f"{module.__name__}.__all__ lacks {missing}"


class TestErrorTree:
    """``rmwatch.errors`` holds every error, drawn once in its docstring as the real hierarchy."""

    def test_every_error_derives_from_rmwatch_error(self) -> None:
        """Catching RmwatchError catches everything rmwatch raises."""
        errors = _error_classes()
        assert len(errors) > 10
        assert all(issubclass(cls, RmwatchError) for cls in errors.values())

    def test_the_tree_names_every_error_once(self) -> None:
        """The docstring's tree and the module's classes are the same set."""
        entries = parse_error_tree(rmwatch.errors.__doc__ or "")
        names = [e.name for e in entries]
        assert len(names) == len(set(names))
        assert set(names) == set(_error_classes())

    def test_the_tree_is_the_class_hierarchy(self) -> None:
        """Each error's parent in the drawing is its base class among rmwatch's errors."""
        errors = _error_classes()
        for entry in parse_error_tree(rmwatch.errors.__doc__ or ""):
            cls = errors[entry.name]
            ours = [b.__name__ for b in cls.__bases__ if b.__name__ in errors]
            assert ours == ([entry.parent] if entry.parent else []), entry.name

    def test_every_error_is_described(self) -> None:
        """Each line of the tree says what the error means, and each class has a docstring."""
        for entry in parse_error_tree(rmwatch.errors.__doc__ or ""):
            if entry.parent is not None:
                assert entry.text, entry.name
            assert _error_classes()[entry.name].__doc__, entry.name

    def test_the_parser_reads_depth_and_parents(self) -> None:
        """A small drawing parses into names with the right parents."""
        doc = "Title.\n\nRmwatchError\n├── AError   a\n│   └── BError  b\n└── CError  c\n"
        assert parse_error_tree(doc) == [
            TreeEntry("RmwatchError", None, ""),
            TreeEntry("AError", "RmwatchError", "a"),
            TreeEntry("BError", "AError", "b"),
            TreeEntry("CError", "RmwatchError", "c"),
        ]
