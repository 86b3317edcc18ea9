"""The replica's snapshot cache helpers that hold process-wide state."""

from __future__ import annotations

import gc

from rmwatch.watcher.cache import gc_paused


class TestGcPaused:
    def test_gc_stays_off_if_it_was_off_when_holders_leave_out_of_order(self) -> None:
        """Two threads pause the GC (worker building, validator validating) and leave in the
        other order than they came: the GC stays as the application had it (off here), not
        as the last holder to leave saw it."""
        was = gc.isenabled()
        gc.disable()
        try:
            first, second = gc_paused(), gc_paused()
            first.__enter__()
            second.__enter__()
            first.__exit__(None, None, None)
            second.__exit__(None, None, None)
            assert not gc.isenabled(), "gc_paused re-enabled a GC the application disabled"
        finally:
            if was:
                gc.enable()
            else:
                gc.disable()

    def test_gc_comes_back_on_when_the_last_holder_leaves(self) -> None:
        """With the GC on, nested holders keep it off until the last one leaves."""
        was = gc.isenabled()
        gc.enable()
        try:
            with gc_paused():
                with gc_paused():
                    assert not gc.isenabled()
                assert not gc.isenabled()
            assert gc.isenabled()
        finally:
            if not was:
                gc.disable()
