"""The backend interface of hwgen, after hls4ml's backend registry (docs/ARCHITECTURE.md, "Backends").

A backend turns the hardware IR (potatura.hw.ir.Graph, read from QONNX by potatura.hwgen.reader)
into a project for one board:

    backend = get_backend("hls4ml")
    problems = backend.supports(graph)                 # [] or one line per thing it cannot build
    lowered = backend.lower(graph)                     # its lowering passes, applied to a copy
    fit = backend.fit(lowered, board, cfg)             # a FitReport: its own search, a generic report
    result = backend.generate(source, board, out_dir, cfg, x=..., reference=...)
    check = backend.verify(result, x, reference)       # the project's own simulation vs the reference

`supports` answers from the backend's one operator table (potatura.hw.backends: the table
quant's hardware gate asks too) plus the backend's own limits (`check`). Lowering is a list of
small passes, qonnx-style: `apply(graph) -> (graph, changed)`, run until none changes anything.
Every generated project holds design.json (potatura.hw.ir.save_design): the lowered graph and what
the backend chose, so the simulator and the board read the design instead of re-deriving it.

Implementations are found through their spec (potatura.hw.backends.BackendSpec.implementation)
and imported on first use, so naming a backend costs nothing until it generates.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from potatura.boards.catalog import Board
from potatura.errors import PotaturaError
from potatura.hw.backends import BackendSpec, get_spec
from potatura.hw.ir import Graph

# A lowering pass: a function or an object with apply(graph) -> (graph, changed).
Pass = Callable[[Graph], "tuple[Graph, bool]"]
MAX_PASS_ROUNDS = 100


def apply_passes(graph: Graph, passes: Sequence, max_rounds: int = MAX_PASS_ROUNDS) -> Graph:
    """Run the passes in order, again and again, until a whole round changes nothing.

    Works on a copy; the result is validated. A pass list that never settles is a bug (RuntimeError).
    """
    graph = graph.copy()
    for _ in range(max_rounds):
        changed_any = False
        for p in passes:
            apply = getattr(p, "apply", p)
            graph, changed = apply(graph)
            changed_any = changed_any or changed
        if not changed_any:
            return graph.validate()
    raise RuntimeError(f"lowering passes {[getattr(p, '__name__', p) for p in passes]} did not settle "
                       f"in {max_rounds} rounds")


class FitReport(Protocol):
    """What every backend's fit returns (each backend its own search behind it)."""

    fits: bool  # within the board budget
    source: str  # "estimated", or what replaced the estimates (synthesis reports)

    @property
    def totals(self) -> dict[str, int]: ...  # lut, ff, dsp, bram18, ... (estimated unless source says)

    @property
    def interval_cycles(self) -> int: ...  # cycles between two samples

    @property
    def latency_cycles(self) -> int: ...  # cycles from first input word to last output word

    def layer_choices(self) -> dict[str, dict]: ...  # IR layer name -> the backend's choice (design.json)

    def table(self) -> str: ...  # markdown

    def to_dict(self) -> dict: ...


class DoesNotFitError(PotaturaError):
    """A backend found no configuration of the model within the board's budget (the message says why).

    The hwgen stage reports it for that board and goes on with the others."""


@dataclass
class BuildOutcome:
    """Whether the vendor build ran, what it said, and the reports it left (parsed)."""

    ran: bool
    message: str
    reports: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"ran": self.ran, "message": self.message, "reports": self.reports}


