"""The sweep file: a base flow, a search space over flow keys, objectives, constraints, a sampler.

    name: sweep-digits                 # runs/<name>/ holds the study, the trials and the report
    base: flows/demo.yaml              # the flow every trial starts from (relative to this file)
    flow: {stages: [train, simplify, quant, hwgen], train: {epochs: 20}}   # merged over base
    space:
      train.lmbda: {float: [1.0e-4, 1.0e-2], log: true}
      train.target_neurons_pct: {int: [20, 80], step: 10}
      bits: {choices: [4, 6, 8], keys: [quant.weight_bits, quant.act_bits]}
      hwgen.boards: {choices: [pynq-z2, zcu104]}   # a scalar for a list field means [it]
    objectives: [accuracy, latency_us, lut_fraction]   # or {metric: ..., direction: ...}
    constraints: [{metric: accuracy, min: 0.8}]        # fitting the board is always required
    n_trials: 20
    sampler: {name: nsga2, seed: 0}    # nsga2 | tpe | random | grid

Every dotted key is checked against the flow file's schema (potatura.config.FlowConfig) and
every value the space can produce (range ends, each choice) is validated as a flow file, so a
bad sweep fails before any trial runs, with one line naming the parameter.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from potatura._schema import StrictModel
from potatura.errors import ConfigError

# What a trial can report, how it is measured, and which way is better.
METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("maximize", "test accuracy of the quantized model (quant stage, measured)"),
    "float_accuracy": ("maximize", "test accuracy of the simplified float model (quant stage, measured)"),
    "weight_bytes": ("minimize", "non-zero weights x bit width / 8 (quant stage, computed)"),
    "latency_cycles": ("minimize", "cycles of one sample (simulated by the sim stage when it ran, else the hwgen fit "
                                   "report's, labelled as that report's `cycles` says: hls4ml simulated, hlsinf estimated)"),
    "interval_cycles": ("minimize", "cycles between samples (sim stage when it ran, else the hwgen fit report's, "
                                    "labelled by its `cycles` field)"),
    "latency_us": ("minimize", "latency_cycles / clock MHz"),
    "lut_fraction": ("minimize", "LUTs used / LUTs of the device (hwgen fit, estimated unless synthesized)"),
    "ff_fraction": ("minimize", "FFs used / FFs of the device"),
    "dsp_fraction": ("minimize", "DSPs used / DSPs of the device"),
    "bram18_fraction": ("minimize", "BRAM18 used / BRAM18 of the device"),
    "max_fraction": ("minimize", "the largest of the four resource fractions"),
}
HARDWARE_METRICS = {m for m in METRICS if m not in ("accuracy", "float_accuracy", "weight_bytes")}


def _known_metric(name: str) -> str:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; accepted: {', '.join(METRICS)}")
    return name


class ParamSpec(StrictModel):
    """One dimension of the search space: a float range, an int range or a list of choices."""

    float_: Optional[tuple[float, float]] = Field(None, alias="float", description="[low, high]")
    int_: Optional[tuple[int, int]] = Field(None, alias="int", description="[low, high], both included")
    choices: Optional[list[Any]] = Field(None, description="values to pick from")
    log: bool = Field(False, description="sample the range on a log scale")
    step: Optional[float] = Field(None, gt=0, description="grid step of a range (grid sampler: needed for floats)")
    keys: Optional[list[str]] = Field(None, description="flow keys this value goes to; default: the parameter name")

    model_config = dict(StrictModel.model_config, populate_by_name=True)

    @model_validator(mode="after")
    def _one_kind(self) -> "ParamSpec":
        kinds = [k for k, v in (("float", self.float_), ("int", self.int_), ("choices", self.choices)) if v is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of float: [low, high], int: [low, high], choices: [...]"
                             + (f" (got {', '.join(kinds)})" if kinds else ""))
        rng = self.float_ or self.int_
        if rng is not None:
            low, high = rng
            if not (math.isfinite(low) and math.isfinite(high)) or low > high:
                raise ValueError(f"range [{low}, {high}]: low must be <= high")
            if self.log and low <= 0:
                raise ValueError(f"log range [{low}, {high}] needs low > 0")
        if self.choices is not None and not self.choices:
            raise ValueError("choices: list at least one value")
        if self.choices is not None and (self.log or self.step is not None):
            raise ValueError("log and step apply to ranges, not to choices")
        return self

    @property
    def kind(self) -> str:
        return "float" if self.float_ is not None else "int" if self.int_ is not None else "choices"

    def grid_values(self, name: str) -> list[Any]:
        """The values the grid sampler visits."""
        if self.choices is not None:
            return list(self.choices)
        if self.step is None and self.int_ is None:
            raise ConfigError(f"space.{name}: the grid sampler needs a step for a float range (or use choices)")
        low, high = self.float_ or self.int_
        step = self.step if self.step is not None else 1
        n = int(math.floor((high - low) / step + 1e-9)) + 1
        values = [low + i * step for i in range(n)]
        return [int(round(v)) for v in values] if self.int_ is not None else values

    def probe_values(self) -> list[Any]:
        """Values that bound what the sampler can produce: range ends or every choice."""
        return list(self.choices) if self.choices is not None else list(self.float_ or self.int_)


class Objective(StrictModel):
    metric: str
    direction: Optional[Literal["minimize", "maximize"]] = Field(None, description="default: the metric's natural one")

    _known = field_validator("metric")(classmethod(lambda cls, v: _known_metric(v)))

    @property
    def resolved_direction(self) -> str:
        return self.direction or METRICS[self.metric][0]


class Constraint(StrictModel):
    metric: str
    min: Optional[float] = None
    max: Optional[float] = None

    _known = field_validator("metric")(classmethod(lambda cls, v: _known_metric(v)))

    @model_validator(mode="after")
    def _bound(self) -> "Constraint":
        if self.min is None and self.max is None:
            raise ValueError("give min and/or max")
        return self

    @property
    def label(self) -> str:
        """e.g. "accuracy >= 0.9", "0.1 <= lut_fraction <= 0.5"."""
        low = f"{self.min:g} <= " if self.min is not None else ""
        high = f" <= {self.max:g}" if self.max is not None else ""
        return f"{low}{self.metric}{high}"

    def violation(self, value: Optional[float]) -> float:
        """Optuna's convention: <= 0 satisfied, > 0 by how much it is violated."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return 1.0
        v = 0.0
        if self.min is not None:
            v = max(v, self.min - value)
        if self.max is not None:
            v = max(v, value - self.max)
        return v


