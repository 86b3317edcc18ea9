"""The import layers of rmwatch, written down and enforced by reading every module's imports.

Layers, lowest first; a module may import its own layer and the layers it lists, nothing else:

=========  ==========================================================  ===========================
layer      modules                                                     may import
=========  ==========================================================  ===========================
base       ``rmwatch`` (the root), ``rmwatch.errors``,                 nothing from rmwatch
           ``rmwatch._logging``
domain     ``rmwatch.store.{keys,models,controller,settings_decode,    base
           stored_group,codec,go_json,roles}``, ``rmwatch.store._pb``
etcd       ``rmwatch.store.etcd.*`` (the etcd adapter)                 base, domain
keyspaces  ``rmwatch.store.keyspaces`` (keyspace name -> id)           base, domain, etcd
writer     every other ``rmwatch.store`` module (the writer,           base, domain, etcd,
           leadership, its drain and metrics) and the                  keyspaces
           ``rmwatch.store`` package itself, which re-exports Writer
replica    ``rmwatch.watcher.*``                                       base, domain, etcd,
                                                                       keyspaces
serving    ``rmwatch.http.*``, ``rmwatch.grpc.*``                      all of the above
testing    ``rmwatch.testing.*`` (helpers for users' tests)            base ... replica
cli        ``rmwatch.cli.*``, ``rmwatch.__main__``                     everything
=========  ==========================================================  ===========================

The writer and the replica are siblings: neither imports the other (data flows writer -> etcd ->
replica, never through a Python import). Besides the layers:

- nothing in rmwatch imports the repository's ``tests``, ``bench``, the tests' helpers
  (``harness``, ``history``, ``conftest``, ``*_support``), or the top-level ``store`` /
  ``watcher`` folders (only their ``rmwatch.store`` / ``rmwatch.watcher`` names exist once
  installed);
- the domain talks to neither etcd nor HTTP (no pyetcd, grpc, fastapi, starlette, uvicorn, httpx);
- tests and benchmarks import ``rmwatch.*``, never the top-level ``store`` / ``watcher``.

Imports are read with ``ast`` from the source of the installed package, at module level and
inside functions, ``if TYPE_CHECKING:`` blocks included (a type-only import still ties the
layers). ``from rmwatch.store import codec`` counts as importing the submodule
``rmwatch.store.codec``; ``from rmwatch.store import KeyLayout`` as importing the package
``rmwatch.store``, which is the writer layer: lower layers import the defining module.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import rmwatch

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIR = Path(rmwatch.__file__).parent

# Each layer and the layers it may import besides itself. Order is the table's.
MAY_IMPORT: dict[str, frozenset[str]] = {
    "base": frozenset(),
    "domain": frozenset({"base"}),
    "etcd": frozenset({"base", "domain"}),
    "keyspaces": frozenset({"base", "domain", "etcd"}),
    "writer": frozenset({"base", "domain", "etcd", "keyspaces"}),
    "replica": frozenset({"base", "domain", "etcd", "keyspaces"}),
    "serving": frozenset({"base", "domain", "etcd", "keyspaces", "writer", "replica"}),
    "testing": frozenset({"base", "domain", "etcd", "keyspaces", "writer", "replica"}),
    "cli": frozenset(
        {"base", "domain", "etcd", "keyspaces", "writer", "replica", "serving", "testing"}
    ),
}

_DOMAIN = (
    "keys", "models", "controller", "settings_decode", "stored_group", "codec", "go_json",
    "roles", "_pb",
)  # fmt: skip
# Top-level names that belong to the repository, not to the installed package.
_REPOSITORY_ONLY = frozenset({"tests", "bench", "store", "watcher", "harness", "history"})
_REPOSITORY_ONLY_PREFIXES = ("conftest", "test_")
_REPOSITORY_ONLY_SUFFIXES = ("_support",)
# What the domain must not depend on: etcd's client and transport, and the HTTP stack.
_NOT_IN_DOMAIN = frozenset({"pyetcd", "grpc", "fastapi", "starlette", "uvicorn", "httpx"})

# Known breaks of the rules above in today's code, each (importer, imported) with its reason.
# Colleagues are moving these modules; every entry is removed once its import is gone (a stale
# entry fails test_known_violations_still_exist, so the list cannot silently outlive them).
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}


def layer_of(module: str) -> str | None:
    """The layer of an rmwatch module name, or None for a module no layer names yet."""
    parts = module.split(".")
    if module in ("rmwatch", "rmwatch.errors", "rmwatch._logging"):
        return "base"
    if module == "rmwatch.__main__":
        return "cli"
    if len(parts) < 2 or parts[0] != "rmwatch":
        return None
    top = parts[1]
    if top == "store":
        if len(parts) == 2:
            return "writer"  # the package: it re-exports Writer and Leadership
        if parts[2] in _DOMAIN:
            return "domain"
        if parts[2] == "etcd":
            return "etcd"
        if parts[2] == "keyspaces":
            return "keyspaces"
        return "writer"
    return {
        "watcher": "replica",
        "http": "serving",
        "grpc": "serving",
        "testing": "testing",
        "cli": "cli",
    }.get(top)


@dataclass(frozen=True)
class Import:
    """One imported module name, where it is imported, and on which line."""

    importer: str
    imported: str
    line: int


def module_files(package_dir: Path, package: str) -> dict[str, Path]:
    """Every module of a package directory by dotted name, following linked folders."""
    found: dict[str, Path] = {}
    for directory, dirs, files in os.walk(package_dir, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        relative = Path(directory).relative_to(package_dir).parts
        for name in files:
            if not name.endswith(".py"):
                continue
            stem = name.removesuffix(".py")
            parts = [package, *relative] + ([] if stem == "__init__" else [stem])
            found[".".join(parts)] = Path(directory) / name
    return found


def imports_of(
    module: str, source: str, *, is_package: bool, known: frozenset[str]
) -> Iterator[Import]:
    """Every module ``source`` imports, anywhere in it, resolved to absolute names.

    ``from pkg import name`` is the submodule ``pkg.name`` when that is a known module, else
    ``pkg`` itself (the name is an attribute of it).
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, node.module] if node.module else base_parts)
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield Import(module, candidate if candidate in known else base, node.lineno)


