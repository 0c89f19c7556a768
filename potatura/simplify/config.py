"""The `simplify` section of the flow file (filled in when the simplify stage lands)."""

from __future__ import annotations

from potatura._schema import StrictModel


class SimplifyConfig(StrictModel):
    pass
