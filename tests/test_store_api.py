"""``rmwatch.store``'s public surface: complete (every type its public calls take or return,
every model, every error the data layer raises) and nothing private."""

from __future__ import annotations

import inspect
import typing
from enum import Enum
from types import ModuleType

import pydantic

import rmwatch.store
import rmwatch.store.etcd
from rmwatch.errors import RmwatchError
from rmwatch.store import codec, keys, keyspaces, leadership, models, roles, writer
from rmwatch.store.etcd import auth, client, config, lease, retry

_MODULES: tuple[ModuleType, ...] = (
    codec, keys, keyspaces, leadership, models, roles, writer,
    auth, client, config, lease, retry,
)  # fmt: skip


def _public_classes_in(module: ModuleType) -> set[type]:
    return {
        obj
        for name, obj in vars(module).items()
        if inspect.isclass(obj) and not name.startswith("_") and obj.__module__ == module.__name__
    }


def _rmwatch_classes(annotation: object) -> set[type]:
    """The rmwatch classes named anywhere in a resolved annotation (``X | None``, ``list[X]``)."""
    if inspect.isclass(annotation) and annotation.__module__.startswith("rmwatch."):
        return {annotation}
    found: set[type] = set()
    for arg in typing.get_args(annotation):
        found |= _rmwatch_classes(arg)
    return found


class TestStoreSurface:
    """What ``from rmwatch.store import *`` offers."""

    def test_every_name_resolves_and_none_is_private(self) -> None:
        """Each name in ``__all__`` exists, and none starts with an underscore."""
        exported = rmwatch.store.__all__
        assert [n for n in exported if n.startswith("_")] == []
        assert [n for n in exported if not hasattr(rmwatch.store, n)] == []
        assert len(set(exported)) == len(exported)

    def test_every_model_is_exported(self) -> None:
        """Every public model and enum of ``rmwatch.store.models`` is in ``__all__``, so a
        ResourceGroup can be built from exported names only."""
        wanted = {
            c.__name__
            for c in _public_classes_in(models)
            if issubclass(c, pydantic.BaseModel | Enum)
        }
        assert {"ResourceGroup", "TokenBucket", "GroupMode"} <= wanted
        assert wanted - set(rmwatch.store.__all__) == set()

    def test_every_error_the_data_layer_raises_is_exported(self) -> None:
        """Each error class the store's modules use is re-exported from ``rmwatch.store``."""
        used = {
            obj.__name__
            for module in _MODULES
            for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, RmwatchError)
        }
        assert {"NotLeaderError", "ReservedGroupError", "EtcdAuthError"} <= used
        assert used - set(rmwatch.store.__all__) == set()

    def test_types_of_the_writers_calls_are_exported(self) -> None:
        """Every rmwatch type in the signatures of Writer's and Leadership's public calls
        (constructor included) is exported from ``rmwatch.store`` or, for the etcd adapter's
        types, ``rmwatch.store.etcd``: a caller never imports a private module."""
        needed: set[type] = set()
        for cls in (rmwatch.store.Writer, rmwatch.store.Leadership):
            for name, member in vars(cls).items():
                if (name.startswith("_") and name != "__init__") or not callable(member):
                    continue
                for annotation in typing.get_type_hints(member).values():
                    needed |= _rmwatch_classes(annotation)
        names = {c.__name__ for c in needed}
        assert {"EtcdClient", "EtcdConfig", "GroupView", "ResourceGroup"} <= names
        assert names - set(rmwatch.store.__all__) - set(rmwatch.store.etcd.__all__) == set()
