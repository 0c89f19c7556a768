"""The `hwgen` section of the flow file: which boards and backends, and how to fit them."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, field_validator

from potatura._schema import StrictModel


class HwgenConfig(StrictModel):
    boards: list[str] = Field(default_factory=lambda: ["pynq-z2"],
                              description="boards of the catalog (`potatura boards list`): one project each")
    backends: list[Literal["hls4ml"]] = Field(default_factory=lambda: ["hls4ml"],
                                              description="accelerator generators")
    io_type: Literal["auto", "io_stream", "io_parallel"] = Field(
        "auto", description="auto: io_stream for CNNs and MLPs over 16384 weights, io_parallel for small MLPs")
    max_utilization: float = Field(0.8, gt=0, le=1, description="share of each board resource the design may use")
    reuse_factor: Optional[Union[int, dict[str, int]]] = Field(
        None, description="override the fitter: one reuse factor for every layer (nearest valid one per layer) "
        "or {layer: RF} (must be valid for that layer)")
    strategy: Literal["auto", "latency", "resource"] = Field(
        "auto", description="hls4ml strategy of conv/dense layers; auto: the fitter chooses per layer")
    clock_mhz: Optional[float] = Field(None, gt=0, description="PL clock for every board; default: the catalog's")
    build: bool = Field(False, description="run HLS synthesis and bitstream generation when Vivado/Vitis is on PATH")
    csim: bool = Field(True, description="compile the C simulation with g++ and check it against QONNX")
    csim_samples: Optional[int] = Field(None, ge=1, description="check only the first N golden samples")

    @field_validator("boards")
    @classmethod
    def _known_boards(cls, v: list[str]) -> list[str]:
        from potatura.boards.catalog import load_catalog

        if not v:
            raise ValueError("list at least one board")
        known = load_catalog()
        unknown = [b for b in v if b not in known]
        if unknown:
            raise ValueError(f"unknown board(s) {', '.join(map(repr, unknown))}; known boards: {', '.join(known)}")
        if len(set(v)) != len(v):
            raise ValueError("a board is listed twice")
        return v

    @field_validator("backends")
    @classmethod
    def _some_backend(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("list at least one backend")
        return list(dict.fromkeys(v))

    @field_validator("reuse_factor")
    @classmethod
    def _positive_rf(cls, v):
        values = v.values() if isinstance(v, dict) else ([v] if v is not None else [])
        if any(rf < 1 for rf in values):
            raise ValueError("reuse factors are integers >= 1")
        return v
