"""The `train` section of the flow file."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from potatura._schema import StrictModel


class TrainConfig(StrictModel):
    method: Literal["none"] = Field("none", description="pruning method while training")
    epochs: int = Field(20, ge=0, description="training epochs")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0, description="initial learning rate")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    nesterov: bool = False
    lr_schedule: Literal["constant", "cosine", "step"] = "cosine"
    lr_step_epochs: list[int] = Field(default_factory=list, description="epochs where step decays")
    lr_gamma: float = Field(0.1, gt=0, le=1)
    checkpoint: Optional[str] = Field(None, description="start from this model checkpoint file")

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        return self
