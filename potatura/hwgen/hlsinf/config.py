"""`hwgen.backends.hlsinf`: the HLSinf-style backend's options (pydantic only: loading a flow file stays light)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from potatura._schema import StrictModel


class HlsinfConfig(StrictModel):
    cpi: int | None = Field(None, ge=1, le=64, description="input channels per cycle; default: the fitter's choice "
                            "for the board (DSP/BRAM/bandwidth)")
    cpo: int | None = Field(None, ge=1, le=64, description="output channels per cycle; default: the fitter's")
    ho_max: int | None = Field(None, ge=2, le=4096, description="conv output rows one call holds (taller layers "
                               "are split in row frames); default: the fitter's")
    wo_max: int | None = Field(None, ge=1, le=4096, description="conv output columns one call holds (wider layers "
                               "are refused); default: the fitter's")
    data_bits: Literal["auto", 8, 16, 32] = Field(
        "auto", description="activation word in DDR; auto: the narrowest holding every stored tensor's codes")

    @model_validator(mode="after")
    def _both_or_neither(self):
        if (self.cpi is None) != (self.cpo is None):
            raise ValueError("set cpi and cpo together (or neither: the fitter chooses both)")
        return self