class SamplerConfig(StrictModel):
    name: Literal["nsga2", "tpe", "random", "grid"] = "nsga2"
    seed: int = 0
    population_size: Optional[int] = Field(None, ge=2, description="NSGA-II generation size (default: Optuna's 50, capped at n_trials)")


class SweepConfig(StrictModel):
    name: str = Field(..., description="the sweep's folder: <runs_dir>/<name>")
    base: Optional[Path] = Field(None, description="base flow file (relative to the sweep file); default: the demo flow")
    flow: dict[str, Any] = Field(default_factory=dict, description="flow fields merged over the base (inline flow)")
    runs_dir: Optional[Path] = Field(None, description="default: the base flow's runs_dir")
    space: dict[str, ParamSpec] = Field(..., description="parameter name -> range or choices")
    objectives: list[Union[str, Objective]] = Field(default_factory=lambda: ["accuracy"])
    constraints: list[Constraint] = Field(default_factory=list)
    n_trials: int = Field(20, ge=1)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    workers: int = Field(2, ge=1, description="LocalCluster workers (one thread each); trials in flight at once")
    threads_per_trial: int = Field(1, ge=1, description="torch threads inside a trial")
    stage_cache: bool = Field(True, description="share stage outputs across trials (<sweep>/stage_cache)")
    retries: int = Field(2, ge=0, description="times a trial is rerun after its worker died mid-trial (on the "
                         "LocalCluster; a --scheduler's own distributed.scheduler.allowed-failures applies there)")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        from potatura.config import FlowConfig

        return FlowConfig._safe_name(v)  # the same rule as a flow's name: both name folders

    @field_validator("space")
    @classmethod
    def _some(cls, v: dict) -> dict:
        if not v:
            raise ValueError("list at least one parameter")
        return v

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list) -> list[Objective]:
        out = [Objective(metric=o) if isinstance(o, str) else o for o in v]
        if not out:
            raise ValueError("list at least one objective")
        names = [o.metric for o in out]
        if len(set(names)) != len(names):
            raise ValueError("an objective is listed twice")
        return out

    def objective_list(self) -> list[Objective]:
        return list(self.objectives)  # normalized to Objective by the validator

    def sweep_dir(self, base_cfg) -> Path:
        return Path(self.runs_dir or base_cfg.runs_dir) / self.name


