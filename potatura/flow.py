"""The stage runner, after FINN's build_dataflow: ordered stages, one run directory, caching.

    runs/<name>/config.yaml     the resolved flow file
    runs/<name>/manifest.json   per stage: input hash, outputs (+ sha256), tool versions, seconds, status
    runs/<name>/run.log         the log of every invocation
    runs/<name>/<stage>/        the stage's artifacts

A stage is known to the runner only through its `Stage` record (potatura/<package>/stage.py
defines STAGE). Its input hash covers the config sections it reads, the seed and the content
hashes of the outputs of the stages it needs; a stage whose hash and outputs are unchanged is
skipped. A stage left "running" by a killed run is run again without clearing its folder, so it
can resume from its own checkpoints (training resumes from its last epoch).
"""

from __future__ import annotations

import importlib
import logging
import shutil
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from potatura import __version__
from potatura.artifacts import json_sha256, read_json, tree_sha256, write_json, write_text
from potatura.errors import ConfigError, PotaturaError

STAGE_ORDER = ("train", "simplify", "quant", "hwgen", "sim", "deploy", "bench")
_STAGE_MODULES = {
    "train": "potatura.train.stage",
    "simplify": "potatura.simplify.stage",
    "quant": "potatura.quant.stage",
    "hwgen": "potatura.hwgen.stage",
    "sim": "potatura.sim.stage",
    "deploy": "potatura.deploy.stage",
    "bench": "potatura.bench.stage",
}
TOOLS = ("torch", "numpy", "brevitas", "qonnx", "onnx", "onnxruntime", "hls4ml", "pynq", "scikit-learn")


@dataclass(frozen=True)
class Stage:
    """What the runner knows of a stage.

    run(ctx) writes artifacts under ctx.out_dir and returns {output name: path relative to the
    run directory or absolute}. config_sections are the flow-file sections it reads; needs are the
    earlier stages whose outputs it reads (ctx.inputs[stage][output name]).
    """

    name: str
    run: Callable[["StageContext"], dict[str, Any]]
    config_sections: tuple[str, ...]
    needs: tuple[str, ...] = ()
    description: str = ""
    # headline(stage_dir) -> one line for the end-of-run report (None: nothing to say)
    headline: Optional[Callable[[Path], Optional[str]]] = None
    # fingerprint(cfg) -> JSON-able identity of files the stage reads beyond config and upstream
    # outputs (e.g. board catalog entries); part of the input hash
    fingerprint: Optional[Callable[[Any], Any]] = None


class Progress:
    """Progress reporting for long steps: rich bars on a terminal, log lines otherwise."""

    def __init__(self, console=None, enabled: bool = True):
        self._rich = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=console, transient=True)

    def __enter__(self) -> "Progress":
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.stop()

    @contextmanager
    def task(self, description: str, total: Optional[float]) -> Iterator[Callable[..., None]]:
        """Yield update(completed=None, advance=None, description=None)."""
        if self._rich is None:
            yield lambda **kw: None
            return
        tid = self._rich.add_task(description, total=total)

        def update(completed: Optional[float] = None, advance: Optional[float] = None, description: Optional[str] = None) -> None:
            kw: dict = {}
            if completed is not None:
                kw["completed"] = completed
            if advance is not None:
                kw["advance"] = advance
            if description is not None:
                kw["description"] = description
            self._rich.update(tid, **kw)

        try:
            yield update
        finally:
            self._rich.remove_task(tid)


@dataclass
class StageContext:
    config: Any  # FlowConfig
    run_dir: Path
    out_dir: Path
    inputs: dict[str, dict[str, Path]]
    log: logging.Logger
    progress: Progress = field(default_factory=lambda: Progress(enabled=False))

    def path(self, *parts: str) -> Path:
        p = self.out_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def input(self, stage: str, name: str) -> Path:
        try:
            return self.inputs[stage][name]
        except KeyError:
            raise PotaturaError(
                f"stage {self.out_dir.name!r} needs output {name!r} of stage {stage!r}, which is missing; "
                f"run `potatura run` without --from to produce it"
            ) from None


def available_stages() -> dict[str, Stage]:
    """Stages whose package has landed, in flow order."""
    stages = {}
    for name in STAGE_ORDER:
        try:
            module = importlib.import_module(_STAGE_MODULES[name])
        except ModuleNotFoundError as exc:
            if exc.name == _STAGE_MODULES[name]:
                continue
            raise
        stages[name] = module.STAGE
    return stages


def tool_versions() -> dict[str, Optional[str]]:
    out: dict[str, Optional[str]] = {"potatura": __version__}
    for t in TOOLS:
        try:
            out[t] = metadata.version(t)
        except metadata.PackageNotFoundError:
            out[t] = None
    return out


