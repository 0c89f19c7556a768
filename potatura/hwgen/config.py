"""The `hwgen` section of the flow file: which boards and backends, and how to fit them.

Backends are scoped: `backends` is a list of names (each with its defaults) or a map
{name: {options}}, the options being that backend's config class (hls4ml:
potatura.hwgen.hls4ml.config.Hls4mlConfig: io_type, strategy, reuse_factor).

The top-level io_type / strategy / reuse_factor of earlier flow files are still accepted and
mean the hls4ml backend's options; setting one both there and under backends.hls4ml is an error
naming both places.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from potatura._schema import StrictModel

HLS4ML_OPTIONS = ("io_type", "strategy", "reuse_factor")


class HwgenConfig(StrictModel):
    boards: list[str] = Field(default_factory=lambda: ["pynq-z2"],
                              description="boards of the catalog (`potatura boards list`): one project each")
    backends: dict[str, Any] = Field(
        default_factory=lambda: {"hls4ml": {}}, validate_default=True,
        description="accelerator generators: a list of names, or {name: {options}} "
        "(hls4ml: io_type, strategy, reuse_factor)")
    io_type: Literal["auto", "io_stream", "io_parallel"] | None = Field(
        None, description="earlier place of backends.hls4ml.io_type (still accepted)")
    max_utilization: float = Field(0.8, gt=0, le=1, description="share of each board resource the design may use")
    reuse_factor: int | dict[str, int] | None = Field(
        None, description="earlier place of backends.hls4ml.reuse_factor (still accepted)")
    strategy: Literal["auto", "latency", "resource"] | None = Field(
        None, description="earlier place of backends.hls4ml.strategy (still accepted)")
    clock_mhz: float | None = Field(None, gt=0, description="PL clock for every board; default: the catalog's")
    build: bool = Field(False, description="run HLS synthesis and bitstream generation when Vivado/Vitis is on PATH")
    csim: bool = Field(True, description="compile the C simulation with g++ and check it against QONNX")
    csim_samples: int | None = Field(None, ge=1, description="check only the first N golden samples")

    @field_validator("boards")
    @classmethod
    def _known_boards(cls, v: list[str]) -> list[str]:
        from potatura.boards.catalog import load_catalog

        if not v:
            raise ValueError("list at least one board")
        known = load_catalog()
        unknown = [b for b in v if b not in known]
        if unknown:
            raise ValueError(f"unknown board(s) {', '.join(map(repr, unknown))}; known boards: {', '.join(known)}")
        if len(set(v)) != len(v):
            raise ValueError("a board is listed twice")
        return v

    @field_validator("backends", mode="before")
    @classmethod
    def _backend_map(cls, v):
        """A list of names -> {name: {}}; each entry validated by its backend's config class."""
        from potatura.errors import ConfigError
        from potatura.hw.backends import spec_names
        from potatura.hwgen.backend import backend_config_class

        if isinstance(v, (list, tuple)):
            if len(set(v)) != len(v):
                raise ValueError("a backend is listed twice")
            v = {name: {} for name in v}
        if not isinstance(v, dict):
            raise ValueError("a list of backend names or a map {backend: {options}}")  # noqa: TRY004 (pydantic)
        if not v:
            raise ValueError("list at least one backend")
        out = {}
        for name, options in v.items():
            if name not in spec_names():
                raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(spec_names())}")
            try:
                config_class = backend_config_class(name)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
            options = options or {}
            if config_class is None:
                if options:
                    raise ValueError(f"backend {name} takes no options, got {sorted(options)}")
                out[name] = None
            else:
                if not isinstance(options, (dict, config_class)):
                    raise ValueError(f"backends.{name}: a map of options, got {options!r}")
                try:
                    out[name] = options if isinstance(options, config_class) else config_class(**options)
                except ValidationError as exc:
                    first = exc.errors()[0]
                    where = ".".join(str(p) for p in first["loc"])
                    raise ValueError(f"backends.{name}.{where}: {first['msg']}") from None
        return out

    @model_validator(mode="after")
    def _old_hls4ml_fields(self):
        """Earlier flow files set io_type/strategy/reuse_factor at the top: they mean hls4ml's."""
        given = [k for k in HLS4ML_OPTIONS if getattr(self, k) is not None]
        if not given:
            return self
        hls = self.backends.get("hls4ml")
        if hls is None:
            raise ValueError(f"hwgen.{given[0]} is an option of the hls4ml backend, which hwgen.backends does not "
                             "list; set it under hwgen.backends.<backend>")
        twice = [k for k in given if k in hls.model_fields_set]
        if twice:
            raise ValueError(f"hwgen.{twice[0]} and hwgen.backends.hls4ml.{twice[0]} are both set; keep "
                             f"hwgen.backends.hls4ml.{twice[0]} (the top-level field is its earlier place)")
        for k in given:
            object.__setattr__(hls, k, getattr(self, k))
            hls.model_fields_set.add(k)
            object.__setattr__(self, k, None)
        return self

    def backend(self, name: str):
        """The options of backend `name` (its config class instance, None for a backend without options)."""
        return self.backends[name]
