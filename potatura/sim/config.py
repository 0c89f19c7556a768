"""The `sim` section of the flow file: how the simulator checks and times each hwgen project."""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from potatura._schema import StrictModel


class SimConfig(StrictModel):
    samples: Optional[int] = Field(None, ge=1, description="golden samples run through the simulator and "
                                   "compared bit-exactly with the quant stage's reference (default: all)")
    batch: int = Field(8, ge=1, description="samples streamed back to back for the cycle report (latency of the "
                       "first, interval in steady state, total)")
    size_fifos: bool = Field(True, description="size every FIFO to the smallest depth keeping the latency and "
                             "interval of unbounded FIFOs (reported beside the project's depths)")
