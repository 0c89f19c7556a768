"""The `deploy` section of the flow file: where bundles run (emulated board, a real board, nowhere) and how."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from potatura._schema import StrictModel


class DeployConfig(StrictModel):
    target: Literal["emulated", "board", "bundle-only"] = Field(
        "emulated", description="emulated: a local agent on the emulated board (potatura's simulator behind the "
        "DMA/HLS registers); board: the agent at `url`; bundle-only: write the bundles, run nothing")
    url: Optional[str] = Field(None, description="with target board: the agent, e.g. http://127.0.0.1:8765 "
                               "(an SSH tunnel to the board)")
    token_env: str = Field("POTATURA_AGENT_TOKEN", description="environment variable holding the agent's token "
                           "(tokens never go into flow files)")
    golden_samples: int = Field(64, ge=1, description="golden samples in each bundle (checked on the board)")
    tolerance_codes: int = Field(0, ge=0, description="largest |output code difference| accepted; 0: bit-exact")
    batch_sizes: list[int] = Field([1, 8, 32], description="benchmark batch sizes on the board")
    iterations: int = Field(10, ge=1, description="timed benchmark runs per batch size")
    warmup: int = Field(2, ge=0, description="untimed runs before the timed ones, per batch size")
    timeout_s: float = Field(120.0, gt=0, description="deadline of every request to the agent (seconds)")

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(b < 1 for b in v):
            raise ValueError("list batch sizes >= 1")
        return v
