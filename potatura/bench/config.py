"""The `bench` section of the flow file (filled in when the bench stage lands)."""

from __future__ import annotations

from potatura._schema import StrictModel


class BenchConfig(StrictModel):
    pass
