"""One latency protocol for every target, after MLPerf Inference's single-stream and offline scenarios.

For each target and batch size: `warmup` untimed runs, then up to `iterations` timed runs (stopped
early after `max_seconds` once a minimum count is in). Each timed run is one call on a prepared
batch; the clock is read with time.perf_counter_ns after the target's synchronize() (a GPU waits
for its queue). Batch 1 gives the single-stream latency (p50, p90, p99, mean of the per-call
seconds); every batch size gives an offline throughput (samples / total timed seconds).

Thread counts are fixed by the target (torch.set_num_threads, onnxruntime intra_op_num_threads)
for the duration of its measurement and recorded with its result.

Every result carries a `kind`: "measured" (wall clock on this machine or a real board),
"emulated" (the emulated board) or "simulated" (cycles / clock from potatura's simulator).
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, ContextManager, Iterator, Optional

import numpy as np

KINDS = ("measured", "emulated", "simulated")
PERCENTILES = (50, 90, 99)
MIN_TIMED_RUNS = 20


@dataclass
class LatencyPoint:
    """Statistics of one (target, batch size) point; every time in seconds per call (one batch)."""

    batch: int
    runs: int  # timed runs behind the statistics (1 for a computed figure)
    p50_s: float
    p90_s: float
    p99_s: float
    mean_s: float
    min_s: float
    max_s: float
    std_s: Optional[float]  # None where the source reports no spread (a board agent)
    throughput_per_s: float  # samples per second over the timed runs

    @classmethod
    def from_seconds(cls, batch: int, seconds: np.ndarray | list[float]) -> "LatencyPoint":
        s = np.asarray(seconds, dtype=np.float64)
        if s.size == 0:
            raise ValueError("no timed runs")
        p50, p90, p99 = np.percentile(s, PERCENTILES)
        return cls(batch=batch, runs=int(s.size), p50_s=float(p50), p90_s=float(p90), p99_s=float(p99),
                   mean_s=float(s.mean()), min_s=float(s.min()), max_s=float(s.max()), std_s=float(s.std()),
                   throughput_per_s=float(batch * s.size / s.sum()))

    @classmethod
    def computed(cls, batch: int, seconds: float) -> "LatencyPoint":
        """A figure computed, not timed (simulated cycles / clock): every statistic is that value."""
        return cls(batch=batch, runs=1, p50_s=seconds, p90_s=seconds, p99_s=seconds, mean_s=seconds,
                   min_s=seconds, max_s=seconds, std_s=0.0, throughput_per_s=batch / seconds if seconds > 0 else 0.0)


@dataclass
class TargetResult:
    """Every point of one target, with what it ran on and how the figures were obtained."""

    name: str
    kind: str  # measured | emulated | simulated
    device: str  # cpu | gpu | fpga
    description: str
    threads: Optional[int]
    points: list[LatencyPoint]
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"target {self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}")

    def point(self, batch: int) -> Optional[LatencyPoint]:
        return next((p for p in self.points if p.batch == batch), None)

    @property
    def single_stream(self) -> Optional[LatencyPoint]:
        """The batch-1 point (single-stream latency), if measured."""
        return self.point(1)

    def best_throughput(self) -> Optional[LatencyPoint]:
        return max(self.points, key=lambda p: p.throughput_per_s, default=None)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TargetResult":
        d = dict(d)
        d["points"] = [LatencyPoint(**p) for p in d.get("points", [])]
        return cls(**d)


@dataclass
class Skipped:
    """A target that was not measured and why (missing input, no device, ...)."""

    name: str
    reason: str


class Target:
    """A thing that runs inferences. Subclasses prepare a batch and run it; the protocol times it.

    Subclasses whose figures are not wall-clock timings here (simulated, board-side) override
    measure() and return results labelled with their kind.
    """

    name: str = "target"
    kind: str = "measured"
    required: Optional[str] = None  # set: asked for by the user (what asked, for the error); its failure fails the bench
    device: str = "cpu"
    description: str = ""
    threads: Optional[int] = None

    def setup(self, batch: int) -> None:
        """Prepare the inputs of a `batch`-sample call (untimed)."""

    def run(self) -> None:
        """One inference on the prepared batch."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait until the work of run() is done (a GPU's queue); before the clock is read."""

    def threads_context(self) -> ContextManager:
        """Fix the thread count for the duration of the measurement."""
        return nullcontext()

    def details(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        """Release what the target holds (sessions, device memory, agents)."""

    def measure(self, batch_sizes: list[int], iterations: int, warmup: int,
                max_seconds: float = float("inf")) -> list[TargetResult]:
        points = []
        with self.threads_context():
            for batch in batch_sizes:
                self.setup(batch)
                points.append(time_calls(self.run, self.synchronize, batch, iterations, warmup, max_seconds))
        return [TargetResult(self.name, self.kind, self.device, self.description, self.threads, points,
                             self.details())]


def time_calls(call, synchronize, batch: int, iterations: int, warmup: int,
               max_seconds: float = float("inf")) -> LatencyPoint:
    """Warm up, then time up to `iterations` calls of call() (each followed by synchronize())."""
    for _ in range(warmup):
        call()
        synchronize()
    minimum = min(iterations, MIN_TIMED_RUNS)
    budget_ns = max_seconds * 1e9
    seconds = np.empty(iterations, dtype=np.float64)
    spent = 0
    n = 0
    clock = time.perf_counter_ns
    while n < iterations:
        t0 = clock()
        call()
        synchronize()
        dt = clock() - t0
        seconds[n] = dt * 1e-9
        spent += dt
        n += 1
        if n >= minimum and spent >= budget_ns:
            break
    return LatencyPoint.from_seconds(batch, seconds[:n])


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch.set_num_threads(n) inside the block, the previous count after it."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_targets(targets: list[Target], batch_sizes: list[int], iterations: int, warmup: int,
                max_seconds: float = float("inf"), on_target=None) -> tuple[list[TargetResult], list[Skipped]]:
    """Measure every target in turn (never two at once: they would share the cores).

    A target that fails while running (a board agent that went away, a GPU error) becomes a
    Skipped entry with the error, so one target cannot hide the figures of the others; except a
    target the user asked for by name (`required`: a board agent at bench.board_url or
    $POTATURA_BOARD), whose failure raises a one-line PotaturaError naming it and the reason.
    """
    from potatura.errors import PotaturaError

    results: list[TargetResult] = []
    skipped: list[Skipped] = []
    for i, target in enumerate(targets):
        if on_target is not None:
            on_target(target)
        try:
            results.extend(target.measure(batch_sizes, iterations, warmup, max_seconds))
        except Exception as exc:  # any failure of one target is reported, not raised
            first = str(exc).splitlines()[0] if str(exc) else ""
            reason = type(exc).__name__ + (f": {first}" if first else "")
            if getattr(target, "required", None):
                for rest in targets[i + 1:]:
                    rest.close()
                raise PotaturaError(f"bench: {target.name}: {target.required} failed: {reason}") from None
            skipped.append(Skipped(target.name, f"failed while measuring: {reason}"))
        finally:
            target.close()
    return results, skipped


def speedups(results: list[TargetResult], baseline: Optional[TargetResult]) -> dict[str, Optional[float]]:
    """Batch-1 p50 of the baseline / batch-1 p50 of each target (> 1: faster than the baseline)."""
    base = baseline.single_stream if baseline is not None else None
    out: dict[str, Optional[float]] = {}
    for r in results:
        p = r.single_stream
        out[r.name] = (base.p50_s / p.p50_s) if (base is not None and p is not None and p.p50_s > 0) else None
    return out