# ----------------------------------------------------------------------------------------------
# Dotted keys against the flow schema


def _field_annotation(cls: type, name: str):
    fields = getattr(cls, "model_fields", None)
    if fields is None or name not in fields:
        return None, None
    return fields[name], fields[name].annotation


def _unwrap(ann):
    """Optional[X] -> X (the first pydantic model or dict/list type of a Union)."""
    if get_origin(ann) is Union:
        args = [a for a in get_args(ann) if a is not type(None)]
        return args[0] if len(args) == 1 else ann
    return ann


def check_key(key: str) -> Any:
    """Follow a dotted key through FlowConfig; return the annotation it ends on or raise ConfigError."""
    from potatura.config import FlowConfig

    parts = key.split(".")
    if not all(parts):
        raise ValueError(f"{key!r}: empty part in the dotted key")
    cls: Any = FlowConfig
    path: list[str] = []
    for part in parts:
        ann = _unwrap(cls)
        if hasattr(ann, "model_fields"):
            field, sub = _field_annotation(ann, part)
            if field is None:
                where = ".".join(path) or "the flow file"
                raise ValueError(f"{'.'.join(path + [part])!r} is not a flow key: {where} has "
                                 f"{', '.join(ann.model_fields)}")
            cls = sub
        elif get_origin(ann) is dict:
            cls = get_args(ann)[1]  # any name: e.g. quant.layers.<layer>.weight_bits
        else:
            raise ValueError(f"{'.'.join(path + [part])!r} is not a flow key: {'.'.join(path)} is a value, not a section")
        path.append(part)
    return cls


def _is_list_field(ann) -> bool:
    ann = _unwrap(ann)
    return get_origin(ann) is list


def set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value


def apply_params(raw: dict, space: dict[str, ParamSpec], params: dict[str, Any]) -> dict:
    """A copy of the flow mapping `raw` with each parameter's value set at its keys."""
    out = copy.deepcopy(raw)
    for name, value in params.items():
        spec = space[name]
        for key in spec.keys or [name]:
            v = value
            if _is_list_field(check_key(key)) and not isinstance(v, list):
                v = [v]
            set_dotted(out, key, v)
    return out


# ----------------------------------------------------------------------------------------------
# Loading


class LoadedSweep:
    """A validated sweep: its config, the merged base flow mapping and the sweep file's path."""

    def __init__(self, config: SweepConfig, base_raw: dict, source: str, base_cfg):
        self.config = config
        self.base_raw = base_raw
        self.source = source
        self.base_cfg = base_cfg

    @property
    def sweep_dir(self) -> Path:
        return self.config.sweep_dir(self.base_cfg).resolve()

    def trial_flow(self, number: int, params: dict[str, Any]) -> dict:
        """The flow mapping of trial `number`: base + params, run directory <sweep>/trials/<number>.

        A mapping, not a dumped FlowConfig: fields the flow does not set keep their "not set"
        meaning (presets and derived defaults apply on the worker as in `potatura run`)."""
        from potatura.config import validate_config

        raw = apply_params(self.base_raw, self.config.space, params)
        raw["name"] = str(number)
        raw["runs_dir"] = str(self.sweep_dir / "trials")
        validate_config(raw, f"{self.source}: trial {number}")
        return raw


