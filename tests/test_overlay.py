"""Overlay behaves exactly like a dict that is copied on every change."""

from __future__ import annotations

from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmwatch.watcher import overlay as overlay_module
from rmwatch.watcher.overlay import TOMBSTONE, Overlay

keys = st.integers(0, 60)
changes = st.dictionaries(keys, st.one_of(st.just(TOMBSTONE), st.integers()), max_size=12)


class TestOverlay:
    @settings(max_examples=300)
    @given(
        st.dictionaries(keys, st.integers(), max_size=40),
        st.lists(changes, max_size=40),
        st.sampled_from([(16, 64), (0, 0), (0, 8), (2, 0)]),
    )
    def test_matches_a_copied_dict_and_never_changes_older_versions(
        self,
        initial: dict[int, int],
        steps: list[dict[int, object]],
        slack: tuple[int, int],
    ) -> None:
        """Every version equals the dict model (get, [], in, len, iteration), and deriving a new
        version leaves every older one unchanged; with the layers' slack at the default and at
        none (merges and folds on nearly every update), so every path is walked."""
        with patch.multiple(overlay_module, DELTA_SLACK=slack[0], MID_SLACK=slack[1]):
            self._check(initial, steps)

    def _check(self, initial: dict[int, int], steps: list[dict[int, object]]) -> None:
        versions = [(Overlay(dict(initial)), dict(initial))]
        for step in steps:
            overlay, model = versions[-1]
            new_model = dict(model)
            for key, value in step.items():
                if value is TOMBSTONE:
                    new_model.pop(key, None)
                else:
                    new_model[key] = value  # type: ignore[assignment]
            versions.append((overlay.updated(step), new_model))  # type: ignore[arg-type]
        for overlay, model in versions:
            assert dict(overlay.items()) == model
            assert len(overlay) == len(model)
            assert list(overlay) == list(dict(overlay.items()))  # no key twice
            for key in range(61):
                assert (key in overlay) == (key in model)
                assert overlay.get_fast(key) == model.get(key)
                if key in model:
                    assert overlay[key] == model[key]
                else:
                    with pytest.raises(KeyError):
                        overlay[key]

    def test_layers_stay_small_and_the_base_is_rebuilt_rarely(self) -> None:
        """At 100k keys and one key an update the delta stays within ~60 + 16 entries and the
        middle layer within ~3400 + 64, and the base is copied once per ~3400 updates."""
        base = {i: i for i in range(100_000)}
        overlay: Overlay[int, int] = Overlay(base)
        bases = 0
        for i in range(10_000):
            before = overlay._base
            overlay = overlay.updated({i * 7 % 100_000: -i})
            bases += overlay._base is not before
            assert len(overlay._delta) <= 58 + 16
            assert len(overlay._mid) <= 3420 + 64
        assert bases == 2
        assert overlay[9_999 * 7 % 100_000] == -9_999
        assert len(overlay) == 100_000
