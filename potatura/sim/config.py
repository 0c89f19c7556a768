"""The `sim` section of the flow file (filled in when the sim stage lands)."""

from __future__ import annotations

from potatura._schema import StrictModel


class SimConfig(StrictModel):
    pass