def is_repository_only(name: str) -> bool:
    """Whether an imported name belongs to the repository, not to the installed package."""
    top = name.split(".", maxsplit=1)[0]
    return (
        top in _REPOSITORY_ONLY
        or top.startswith(_REPOSITORY_ONLY_PREFIXES)
        or top.endswith(_REPOSITORY_ONLY_SUFFIXES)
    )


def layer_violation(found: Import) -> str | None:
    """Why an import breaks the layers, or None when it is allowed (or not rmwatch's)."""
    if found.imported.split(".")[0] != "rmwatch":
        return None
    source, target = layer_of(found.importer), layer_of(found.imported)
    if source is None or target is None:
        return None
    if source == target and source != "base":  # base modules import nothing from rmwatch
        return None
    if target in MAY_IMPORT[source]:
        return None
    allowed = ", ".join(sorted(MAY_IMPORT[source])) or "nothing from rmwatch"
    return f"{source} imports {target}; {source} may import {allowed}"


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    """The installed package's modules (the editable install maps them to the checkout)."""
    return module_files(PACKAGE_DIR, "rmwatch")


@pytest.fixture(scope="module")
def all_imports(modules: dict[str, Path]) -> list[Import]:
    """Every import of every rmwatch module."""
    known = frozenset(modules)
    found: list[Import] = []
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        found.extend(imports_of(name, path.read_text(), is_package=is_package, known=known))
    return found


def _report(broken: list[tuple[Import, str]]) -> str:
    """One line per broken import, for the assertion message."""
    return "\n".join(f"{i.importer}:{i.line} imports {i.imported}: {why}" for i, why in broken)


