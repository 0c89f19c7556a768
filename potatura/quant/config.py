"""The `quant` section of the flow file (filled in when the quant stage lands)."""

from __future__ import annotations

from potatura._schema import StrictModel


class QuantConfig(StrictModel):
    pass