@dataclass
class ProjectResult:
    """One generated project (hwgen/<board>/<backend>/ in a run)."""

    board: str
    backend: str
    out_dir: Path
    fit: Any  # the backend's FitReport
    csim: Any  # the verification result (to_dict(), samples, exact_matches) or None when not run
    build: BuildOutcome
    seconds: dict
    hls_model: object = field(default=None, repr=False)  # the backend's in-memory model (keep_model=True)

    def summary(self) -> dict:
        """report.json's entry: estimated resources, cycles (labelled by `cycles`: simulated or estimated),
        and what a build measured (`measured`: resources and cycles from the vendor reports, or None)."""
        from potatura.hwgen.reports import measured_figures

        return {"board": self.board, "backend": self.backend, "dir": str(self.out_dir),
                "io_type": getattr(self.fit, "io_type", None), "fits": self.fit.fits, "figures": self.fit.source,
                "totals_estimated": self.fit.totals, "budget": getattr(self.fit, "budget", None),
                "interval_cycles": self.fit.interval_cycles, "latency_cycles": self.fit.latency_cycles,
                "cycles": getattr(self.fit, "cycles_source", "estimated"),
                "measured": measured_figures(getattr(self.fit, "measured", None) or {}),
                "reuse_factors": self.fit.reuse_factors() if hasattr(self.fit, "reuse_factors") else {},
                "csim": self.csim.to_dict() if self.csim else None,
                "build": self.build.to_dict(), "seconds": self.seconds}


class Backend(ABC):
    """One accelerator generator. Subclasses set `name` (their spec's) and implement the four steps."""

    name: str = ""

    @property
    def spec(self) -> BackendSpec:
        return get_spec(self.name)

    def supports(self, graph: Graph) -> list[str]:
        """Everything in `graph` this backend cannot build (empty: it can), one line each."""
        problems = [f"{layer.name} ({layer.op.value}): not built by the {self.name} backend"
                    for layer in graph.layers if layer.op in self.spec.missing([layer.op])]
        return problems + self.check(graph)

    def check(self, graph: Graph) -> list[str]:
        """Backend-specific limits within supported operators (override)."""
        return []

    def passes(self) -> list:
        """The lowering passes, in order (override; default none)."""
        return []

    def lower(self, graph: Graph) -> Graph:
        """The graph as this backend builds it: its passes applied to a copy."""
        return apply_passes(graph, self.passes())

    def network(self, source: Any) -> Any:
        """What generate() works from, made once per model (default: the QonnxGraph itself)."""
        return source

    @abstractmethod
    def fit(self, graph: Graph, board: Board, cfg: Any) -> FitReport:
        """Choose the backend's parameters for `board` (cfg: this backend's config section)."""

    @abstractmethod
    def generate(self, source: Any, board: Board, out_dir: Path, cfg: Any, *, x: np.ndarray | None = None,
                 reference: np.ndarray | None = None, build: bool = False, max_utilization: float = 0.8,
                 on_step: Callable[[str], None] | None = None) -> ProjectResult:
        """Write the project for `board` into out_dir, with design.json; verify when x is given.

        source: what network() made of the QonnxGraph (IR graph + prepared QONNX model); cfg: this
        backend's options; x: float inputs as the model takes them (N, C, H, W) or (N, n);
        reference: the QONNX reference outputs for x; max_utilization: share of each board resource
        the design may use.
        """

    @abstractmethod
    def verify(self, result: ProjectResult, x: np.ndarray, reference: np.ndarray) -> Any:
        """Run the generated project's own simulation on x and compare with reference (exact match)."""


_INSTANCES: dict[tuple[str, object], Backend] = {}


def _resolve(path: Any) -> Any:
    if not isinstance(path, str):
        return path  # the class itself (a backend registered at run time, e.g. in tests)
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_backend(name: str) -> Backend:
    """The backend called `name` (ConfigError listing the known ones when there is none)."""
    spec = get_spec(name)
    key = (name, spec.implementation)
    if key not in _INSTANCES:
        _INSTANCES[key] = _resolve(spec.implementation)()
    return _INSTANCES[key]


def backend_config_class(name: str):
    """The pydantic class of `hwgen.backends.<name>` (None: the backend takes no options)."""
    spec = get_spec(name)
    return _resolve(spec.config) if spec.config else None


TEMPLATES = Path(__file__).parent / "templates"


def render_template(name: str, values: dict) -> str:
    """A file of hwgen/templates with every @@KEY@@ replaced by values[KEY] (str()); a placeholder
    left unfilled is an error, so a generated project never carries one."""
    text = (TEMPLATES / name).read_text()
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", str(value))
    if "@@" in text:
        raise RuntimeError(f"template {name}: unfilled placeholder near {text[text.index('@@'):][:40]!r}")
    return text