class TestTheScan:
    """The checker reads what it should, so a clean result means something."""

    def test_every_module_is_read_including_the_linked_folders(
        self, modules: dict[str, Path]
    ) -> None:
        """Modules under rmwatch/store and rmwatch/watcher (links) are found by rmwatch name."""
        for name in (
            "rmwatch.errors",
            "rmwatch.store.keys",
            "rmwatch.store.etcd.client",
            "rmwatch.watcher.replica",
            "rmwatch.http",
            "rmwatch.cli.main",
        ):
            assert name in modules, name

    def test_every_module_has_a_layer(self, modules: dict[str, Path]) -> None:
        """A new top-level module gets a place in the table above before it lands."""
        unplaced = sorted(name for name in modules if layer_of(name) is None)
        assert not unplaced, f"add these to layer_of and the docstring's table: {unplaced}"

    def test_resolves_relative_and_submodule_imports(self) -> None:
        """``from . import x``, ``from ..etcd import y`` and ``from pkg import submodule``."""
        known = frozenset({"rmwatch.store.etcd", "rmwatch.store.codec", "rmwatch.store.keys"})
        source = (
            "from . import codec\n"
            "from .etcd import connect\n"
            "from rmwatch.store import KeyLayout\n"
            "def f():\n    import rmwatch.http.body\n"
        )
        got = [
            i.imported
            for i in imports_of("rmwatch.store.keys", source, is_package=False, known=known)
        ]
        assert got == [
            "rmwatch.store.codec",
            "rmwatch.store.etcd",
            "rmwatch.store",
            "rmwatch.http.body",
        ]

    def test_flags_an_upward_import(self) -> None:
        """A domain module importing the HTTP layer, or the store facade, is a violation."""
        assert layer_violation(Import("rmwatch.store.keys", "rmwatch.http.body", 1)) is not None
        assert layer_violation(Import("rmwatch.watcher.cache", "rmwatch.store", 1)) is not None
        assert (
            layer_violation(Import("rmwatch.store.writer", "rmwatch.watcher.cache", 1)) is not None
        )
        assert layer_violation(Import("rmwatch.errors", "rmwatch._logging", 1)) is not None
        assert layer_violation(Import("rmwatch.cli.dev", "rmwatch.testing.etcd", 1)) is None
        assert layer_violation(Import("rmwatch.watcher.loader", "rmwatch.store.etcd", 1)) is None


class TestLayers:
    """The rules in the module docstring hold for every module of the package."""

    def test_lower_layers_never_import_higher_ones(self, all_imports: list[Import]) -> None:
        """Each import goes to the importer's own layer or one it may use."""
        broken = [
            (i, why)
            for i in all_imports
            if (why := layer_violation(i)) and (i.importer, i.imported) not in KNOWN_VIOLATIONS
        ]
        assert not broken, _report(broken)

    def test_nothing_imports_repository_only_code(self, all_imports: list[Import]) -> None:
        """No import of tests, bench, test helpers, or the top-level store/watcher folders."""
        broken = [
            (i, "not part of the installed package")
            for i in all_imports
            if is_repository_only(i.imported) and (i.importer, i.imported) not in KNOWN_VIOLATIONS
        ]
        assert not broken, _report(broken)

    def test_the_domain_needs_neither_etcd_nor_http(self, all_imports: list[Import]) -> None:
        """Keys, models, codecs and roles import no etcd client, gRPC or HTTP library."""
        broken = [
            (i, "the domain stays free of etcd and HTTP")
            for i in all_imports
            if layer_of(i.importer) == "domain" and i.imported.split(".")[0] in _NOT_IN_DOMAIN
        ]
        assert not broken, _report(broken)

    def test_known_violations_still_exist(self, all_imports: list[Import]) -> None:
        """Every allow-listed violation is still in the code; remove the ones that are gone."""
        present = {(i.importer, i.imported) for i in all_imports}
        stale = sorted(set(KNOWN_VIOLATIONS) - present)
        assert not stale, f"fixed, remove from KNOWN_VIOLATIONS: {stale}"


class TestRepositoryCode:
    """Tests and benchmarks use the one import root, as users do."""

    @pytest.mark.parametrize("folder", ["tests", "bench"])
    def test_imports_rmwatch_never_the_top_level_folders(self, folder: str) -> None:
        """No ``import store`` / ``from watcher...`` in tests/ or bench/."""
        paths = sorted((REPO / folder).rglob("*.py"))
        assert paths, f"no Python files under {folder}/"
        broken = []
        for path in paths:
            name = path.relative_to(REPO).with_suffix("").as_posix().replace("/", ".")
            source = path.read_text()
            for found in imports_of(name, source, is_package=False, known=frozenset()):
                if found.imported.split(".")[0] in ("store", "watcher"):
                    broken.append((found, "import rmwatch.store / rmwatch.watcher instead"))
        assert not broken, _report(broken)
