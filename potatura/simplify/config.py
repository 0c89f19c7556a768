"""The `simplify` section of the flow file."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from potatura._schema import StrictModel


class SimplifyConfig(StrictModel):
    bias_maps: Literal["allow", "refuse"] = Field(
        "allow", description="allow: a convolution whose removed inputs' constants meet zero padding gets an exact "
        "per-position bias map (listed in the summary; fixes the input size); refuse: stop with an error naming it")
    validation_samples: Optional[int] = Field(
        None, ge=1, description="compare logits before/after on at most this many validation samples (default: all)")
    tolerance: float = Field(
        1e-4, gt=0, description="fail when max |logit difference| / max |logit| on the validation samples exceeds "
        "this (float32 rounding of the folded weights is about 1e-7)")
