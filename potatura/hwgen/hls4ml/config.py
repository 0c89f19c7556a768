"""`hwgen.backends.hls4ml`: the hls4ml backend's options (pydantic only: loading a flow file stays light)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from potatura._schema import StrictModel


class Hls4mlConfig(StrictModel):
    io_type: Literal["auto", "io_stream", "io_parallel"] = Field(
        "auto", description="auto: io_stream for CNNs and MLPs over 16384 weights, io_parallel for small MLPs")
    reuse_factor: int | dict[str, int] | None = Field(
        None, description="override the fitter: one reuse factor for every layer (nearest valid one per layer) "
        "or {layer: RF} (must be valid for that layer)")
    strategy: Literal["auto", "latency", "resource"] = Field(
        "auto", description="hls4ml strategy of conv/dense layers; auto: the fitter chooses per layer")
    fifo_depths: Literal["sized", "hls4ml"] = Field(
        "sized", description="io_stream FIFO depths: sized (the simulator's smallest depths keeping the latency "
        "and interval of unbounded FIFOs) or hls4ml (its default: the producing layer's pixels)")

    @field_validator("reuse_factor")
    @classmethod
    def _positive_rf(cls, v):
        values = v.values() if isinstance(v, dict) else ([v] if v is not None else [])
        if any(rf < 1 for rf in values):
            raise ValueError("reuse factors are integers >= 1")
        return v
