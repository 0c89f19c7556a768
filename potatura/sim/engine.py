"""Event-driven dataflow timing: modules joined by bounded FIFOs, blocking reads and writes.

A module runs a program of steps (one pipelined loop iteration each): a step starts no earlier
than `busy` cycles after the previous step of the same module started (its initiation interval)
and not before every token it reads is in its FIFOs (a token written at cycle w is readable at
w + the FIFO's latency: 1 for an hls::stream, 0 for a wire between the layers of one pipelined
function); it reads them at its start and writes its tokens `depth` cycles later (the pipeline
depth), or later when a FIFO is full: a write of token k into a FIFO of depth D needs token k - D
read at least a cycle before. A delayed write stalls the module's pipeline: the next step starts
that much later. This is how HLS dataflow processes with hls::stream FIFOs behave.

The engine never steps cycles one by one: it resolves the cycle of every read and write in
dependency order (a module advances until it needs a token or a free slot that another module
has not produced yet, then waits for that event). When every unfinished module waits, the design
deadlocks: the error names the full FIFO(s) and the cycle the writer stalled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from potatura.sim.errors import DeadlockError


@dataclass
class Step:
    """One iteration: read one token from each of `reads`, write one to each of `writes` (FIFO indices)."""

    busy: int  # cycles until the module's next step may start (the initiation interval)
    depth: int = 0  # cycles from the start to the writes (pipeline depth)
    reads: tuple[int, ...] = ()
    writes: tuple[int, ...] = ()


@dataclass
class Module:
    name: str
    op: str
    program: list[Step]  # the steps of one sample (repeated per sample)
    trip_count: int = 0  # loop iterations per sample (steps)
    ii: int = 1  # initiation interval of its main loop (cycles)
    latency: int = 0  # cycles from its first read to its last write for one sample, unstalled
    info: dict = field(default_factory=dict)


@dataclass
class Fifo:
    name: str
    depth: Optional[int]  # None: unbounded
    writer: int = -1
    reader: int = -1
    tokens_per_sample: int = 0
    latency: int = 1  # cycles from a write until the token can be read (1: an hls::stream FIFO; 0: a wire)


@dataclass
class Trace:
    """Cycle of every token write/read per FIFO, and per module: start of each sample, stalls."""

    writes: list[np.ndarray]
    reads: list[np.ndarray]
    first_start: np.ndarray  # (modules, samples): cycle of the first step of each sample
    last_end: np.ndarray  # (modules, samples): cycle after the last write/step of each sample
    stall_in: np.ndarray  # (modules,) cycles a step waited for an input token
    stall_out: np.ndarray  # (modules,) cycles writes waited for a free FIFO slot
    end_cycle: int

    def max_occupancy(self, f: int) -> int:
        """Most tokens a FIFO held at once (token j occupies it from its write to its read, inclusive)."""
        w, r = self.writes[f], self.reads[f]
        if len(w) == 0:
            return 0
        before = np.searchsorted(r, w, side="left")  # tokens read strictly before each write
        return int(np.max(np.arange(1, len(w) + 1) - before))


def simulate(modules: Sequence[Module], fifos: Sequence[Fifo], samples: int = 1,
             depths: Optional[Sequence[Optional[int]]] = None) -> Trace:
    """Run `samples` samples back to back through the network; return the trace.

    depths overrides the FIFOs' depths (None = unbounded). Raises DeadlockError.
    """
    n_f = len(fifos)
    depth = [f.depth for f in fifos] if depths is None else list(depths)
    totals = [f.tokens_per_sample * samples for f in fifos]
    fifo_latency = [f.latency for f in fifos]
    w_time = [np.full(t, -1, dtype=np.int64) for t in totals]
    r_time = [np.full(t, -1, dtype=np.int64) for t in totals]
    w_count = [0] * n_f
    r_count = [0] * n_f
    n_m = len(modules)
    first_start = np.zeros((n_m, samples), dtype=np.int64)
    last_end = np.zeros((n_m, samples), dtype=np.int64)
    stall_in = np.zeros(n_m, dtype=np.int64)
    stall_out = np.zeros(n_m, dtype=np.int64)
    # Module state: sample, step index, earliest start of the next step.
    sample = [0] * n_m
    pos = [0] * n_m
    ready = [0] * n_m
    done = [samples == 0 or not m.program for m in modules]
    waiting_on: dict[tuple[int, str], list[int]] = {}  # (fifo, "w"/"r") -> modules to wake
    blocked: dict[int, tuple[int, str, int]] = {}  # module -> (fifo, what it waits for, cycle)
    work = list(range(n_m))[::-1]
    queued = set(work)

    def wake(f: int, kind: str) -> None:
        for m in waiting_on.pop((f, kind), ()):
            if m not in queued:
                queued.add(m)
                work.append(m)

    while work:
        m = work.pop()
        queued.discard(m)
        blocked.pop(m, None)
        mod = modules[m]
        prog = mod.program
        while not done[m]:
            step = prog[pos[m]]
            start = ready[m]
            stop = None
            for f in step.reads:
                k = r_count[f]
                if k >= w_count[f]:
                    stop = (f, "w", start)  # the token is not written yet
                    break
                avail = int(w_time[f][k]) + fifo_latency[f]
                if avail > start:
                    start = avail
            if stop is None:
                for f in step.writes:
                    k = w_count[f]
                    d = depth[f]
                    if d is not None and k >= d and r_count[f] <= k - d:
                        stop = (f, "r", start + step.depth)  # full: token k - d not read yet
                        break
            if stop is not None:
                waiting_on.setdefault(stop[:2], []).append(m)
                blocked[m] = stop
                break
            stall_in[m] += start - ready[m]
            if pos[m] == 0:
                first_start[m, sample[m]] = start
            for f in step.reads:
                r_time[f][r_count[f]] = start
                r_count[f] += 1
                wake(f, "r")
            write_at = start + step.depth
            for f in step.writes:
                k = w_count[f]
                d = depth[f]
                if d is not None and k >= d:
                    free = int(r_time[f][k - d]) + 1
                    if free > write_at:
                        write_at = free
            delay = write_at - (start + step.depth)
            stall_out[m] += delay
            for f in step.writes:
                w_time[f][w_count[f]] = write_at
                w_count[f] += 1
                wake(f, "w")
            ready[m] = start + delay + step.busy
            end = max(write_at, start + delay + step.busy) if step.writes else start + delay + step.busy
            if end > last_end[m, sample[m]]:
                last_end[m, sample[m]] = end
            pos[m] += 1
            if pos[m] == len(prog):
                pos[m] = 0
                sample[m] += 1
                if sample[m] == samples:
                    done[m] = True
    if not all(done):
        full = {modules[m].name: (fifos[f].name, cycle) for m, (f, kind, cycle) in blocked.items() if kind == "r"}
        starving = {modules[m].name: fifos[f].name for m, (f, kind, _) in blocked.items() if kind == "w"}
        if full:
            writer, (fifo, cycle) = min(full.items(), key=lambda kv: kv[1][1])
            names = ", ".join(sorted({v[0] for v in full.values()}))
            raise DeadlockError(
                f"sim: deadlock at cycle {cycle}: FIFO {fifo!r} (depth {depth[[x.name for x in fifos].index(fifo)]}) "
                f"is full and {writer!r} cannot write to it while its reader waits on another stream; "
                f"too shallow: {names}", fifo=fifo, cycle=int(cycle),
                blocked={**{k: f"writing {v[0]} (full)" for k, v in full.items()},
                         **{k: f"reading {v} (empty)" for k, v in starving.items()}})
        raise DeadlockError(f"sim: deadlock: modules wait on empty streams {starving}", fifo="", cycle=0,
                            blocked=starving)
    end_cycle = int(max((int(t[-1]) for t in w_time if len(t)), default=0))
    end_cycle = max(end_cycle, int(last_end.max(initial=0)))
    return Trace(w_time, r_time, first_start, last_end, stall_in, stall_out, end_cycle)
