"""Pareto front and non-dominated ranks on hand-made points."""

import math

import pytest

from potatura.sweep.pareto import dominates, pareto_front, pareto_ranks


def test_front_of_two_objectives_mixed_directions():
    # (accuracy: maximize, latency: minimize)
    points = [
        (0.90, 10.0),  # 0: front
        (0.95, 20.0),  # 1: front
        (0.85, 12.0),  # 2: dominated by 0 (less accurate and slower)
        (0.95, 25.0),  # 3: dominated by 1 (as accurate, slower)
        (0.99, 40.0),  # 4: front (most accurate)
        (0.80, 5.0),   # 5: front (fastest)
        (0.90, 10.0),  # 6: equal to 0: not dominated, on the front too
    ]
    assert pareto_front(points, ["maximize", "minimize"]) == [0, 1, 4, 5, 6]
    assert pareto_ranks(points, ["maximize", "minimize"]) == [0, 0, 1, 1, 0, 0, 0]


def test_front_of_three_objectives_and_missing_values():
    # (accuracy max, latency min, LUT fraction min)
    points = [
        (0.9, 10, 0.5),   # 0: front
        (0.9, 10, 0.6),   # 1: dominated by 0 (more LUTs)
        (0.8, 10, 0.1),   # 2: front (fewest LUTs)
        (0.95, 30, 0.9),  # 3: front
        (None, 1, 0.1),   # 4: not measured: no part in the front
        (0.97, math.nan, 0.1),  # 5: not finite: no part
    ]
    assert pareto_front(points, ["maximize", "minimize", "minimize"]) == [0, 2, 3]
    assert pareto_ranks(points, ["maximize", "minimize", "minimize"])[1] == 1
    assert pareto_ranks(points, ["maximize", "minimize", "minimize"])[4:] == [None, None]


def test_single_objective_front_is_the_best():
    assert pareto_front([(3.0,), (1.0,), (2.0,)], ["minimize"]) == [1]
    assert pareto_front([(3.0,), (1.0,), (2.0,)], ["maximize"]) == [0]
    assert dominates((1, 1), (1, 2)) and not dominates((1, 1), (1, 1)) and not dominates((0, 2), (1, 1))


def test_bad_direction_is_an_error():
    with pytest.raises(ValueError, match="minimize"):
        pareto_front([(1.0,)], ["min"])
