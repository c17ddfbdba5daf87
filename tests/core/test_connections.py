from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from integration_status.core.connections import ConnectionLimiter


def test_per_viewer_cap() -> None:
    """A viewer gets at most per_viewer streams; others are unaffected."""
    caps = ConnectionLimiter(per_viewer=2, per_process=10)
    assert [caps.acquire("a") for _ in range(3)] == [True, True, False]
    assert caps.acquire("b")
    assert caps.count == 3
    assert caps.count_for("a") == 2


def test_per_process_cap() -> None:
    """The process refuses any stream beyond per_process, whoever asks."""
    caps = ConnectionLimiter(per_viewer=5, per_process=3)
    assert [caps.acquire(v) for v in "abcd"] == [True, True, True, False]
    caps.release("a")
    assert caps.acquire("d")


def test_release_frees_a_slot_and_never_goes_negative() -> None:
    """Releasing gives the slot back; releasing what was never taken changes nothing."""
    caps = ConnectionLimiter(per_viewer=1, per_process=2)
    assert caps.acquire("a")
    caps.release("a")
    caps.release("a")
    caps.release("ghost")
    assert caps.count == 0
    assert caps.count_for("a") == 0
    assert caps.acquire("a")
    assert caps.acquire("b")
    assert not caps.acquire("c")


@pytest.mark.parametrize(("per_viewer", "per_process"), [(0, 1), (1, 0)])
def test_caps_must_be_positive(per_viewer: int, per_process: int) -> None:
    """A cap of zero would refuse everyone; it is a configuration error."""
    with pytest.raises(ValueError, match="at least 1"):
        ConnectionLimiter(per_viewer=per_viewer, per_process=per_process)


@given(st.lists(st.tuples(st.booleans(), st.sampled_from("abc")), max_size=80))
def test_counts_match_a_model(ops: list[tuple[bool, str]]) -> None:
    """Under any sequence of acquires and releases, counts equal a simple model and respect both caps."""
    caps = ConnectionLimiter(per_viewer=2, per_process=4)
    model: dict[str, int] = {}
    for acquire, viewer in ops:
        if acquire:
            expected = sum(model.values()) < 4 and model.get(viewer, 0) < 2
            assert caps.acquire(viewer) is expected
            if expected:
                model[viewer] = model.get(viewer, 0) + 1
        else:
            caps.release(viewer)
            if model.get(viewer, 0) > 0:
                model[viewer] -= 1
        assert caps.count == sum(model.values())
        assert all(caps.count_for(v) == model.get(v, 0) for v in "abc")
