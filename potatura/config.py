"""The flow file: one YAML document validated by pydantic, one section per stage.

Every field has a default, so an empty file is a valid flow (the embedded digits demo).
Errors come out as one line per problem naming the field and what is accepted, raised as
ConfigError (the CLI turns it into exit code 2 without a traceback).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, Optional, get_args, get_origin

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from potatura._schema import StrictModel
from potatura.bench.config import BenchConfig
from potatura.deploy.config import DeployConfig
from potatura.errors import ConfigError
from potatura.hwgen.config import HwgenConfig
from potatura.quant.config import QuantConfig
from potatura.sim.config import SimConfig
from potatura.simplify.config import SimplifyConfig
from potatura.train.config import TrainConfig

DATASETS = ("digits", "mnist", "fashion-mnist", "idx", "npz")
# The stages in flow order (data flows one way: a stage reads only earlier ones). The runner
# (potatura.flow) maps each to its module; this is the one list.
STAGE_ORDER = ("train", "simplify", "quant", "hwgen", "sim", "deploy", "bench")


class DataConfig(StrictModel):
    dataset: Literal["digits", "mnist", "fashion-mnist", "idx", "npz"] = "digits"
    data_dir: Optional[Path] = Field(
        None,
        description="folder with IDX files (mnist, fashion-mnist, idx); default: $POTATURA_DATA, "
        "then Debian's /usr/share/datasets/<name>",
    )
    path: Optional[Path] = Field(None, description=".npz file with x_train, y_train, x_test, y_test")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="share of the training set held out")
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="share held out for test when the dataset has no test split"
    )
    normalize: bool = True
    limit_train: Optional[int] = Field(None, ge=1, description="use only this many training samples")
    num_classes: Optional[int] = Field(
        None, ge=2, description="classes of an idx/npz dataset (labels 0..num_classes-1); default: largest label + 1")

    @field_validator("data_dir")
    @classmethod
    def _dir_exists(cls, v: Optional[Path]) -> Optional[Path]:
        if v is not None and not v.is_dir():
            raise ValueError(f"folder not found: {v}")
        return v

    @field_validator("path")
    @classmethod
    def _file_exists(cls, v: Optional[Path]) -> Optional[Path]:
        if v is not None and not v.is_file():
            raise ValueError(f"file not found: {v}")
        return v

    @model_validator(mode="after")
    def _needs(self) -> "DataConfig":
        if self.dataset == "npz" and self.path is None:
            raise ValueError("dataset 'npz' needs data.path (an .npz file)")
        if self.dataset == "idx" and self.data_dir is None and not os.environ.get("POTATURA_DATA"):
            raise ValueError("dataset 'idx' needs data.data_dir or $POTATURA_DATA")
        return self


class ModelConfig(StrictModel):
    name: str = Field("lenet5", description="a model of the zoo (potatura.models.available_models())")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword options of the model")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from potatura.models import available_models

        if v not in available_models():
            raise ValueError(f"unknown model {v!r}; accepted: {', '.join(available_models())}")
        return v


class FlowConfig(StrictModel):
    name: str = Field("demo", description="run name: the run directory is <runs_dir>/<name>")
    seed: int = 0
    runs_dir: Path = Path("runs")
    stages: Optional[list[str]] = Field(None, description="stages to run; default: all available")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    simplify: SimplifyConfig = Field(default_factory=SimplifyConfig)
    quant: QuantConfig = Field(default_factory=QuantConfig)
    hwgen: HwgenConfig = Field(default_factory=HwgenConfig)
    sim: SimConfig = Field(default_factory=SimConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError("use letters, digits, '.', '_' and '-' only (it names a folder)")
        return v

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        if v is not None:
            for s in v:
                if s not in STAGE_ORDER:
                    raise ValueError(f"unknown stage {s!r}; accepted: {', '.join(STAGE_ORDER)}")
        return v

    def run_dir(self) -> Path:
        return self.runs_dir / self.name


# ----------------------------------------------------------------------------------------------
# Loading and error formatting


def _model_at(model_cls: type, loc: tuple) -> Optional[type]:
    """The pydantic model class reached by following `loc` (field names) from `model_cls`."""
    cls = model_cls
    for part in loc:
        fields = getattr(cls, "model_fields", None)
        if fields is None or part not in fields:
            return None
        ann = fields[part].annotation
        if get_origin(ann) is not None:  # Optional[X] and friends
            ann = next((a for a in get_args(ann) if hasattr(a, "model_fields")), None)
        if ann is None or not hasattr(ann, "model_fields"):
            return None
        cls = ann
    return cls


def _describe(err: dict, root: type) -> str:
    loc = tuple(err["loc"])
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    kind = err["type"]
    got = err.get("input")
    if kind == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        accepted = ", ".join(parent.model_fields) if parent is not None else "?"
        return f"{dotted}: unknown field; accepted fields here: {accepted}"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{dotted}: got {got!r}; accepted values: {expected}"
    if kind == "missing":
        return f"{dotted}: required field is missing"
    msg = err["msg"]
    msg = msg.removeprefix("Value error, ")
    if kind in ("value_error", "assertion_error"):
        return f"{dotted}: {msg}"
    return f"{dotted}: {msg} (got {got!r})"


def validate_config(raw: Any, source: str = "flow file") -> FlowConfig:
    """Validate a parsed YAML document; raise ConfigError with one line per problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the flow file must be a mapping of sections, got {type(raw).__name__}")
    try:
        return FlowConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(e, FlowConfig) for e in exc.errors()]
        raise ConfigError("\n".join(f"{source}: {line}" for line in lines)) from None


def load_config(path: str | os.PathLike | None, overrides: Optional[dict] = None) -> FlowConfig:
    """Read and validate a flow file (None: all defaults). `overrides` are merged on top."""
    raw: Any = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{source}: flow file not found")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source}: not a UTF-8 text file (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r})") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
        if raw is None:
            raw = {}
    if overrides:
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: the flow file must be a mapping of sections")
        raw = _merge(dict(raw), overrides)
    return validate_config(raw, source)


def _merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = _merge(dict(base[key]), value)
        else:
            base[key] = value
    return base


def parse_set_option(items: list[str]) -> dict:
    """Turn ['train.epochs=3', 'model.name=lenet300'] into a nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty field name in {key!r}")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"--set {item!r}: the value is not valid YAML: {problem}") from None
        node = out
        for depth, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[:depth + 1])} was set to a value, "
                                  f"not a section, by an earlier --set")
        node[parts[-1]] = parsed
    return out


def dump_config(cfg: FlowConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
