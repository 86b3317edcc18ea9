"""Overlay behaves exactly like a dict that is copied on every change."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rmwatch.watcher.overlay import TOMBSTONE, Overlay

keys = st.integers(0, 60)
changes = st.dictionaries(keys, st.one_of(st.just(TOMBSTONE), st.integers()), max_size=12)


class TestOverlay:
    @settings(max_examples=200)
    @given(st.dictionaries(keys, st.integers(), max_size=40), st.lists(changes, max_size=40))
    def test_matches_a_copied_dict_and_never_changes_older_versions(
        self, initial: dict[int, int], steps: list[dict[int, object]]
    ) -> None:
        """Every version equals the dict model (get, in, len, iteration), and deriving a new
        version leaves every older one unchanged."""
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
            for key in range(61):
                assert (key in overlay) == (key in model)
                assert overlay.get_fast(key) == model.get(key)

    def test_folds_the_delta_into_a_new_base_once_it_grows(self) -> None:
        """The delta stays below sqrt(n) + 64 entries, so a publish copies little."""
        overlay: Overlay[int, int] = Overlay({i: i for i in range(10_000)})
        for i in range(1_000):
            overlay = overlay.updated({i: -i})
            assert len(overlay._delta) <= 100 + 64
        assert overlay[999] == -999
        assert len(overlay) == 10_000
