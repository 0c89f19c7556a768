"""The `bench` section of the flow file: the latency protocol and the targets it measures."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from potatura._schema import StrictModel

# Target families, in report order. Each expands to one or more targets (see potatura.bench.targets).
TARGET_FAMILIES = ("torch", "onnxruntime", "cuda", "simulated", "emulated", "measured")
TargetFamily = Literal["torch", "onnxruntime", "cuda", "simulated", "emulated", "measured"]


class BenchConfig(StrictModel):
    iterations: int = Field(100, ge=1, description="timed runs per (target, batch size), after the warm-up")
    warmup: int = Field(10, ge=0, description="untimed runs before the timed ones, per (target, batch size)")
    max_seconds: float = Field(
        0.5, gt=0, description="stop a (target, batch size) point after this many timed seconds, once at least "
        "min(iterations, 20) runs are in; the runs actually made are recorded")
    batch_sizes: list[int] = Field(
        [1, 64], description="batch sizes of the offline (throughput) sweep; batch 1 is always measured as the "
        "single-stream latency")
    threads: int = Field(
        1, ge=1, description="intra-op threads of torch and of the single-thread onnxruntime targets (the "
        "all-threads onnxruntime target uses every core); fixed for the whole bench and recorded")
    targets: list[TargetFamily] = Field(
        list(TARGET_FAMILIES), description="target families: torch (CPU eager: float, simplified, fake-quantized), "
        "onnxruntime (float and simplified ONNX), cuda (torch on a GPU when present), simulated (potatura's "
        "simulator: cycles / clock), emulated (the emulated board through the deploy client), measured (a "
        "real board agent, see board_url)")
    board_url: Optional[str] = Field(
        None, description="URL of a real board agent for the `measured` target (default: $POTATURA_BOARD)")
    token_env: str = Field("POTATURA_AGENT_TOKEN", description="environment variable holding the board agent's "
                           "token (tokens never go into flow files)")

    @field_validator("batch_sizes")
    @classmethod
    def _positive_unique(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("give at least one batch size")
        if any(b < 1 for b in v):
            raise ValueError(f"batch sizes must be >= 1, got {v}")
        return sorted(set(v) | {1})

    @field_validator("targets")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return [t for t in TARGET_FAMILIES if t in v]
