"""The `deploy` section of the flow file (filled in when the deploy stage lands)."""

from __future__ import annotations

from potatura._schema import StrictModel


class DeployConfig(StrictModel):
    pass