class Manifest:
    """manifest.json of a run, rewritten atomically after every change."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict = {"potatura": __version__, "stages": {}}
        if path.is_file():
            try:
                data = read_json(path)
                if not isinstance(data, dict) or not isinstance(data.get("stages", {}), dict):
                    raise ValueError("not a manifest")
                self.data = data
            except ValueError:
                # A corrupt manifest means nothing can be trusted as cached: start over, keep a copy.
                shutil.copy(path, path.with_suffix(".corrupt.json"))
        self.data.setdefault("stages", {})

    def stage(self, name: str) -> dict:
        return self.data["stages"].get(name, {})

    def set_stage(self, name: str, record: dict) -> None:
        self.data["stages"][name] = record
        write_json(self.path, self.data)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _setup_log(run_dir: Path, console) -> logging.Logger:
    log = logging.getLogger(f"potatura.run.{run_dir.resolve()}")
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    fh = logging.FileHandler(run_dir / "run.log")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(fh)
    if console is not None:
        from rich.logging import RichHandler

        rh = RichHandler(console=console, show_path=False, show_time=False, markup=False)
        rh.setLevel(logging.INFO)
        log.addHandler(rh)
    return log


@dataclass
class StageOutcome:
    name: str
    status: str  # done | skipped | failed
    seconds: float
    outputs: dict[str, str]


def run_flow(cfg, from_stage: Optional[str] = None, to_stage: Optional[str] = None,
             only: Optional[list[str]] = None, force: bool = False, console=None,
             show_progress: bool = True) -> list[StageOutcome]:
    """Run the stages of `cfg` in order inside cfg.run_dir(); return what each stage did."""
    from potatura.config import dump_config, FlowConfig

    assert isinstance(cfg, FlowConfig)
    stages = available_stages()
    wanted = [s for s in (cfg.stages or list(stages)) if s in stages]
    missing = [s for s in (cfg.stages or []) if s not in stages]
    if missing:
        raise ConfigError(f"stages: {', '.join(missing)} not available in this version; available: {', '.join(stages)}")
    for flag, value in (("--from", from_stage), ("--to", to_stage)):
        if value is not None and value not in wanted:
            raise ConfigError(f"{flag} {value}: not a stage of this flow; stages: {', '.join(wanted)}")
    order = [s for s in STAGE_ORDER if s in wanted]
    start = order.index(from_stage) if from_stage else 0
    stop = order.index(to_stage) + 1 if to_stage else len(order)
    if only is not None:
        outside = [s for s in only if s not in order]
        if outside:
            raise ConfigError(f"stage {', '.join(outside)} is not among this flow's stages ({', '.join(order)}); "
                              f"add it to `stages:` in the flow file")
        selected = [s for s in order if s in only]
    else:
        selected = order[start:stop]
    if not selected:
        raise ConfigError(f"nothing to run: --from {from_stage} comes after --to {to_stage}")
    upstream = _upstream_of(selected, stages)

    run_dir = cfg.run_dir().resolve()  # stages get absolute paths, whatever the cwd
    manifest = Manifest(run_dir / "manifest.json")
    for name in selected:
        for dep in stages[name].needs:
            if dep not in selected and manifest.stage(dep).get("status") != "done":
                raise PotaturaError(
                    f"stage {name!r} needs stage {dep!r}, which has not completed in {run_dir}; "
                    f"run `potatura run` without --from, or with --from {dep}")
    # Stages that are not rerun but feed the ones that are must match this config: otherwise the
    # run would mix artifacts of two configs under one config.yaml.
    for name in order:
        record = manifest.stage(name)
        if name in upstream and record.get("status") == "done":
            current = _input_hash(cfg, stages[name], manifest, run_dir)
            if current is not None and current[0] != record.get("input_hash"):
                raise PotaturaError(
                    f"stage {name!r} in {run_dir} was made with other settings or data than this flow file has; "
                    f"rerun it first (`potatura run FLOW` without --from, or --from {name})")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", dump_config(cfg))
    log = _setup_log(run_dir, console)
    log.info("run %s in %s: stages %s", cfg.name, run_dir, ", ".join(selected))

    outcomes: list[StageOutcome] = []
    progress = Progress(console=console, enabled=show_progress and console is not None)
    with progress:
        for name in order:
            stage = stages[name]
            record = manifest.stage(name)
            if name not in selected:
                continue
            for dep in stage.needs:
                if manifest.stage(dep).get("status") != "done":
                    raise PotaturaError(
                        f"stage {name!r} needs stage {dep!r}, which has not completed in {run_dir}; "
                        f"run `potatura run` without --from, or with --from {dep}"
                    )
            input_hash, inputs = _input_hash(cfg, stage, manifest, run_dir)
            forced = force or (from_stage is not None and order.index(name) >= start)
            out_dir = run_dir / name
            if (not forced and record.get("status") == "done"
                    and record.get("input_hash") == input_hash and _outputs_intact(run_dir, record)):
                log.info("stage %s: inputs unchanged, skipped", name)
                outcomes.append(StageOutcome(name, "skipped", 0.0, {k: v["path"] for k, v in record["outputs"].items()}))
                continue
            resuming = record.get("status") == "running" and record.get("input_hash") == input_hash and not forced
            if out_dir.exists() and not resuming:
                shutil.rmtree(out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            manifest.set_stage(name, {"status": "running", "input_hash": input_hash, "started": _now(),
                                      "tool_versions": tool_versions(), "outputs": {}})
            log.info("stage %s: %s", name, "resuming" if resuming else "started")
            ctx = StageContext(cfg, run_dir, out_dir, inputs, log, progress)
            t0 = time.perf_counter()
            try:
                outputs = stage.run(ctx) or {}
            except BaseException as exc:
                seconds = time.perf_counter() - t0
                if isinstance(exc, KeyboardInterrupt):
                    log.info("stage %s: interrupted after %.1f s; `potatura run` resumes it", name, seconds)
                    raise
                manifest.set_stage(name, {"status": "failed", "input_hash": input_hash, "seconds": seconds,
                                          "finished": _now(), "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                                          "tool_versions": tool_versions(), "outputs": {}})
                if not isinstance(exc, PotaturaError):
                    log.error("stage %s failed:\n%s", name, traceback.format_exc())
                else:
                    log.error("stage %s failed: %s", name, exc)
                raise
            seconds = time.perf_counter() - t0
            out_records = {}
            root = run_dir.resolve()
            for key, path in outputs.items():
                p = Path(path)
                p = (p if p.is_absolute() else run_dir / p).resolve()
                rel = str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
                out_records[key] = {"path": rel, "sha256": tree_sha256(p)}
            manifest.set_stage(name, {"status": "done", "input_hash": input_hash, "seconds": round(seconds, 3),
                                      "started": manifest.stage(name).get("started"), "finished": _now(),
                                      "tool_versions": tool_versions(), "outputs": out_records})
            log.info("stage %s: done in %.1f s", name, seconds)
            outcomes.append(StageOutcome(name, "done", seconds, {k: v["path"] for k, v in out_records.items()}))
    _write_timings(run_dir, manifest)
    return outcomes


def _upstream_of(selected: list[str], stages: dict[str, Stage]) -> set[str]:
    """Stages that the selected ones read from, directly or not, and that are not selected."""
    seen: set[str] = set()
    todo = [d for s in selected for d in stages[s].needs]
    while todo:
        dep = todo.pop()
        if dep in seen or dep not in stages:
            continue
        seen.add(dep)
        todo.extend(stages[dep].needs)
    return seen - set(selected)


def _input_hash(cfg, stage: Stage, manifest: Manifest, run_dir: Path):
    """(input hash, {dep: {output: path}}) of `stage`, or None when a dependency has no outputs.

    Covers the seed, the config sections the stage reads, the data files behind the `data`
    section, the stage's own fingerprint, and the content hashes of the upstream outputs."""
    inputs: dict[str, dict[str, Path]] = {}
    input_hashes: dict[str, Any] = {}
    for dep in stage.needs:
        dep_rec = manifest.stage(dep)
        if dep_rec.get("status") != "done":
            return None
        inputs[dep] = {k: run_dir / v["path"] for k, v in dep_rec.get("outputs", {}).items()}
        input_hashes[dep] = {k: v["sha256"] for k, v in dep_rec.get("outputs", {}).items()}
    sections = {s: getattr(cfg, s).model_dump(mode="json") for s in stage.config_sections}
    identity = {"seed": cfg.seed, "sections": sections, "inputs": input_hashes, "potatura": __version__}
    if "data" in stage.config_sections:
        from potatura.data import source_fingerprint

        identity["data_source"] = source_fingerprint(cfg.data)
    if stage.fingerprint is not None:
        identity["fingerprint"] = stage.fingerprint(cfg)
    return json_sha256(identity), inputs


def _outputs_intact(run_dir: Path, record: dict) -> bool:
    for out in record.get("outputs", {}).values():
        p = run_dir / out["path"]
        if not p.exists() or tree_sha256(p) != out["sha256"]:
            return False
    return True


def _write_timings(run_dir: Path, manifest: Manifest) -> None:
    times = {k: v.get("seconds") for k, v in manifest.data["stages"].items()}
    write_json(run_dir / "time_per_stage.json", times)