def _read_yaml(path: Path, what: str) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None


def _describe(err: dict) -> str:
    dotted = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{dotted}: unknown field"
    if err["type"] == "missing":
        return f"{dotted}: required field is missing"
    return f"{dotted}: {msg}"


def validate_sweep(raw: Any, source: str = "sweep file", base_dir: Optional[Path] = None) -> LoadedSweep:
    """Validate a parsed sweep document and everything it implies; raise ConfigError (one line each)."""
    from potatura.config import _merge, validate_config

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a sweep file is a mapping (name, base, space, objectives, ...)")
    try:
        cfg = SweepConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("\n".join(f"{source}: {_describe(e)}" for e in exc.errors())) from None

    base_raw: Any = {}
    if cfg.base is not None:
        base_path = cfg.base if cfg.base.is_absolute() or base_dir is None else base_dir / cfg.base
        if not base_path.is_file() and cfg.base.is_file():
            base_path = cfg.base  # relative to the working directory
        base_raw = _read_yaml(base_path, "base flow file") or {}
        if not isinstance(base_raw, dict):
            raise ConfigError(f"{base_path}: the flow file must be a mapping of sections")
    base_raw = _merge(dict(base_raw), cfg.flow)
    base_cfg = validate_config(base_raw, f"{source}: base flow")

    problems = []
    for name, spec in cfg.space.items():
        for key in spec.keys or [name]:
            try:
                check_key(key)
            except ValueError as exc:
                problems.append(f"{source}: space.{name}: {exc}")
    if problems:
        raise ConfigError("\n".join(problems))
    # Every value the space can produce must make a valid flow (alone, on top of the base).
    for name, spec in cfg.space.items():
        for value in spec.probe_values():
            try:
                validate_config(apply_params(base_raw, cfg.space, {name: value}), "flow")
            except ConfigError as exc:
                first = str(exc).splitlines()[0].removeprefix("flow: ")
                raise ConfigError(f"{source}: space.{name}: value {value!r} makes an invalid flow: {first}") from None
    stages = base_cfg.stages
    from potatura.flow import available_stages

    ran = stages or list(available_stages())
    wanted = [o.metric for o in cfg.objective_list()] + [c.metric for c in cfg.constraints]
    if "quant" not in ran and any(m in ("accuracy", "float_accuracy", "weight_bytes") for m in wanted):
        raise ConfigError(f"{source}: objectives: accuracy needs the quant stage; the base flow runs {', '.join(ran)}")
    if "hwgen" not in ran and any(m in HARDWARE_METRICS for m in wanted):
        raise ConfigError(f"{source}: objectives: {', '.join(m for m in wanted if m in HARDWARE_METRICS)} need the "
                          f"hwgen stage; the base flow runs {', '.join(ran)}")
    if "hwgen" in ran:
        multi = [k for k in ("boards", "backends")
                 if len(getattr(base_cfg.hwgen, k)) > 1 and not any(f"hwgen.{k}" in (s.keys or [n]) for n, s in cfg.space.items())]
        for name, spec in cfg.space.items():
            for key in spec.keys or [name]:
                if key in ("hwgen.boards", "hwgen.backends") and spec.choices is not None:
                    if any(isinstance(c, list) and len(c) != 1 for c in spec.choices):
                        multi.append(key.split(".")[1])
        if multi:
            raise ConfigError(f"{source}: a trial targets one board and one backend (its objectives are that "
                              f"design's): put hwgen.{multi[0]} in the space as choices of single names")
    if cfg.sampler.name == "grid":
        size = 1
        for name, spec in cfg.space.items():
            size *= len(spec.grid_values(name))
        if size > 10_000:
            raise ConfigError(f"{source}: sampler grid: the grid has {size} points; use nsga2 or tpe")
    return LoadedSweep(cfg, base_raw, source, base_cfg)


def load_sweep(path: os.PathLike | str) -> LoadedSweep:
    """Read and validate a sweep file."""
    path = Path(path)
    raw = _read_yaml(path, "sweep file")
    return validate_sweep(raw, str(path), path.parent)
