"""The `hwgen` section of the flow file (filled in when the hwgen stage lands)."""

from __future__ import annotations

from potatura._schema import StrictModel


class HwgenConfig(StrictModel):
    pass
