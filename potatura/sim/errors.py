"""Simulator errors: one clear line naming the FIFO, module or file."""

from __future__ import annotations

from potatura.errors import PotaturaError


class SimError(PotaturaError):
    """A design the simulator cannot model (the message names the layer and what is supported)."""


class DeadlockError(SimError):
    """Every module waits and no token can move: `fifo` is the stream that was full, `cycle` when its writer stalled."""

    def __init__(self, message: str, fifo: str, cycle: int, blocked: dict | None = None):
        super().__init__(message)
        self.fifo = fifo
        self.cycle = cycle
        self.blocked = blocked or {}
