"""tests/run.sh's slices: disjoint, complete, the ACME modules together, longest first."""

from __future__ import annotations

from tests.conftest import DEFAULT_SECONDS, assign_slices


def test_every_module_goes_to_exactly_one_slice_and_the_acme_ones_to_the_first() -> None:
    modules = [f"tests/m{i}.py" for i in range(10)]
    slices = assign_slices(modules, {"tests/m3.py", "tests/m7.py"}, 3, {})
    assert set(slices) == set(modules) and set(slices.values()) == {1, 2, 3}
    assert slices["tests/m3.py"] == slices["tests/m7.py"] == 1


def test_the_longest_modules_are_spread_so_slices_end_together() -> None:
    seconds = {"a": 300.0, "b": 290.0, "c": 280.0, "d": 10.0, "e": 10.0, "f": 10.0}
    slices = assign_slices(list(seconds), set(), 3, seconds)
    assert len({slices["a"], slices["b"], slices["c"]}) == 3  # one long module per slice
    load = [sum(seconds[m] for m, k in slices.items() if k == i) for i in (1, 2, 3)]
    assert max(load) - min(load) <= 30


def test_an_untimed_module_counts_as_the_default() -> None:
    slices = assign_slices(["new", "old"], set(), 2, {"old": DEFAULT_SECONDS * 10})
    assert slices["new"] != slices["old"]
