"""Non-dominated sorting of sweep results (the Pareto front of several objectives)."""

from __future__ import annotations

import math
from typing import Optional, Sequence


def _oriented(point: Sequence[float], directions: Sequence[str]) -> Optional[tuple[float, ...]]:
    """The point as values to minimize; None when a value is missing or not finite."""
    out = []
    for value, direction in zip(point, directions):
        if value is None or not math.isfinite(float(value)):
            return None
        out.append(-float(value) if direction == "maximize" else float(value))
    return tuple(out)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a dominates b (both already oriented to minimize): no worse anywhere, better somewhere."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_front(points: Sequence[Sequence[Optional[float]]], directions: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points, in input order.

    directions[i] is "minimize" or "maximize" for objective i. Points with a missing or
    non-finite value take no part. Equal points are all on the front (none dominates the other).
    """
    if any(d not in ("minimize", "maximize") for d in directions):
        raise ValueError(f"directions must be 'minimize' or 'maximize', got {list(directions)}")
    oriented = [(_oriented(p, directions), i) for i, p in enumerate(points)]
    valid = [(p, i) for p, i in oriented if p is not None]
    return [i for p, i in valid if not any(dominates(q, p) for q, j in valid if j != i)]


def pareto_ranks(points: Sequence[Sequence[Optional[float]]], directions: Sequence[str]) -> list[Optional[int]]:
    """Front number of each point (0: the Pareto front, 1: the front once 0 is removed, ...)."""
    ranks: list[Optional[int]] = [None] * len(points)
    remaining = [i for i, p in enumerate(points) if _oriented(p, directions) is not None]
    rank = 0
    while remaining:
        front = pareto_front([points[i] for i in remaining], directions)
        for k in front:
            ranks[remaining[k]] = rank
        chosen = {remaining[k] for k in front}
        remaining = [i for i in remaining if i not in chosen]
        rank += 1
    return ranks
