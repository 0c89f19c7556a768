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
import functools
import logging
import os
import shutil
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from potatura import __version__, threads
from potatura.artifacts import (
    json_sha256,
    read_json,
    tree_sha256,
    write_json,
    write_text,
)
from potatura.config import STAGE_ORDER
from potatura.errors import ConfigError, PotaturaError
from potatura.progress import (
    Progress,  # re-exported: stages written before progress.py import it from here
)

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
    # What the stage writes (checked after it runs) and which upstream outputs it reads. With
    # inputs declared, only those are verified and enter the input hash (a summary with timings
    # upstream then does not force a rerun); without, every output of every needed stage does.
    outputs: tuple["Output", ...] = ()
    inputs: tuple["Input", ...] = ()


@dataclass(frozen=True)
class Output:
    """One artifact a stage writes: its name (key of run()'s result), format tag
    (potatura.formats) and path relative to the stage folder."""

    name: str
    format: str
    path: str
    optional: bool = False


@dataclass(frozen=True)
class Input:
    """One upstream artifact a stage reads: (stage, output name); optional ones may be absent."""

    stage: str
    name: str
    optional: bool = False


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


def stage_module_exists(name: str) -> bool:
    """Whether the stage's module has landed (a file check: nothing is imported)."""
    from importlib.util import find_spec

    module = _STAGE_MODULES[name]
    package = module.rsplit(".", 1)[0]
    try:
        spec = find_spec(package)
    except ModuleNotFoundError:
        return False
    return spec is not None and spec.submodule_search_locations is not None and any(
        (Path(loc) / "stage.py").is_file() for loc in spec.submodule_search_locations)


def load_stage(name: str) -> Stage:
    """The Stage record of one stage (imports that stage's module only)."""
    if name not in _STAGE_MODULES:
        raise ConfigError(f"unknown stage {name!r}; accepted: {', '.join(STAGE_ORDER)}")
    return importlib.import_module(_STAGE_MODULES[name]).STAGE


def available_stages() -> dict[str, Stage]:
    """Stages whose package has landed, in flow order (imports every one of them)."""
    return {name: load_stage(name) for name in STAGE_ORDER if stage_module_exists(name)}


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

    def __init__(self, path: Path, read_only: bool = False):
        self.path = path
        self.data: dict = {"potatura": __version__, "stages": {}}
        if path.is_file():
            try:
                data = read_json(path)
                if not isinstance(data, dict) or not isinstance(data.get("stages", {}), dict) or not all(
                        isinstance(r, dict) for r in data.get("stages", {}).values()):
                    raise ValueError("not a manifest")
                self.data = data
            except (ValueError, UnicodeDecodeError):
                # A corrupt manifest means nothing can be trusted as cached: start over, keep a copy.
                if not read_only:
                    shutil.copy(path, path.with_suffix(".corrupt.json"))
        self.data.setdefault("stages", {})

    def stage(self, name: str) -> dict:
        return self.data["stages"].get(name, {})

    def set_stage(self, name: str, record: dict) -> None:
        self.data["stages"][name] = record
        write_json(self.path, self.data)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


_FILE_ONLY = {"file_only": True}  # extra= of log records that go to run.log but not the terminal


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
        rh.addFilter(lambda record: not getattr(record, "file_only", False))
        log.addHandler(rh)
    return log


@dataclass
class StageOutcome:
    name: str
    status: str  # done | skipped | cached (copied from the stage cache) | failed
    seconds: float
    outputs: dict[str, str]


def run_flow(cfg, from_stage: Optional[str] = None, to_stage: Optional[str] = None,
             only: Optional[list[str]] = None, force: bool = False, console=None,
             show_progress: bool = True, stage_cache=None) -> list[StageOutcome]:
    """Run the stages of `cfg` in order inside cfg.run_dir(); return what each stage did.

    The run directory is locked for the whole call (RunLock): a second run on it stops with
    the holder's pid. Inputs a stage reads are checked against the manifest's sha256 first.
    `stage_cache` (a folder, default $POTATURA_STAGE_CACHE, see potatura.stagecache): a stage
    whose input hash another run directory already computed is copied from there ("cached")."""
    from potatura import stagecache
    from potatura.config import FlowConfig, dump_config

    assert isinstance(cfg, FlowConfig)
    stages, order, selected = _select(cfg, from_stage, to_stage, only)
    run_dir = cfg.run_dir().resolve()  # stages get absolute paths, whatever the cwd
    _check_run_dir_path(run_dir)
    # Checked before anything is written (a refused run leaves no folder behind), and again
    # under the lock (another run may have changed the manifest in between).
    _check_startable(cfg, stages, order, selected, Manifest(run_dir / "manifest.json", read_only=True), run_dir)
    _make_run_dir(run_dir)
    with RunLock(run_dir):
        manifest = Manifest(run_dir / "manifest.json")
        _check_startable(cfg, stages, order, selected, manifest, run_dir)
        _guard_os_errors(lambda: write_text(run_dir / "config.yaml", dump_config(cfg)), run_dir)
        log = _setup_log(run_dir, console)
        log.info("run %s in %s: stages %s (pid %d)", cfg.name, run_dir, ", ".join(selected), os.getpid())
        outcomes: list[StageOutcome] = []
        start = order.index(from_stage) if from_stage else 0
        thread_setting: dict = {}  # chosen when the first stage runs (a cached run needs none)
        cache_dir = stagecache.cache_dir_from(stage_cache)
        with Progress(console=console, enabled=show_progress and console is not None) as progress:
            for name in selected:
                forced = force or (from_stage is not None and order.index(name) >= start)
                outcomes.append(_run_stage(cfg, stages, name, manifest, run_dir, log, progress, forced,
                                           thread_setting, cache_dir))
                if outcomes[-1].status in ("done", "cached"):
                    _mark_stale_downstream(cfg, name, stages, order, manifest, run_dir, log)
        _write_timings(run_dir, manifest)
    return outcomes


def _select(cfg, from_stage, to_stage, only) -> tuple[dict[str, Stage], list[str], list[str]]:
    """(the flow's Stage records, the flow's stages in order, the stages to run). Only the
    flow's stages are imported."""
    present = [s for s in STAGE_ORDER if stage_module_exists(s)]
    missing = [s for s in (cfg.stages or []) if s not in present]
    if missing:
        raise ConfigError(f"stages: {', '.join(missing)} not available in this version; available: {', '.join(present)}")
    wanted = [s for s in (cfg.stages or present)]
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
    return {s: load_stage(s) for s in order}, order, selected


def _guard_os_errors(action: Callable[[], Any], where: Path) -> Any:
    """Run `action`; an OSError (read-only disk, a file where a folder should be, disk full)
    becomes a one-line PotaturaError naming the path."""
    try:
        return action()
    except OSError as exc:
        target = exc.filename or where
        raise PotaturaError(f"{target}: {exc.strerror or exc} (run directory {where})") from None


def _check_startable(cfg, stages, order, selected, manifest: "Manifest", run_dir: Path) -> None:
    for name in selected:
        _check_needs(name, stages[name], manifest, run_dir, selected)
    _check_upstream_current(cfg, stages, order, selected, manifest, run_dir)


def _check_run_dir_path(run_dir: Path) -> None:
    for parent in [run_dir, *run_dir.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise PotaturaError(f"{parent}: is a file, not a folder; runs_dir and name must name a folder "
                                    f"(run directory {run_dir})")
            break


def _make_run_dir(run_dir: Path) -> None:
    _guard_os_errors(lambda: run_dir.mkdir(parents=True, exist_ok=True), run_dir)
    if not os.access(run_dir, os.W_OK):
        raise PotaturaError(f"{run_dir}: the run directory is not writable")


class RunLock:
    """An exclusive lock on a run directory (flock on <run>/.lock, which holds the holder's pid).

    The kernel drops the lock when its process ends, however it ends, so the lock of a killed
    run is taken over by the next one; the pid written in the file only names the holder."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self._fd: Optional[int] = None

    def __enter__(self) -> "RunLock":
        import fcntl

        fd = _guard_os_errors(lambda: os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666), self.path.parent)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise PotaturaError(f"{self.path.parent}: in use by another potatura run ({holder}); wait for it to "
                                f"finish, or stop it, then run again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {_now()}".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def _check_needs(name: str, stage: Stage, manifest: "Manifest", run_dir: Path, selected: list[str]) -> None:
    """A stage runs only after the stages it needs: completed here, or selected to run first."""
    for dep in stage.needs:
        status = manifest.stage(dep).get("status")
        if dep not in selected and status != "done":
            why = "was made with settings that changed since (stale)" if status == "stale" else "has not completed"
            raise PotaturaError(
                f"stage {name!r} needs stage {dep!r}, which {why} in {run_dir}; "
                f"run `potatura run` without --from, or with --from {dep}")


def _check_upstream_current(cfg, stages, order, selected, manifest: "Manifest", run_dir: Path) -> None:
    """Stages that are not rerun but feed the ones that are must match this config (otherwise
    the run would mix artifacts of two configs under one config.yaml) and their files must be
    the ones the manifest recorded."""
    upstream = _upstream_of(selected, stages)
    for name in order:
        record = manifest.stage(name)
        if name in upstream and record.get("status") == "done":
            current = _input_hash(cfg, stages[name], manifest, run_dir, stages)
            if current is not None and current[0] != record.get("input_hash"):
                raise PotaturaError(
                    f"stage {name!r} in {run_dir} was made with other settings or data than this flow file has; "
                    f"rerun it first (`potatura run FLOW` without --from, or --from {name})")


def verify_inputs(stage: Stage, manifest: "Manifest", run_dir: Path) -> None:
    """Refuse to start `stage` when an upstream file it reads differs from the one the manifest
    recorded (sha256): a replaced or edited artifact is never used silently."""
    for dep, out_name, rec in _read_records(stage, manifest):
        p = run_dir / rec["path"]
        if not p.exists():
            raise PotaturaError(f"{p}: output {out_name!r} of stage {dep!r} is missing; rerun with --from {dep}")
        actual = tree_sha256(p)
        if actual != rec.get("sha256"):
            raise PotaturaError(f"{p}: output {out_name!r} of stage {dep!r} changed since that stage wrote it "
                                f"(sha256 {actual[:12]}, manifest {str(rec.get('sha256'))[:12]}); "
                                f"rerun with --from {dep}")


def _read_records(stage: Stage, manifest: "Manifest") -> Iterator[tuple[str, str, dict]]:
    """(stage, output name, manifest record) of each upstream output `stage` reads."""
    if stage.inputs:
        for inp in stage.inputs:
            rec = manifest.stage(inp.stage).get("outputs", {}).get(inp.name)
            if rec is not None:
                yield inp.stage, inp.name, rec
        return
    for dep in stage.needs:
        for out_name, rec in manifest.stage(dep).get("outputs", {}).items():
            yield dep, out_name, rec


def _run_stage(cfg, stages: dict[str, Stage], name: str, manifest: "Manifest", run_dir: Path,
               log: logging.Logger, progress: Progress, forced: bool, thread_setting: dict,
               cache_dir: Optional[Path] = None) -> "StageOutcome":
    """Run (or skip, when cached) one stage and record it in the manifest."""
    stage = stages[name]
    record = manifest.stage(name)
    _check_needs(name, stage, manifest, run_dir, [])
    input_hash, inputs = _input_hash(cfg, stage, manifest, run_dir, stages)
    out_dir = run_dir / name
    if (not forced and record.get("status") == "done"
            and record.get("input_hash") == input_hash and _outputs_intact(run_dir, record)):
        log.info("stage %s: inputs unchanged, skipped", name)
        return StageOutcome(name, "skipped", 0.0, {k: v["path"] for k, v in record["outputs"].items()})
    verify_inputs(stage, manifest, run_dir)
    if cache_dir is not None and not forced:
        from potatura import stagecache

        cached = stagecache.restore(cache_dir, name, input_hash, run_dir)
        if cached is not None:
            manifest.set_stage(name, cached)
            log.info("stage %s: restored from the stage cache (%s)", name, cached["cache"]["key"])
            return StageOutcome(name, "cached", 0.0, {k: v["path"] for k, v in cached["outputs"].items()})
    if not thread_setting:
        thread_setting.update(threads.choose(cfg))
    thread_record = threads.apply(thread_setting)
    log.info("stage %s: %d torch thread(s) (%s; %d CPUs available; OMP_WAIT_POLICY %s)", name,
             thread_record["torch_threads"], thread_record["source"], thread_record["available_cpus"],
             thread_record["omp_wait_policy"])
    resuming = record.get("status") == "running" and record.get("input_hash") == input_hash and not forced
    # Completed outputs are set aside, not deleted, until the new run succeeds: a failed rerun
    # (bad data, a refused file) gives them back, so nothing written before is lost.
    backup = run_dir / f".{name}.previous"
    if backup.exists():
        _guard_os_errors(lambda: shutil.rmtree(backup), run_dir)
    if out_dir.exists() and not resuming:
        if record.get("status") == "done":
            _guard_os_errors(lambda: out_dir.rename(backup), run_dir)
        else:
            _guard_os_errors(lambda: shutil.rmtree(out_dir), run_dir)
    _guard_os_errors(lambda: out_dir.mkdir(parents=True, exist_ok=True), run_dir)
    manifest.set_stage(name, {"status": "running", "input_hash": input_hash, "started": _now(),
                              "tool_versions": tool_versions(), "outputs": {}, "threads": thread_record})
    log.info("stage %s: %s", name, "resuming" if resuming else "started")
    ctx = StageContext(cfg, run_dir, out_dir, inputs, log, progress)
    t0 = time.perf_counter()
    try:
        outputs = stage.run(ctx) or {}
        _check_declared_outputs(stage, outputs)
    except BaseException as exc:
        seconds = time.perf_counter() - t0
        if cache_dir is not None:
            from potatura import stagecache

            stagecache.release(cache_dir, name, input_hash)  # another process may compute it
        if isinstance(exc, KeyboardInterrupt):
            log.info("stage %s: interrupted after %.1f s; `potatura run` resumes it", name, seconds)
            raise
        error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if backup.exists():
            shutil.rmtree(out_dir, ignore_errors=True)
            backup.rename(out_dir)
            manifest.set_stage(name, {**record, "last_failure": {"finished": _now(), "error": error}})
            log.info("stage %s: failed; its previous outputs are kept", name)
        else:
            manifest.set_stage(name, {"status": "failed", "input_hash": input_hash, "seconds": seconds,
                                      "finished": _now(), "error": error,
                                      "tool_versions": tool_versions(), "outputs": {}})
        # File only: the CLI prints the error line itself (once).
        if not isinstance(exc, PotaturaError):
            log.error("stage %s failed:\n%s", name, traceback.format_exc(), extra=_FILE_ONLY)
        else:
            log.error("stage %s failed: %s", name, exc, extra=_FILE_ONLY)
        raise
    seconds = time.perf_counter() - t0
    if backup.exists():
        shutil.rmtree(backup, ignore_errors=True)
    out_records = {}
    root = run_dir.resolve()
    for key, path in outputs.items():
        p = Path(path)
        p = (p if p.is_absolute() else run_dir / p).resolve()
        rel = str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
        out_records[key] = {"path": rel, "sha256": tree_sha256(p)}
    manifest.set_stage(name, {"status": "done", "input_hash": input_hash, "seconds": round(seconds, 3),
                              "started": manifest.stage(name).get("started"), "finished": _now(),
                              "tool_versions": tool_versions(), "outputs": out_records, "threads": thread_record})
    if cache_dir is not None:
        from potatura import stagecache

        stagecache.store(cache_dir, name, input_hash, run_dir, manifest.stage(name))
    log.info("stage %s: done in %.1f s", name, seconds)
    return StageOutcome(name, "done", seconds, {k: v["path"] for k, v in out_records.items()})


def _check_declared_outputs(stage: Stage, outputs: dict) -> None:
    for out in stage.outputs:
        if out.name not in outputs and not out.optional:
            raise RuntimeError(f"stage {stage.name!r} declares output {out.name!r} ({out.path}) but did not return it")


def _mark_stale_downstream(cfg, name: str, stages: dict[str, Stage], order: list[str], manifest: "Manifest",
                           run_dir: Path, log: logging.Logger) -> None:
    """After `name` ran, completed later stages whose inputs no longer match (other upstream
    files, or an upstream stage now stale) are marked stale in the manifest: their files stay,
    but nothing treats them as current until they run again."""
    for later in order[order.index(name) + 1:]:
        record = manifest.stage(later)
        if record.get("status") != "done" or later not in stages:
            continue
        current = _input_hash(cfg, stages[later], manifest, run_dir, stages)
        if current is None or current[0] != record.get("input_hash"):
            manifest.set_stage(later, {**record, "status": "stale", "stale_because": f"{name} ran again at {_now()}"})
            log.info("stage %s: marked stale (%s ran again with other results)", later, name)


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


@functools.lru_cache(maxsize=None)
def code_fingerprint() -> str:
    """sha256 of potatura's own source (every file of the package: code, templates, catalog).

    Part of every stage's input hash: a stage made by other code (a changed estimator, a fixed
    simulator) is not reused from a run directory or the shared stage cache, whatever the version
    string says. Computed once per process (~150 files)."""
    import hashlib

    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                       and p.suffix not in (".pyc", ".pyo")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _input_hash(cfg, stage: Stage, manifest: "Manifest", run_dir: Path, stages: Optional[dict] = None):
    """(input hash, {dep: {output: path}}) of `stage`, or None when a dependency has no outputs.

    Covers the seed, the config sections the stage reads, the data files behind the `data`
    section, the stage's own fingerprint, and the content hashes of the upstream outputs it
    reads (the declared inputs, or every output of the needed stages)."""
    inputs: dict[str, dict[str, Path]] = {}
    for dep in stage.needs:
        dep_rec = manifest.stage(dep)
        if dep_rec.get("status") != "done":
            return None
        inputs[dep] = {k: run_dir / v["path"] for k, v in dep_rec.get("outputs", {}).items()}
    input_hashes: dict[str, Any] = {}
    for dep, out_name, rec in _read_records(stage, manifest):
        input_hashes.setdefault(dep, {})[out_name] = rec["sha256"]
    sections = {s: getattr(cfg, s).model_dump(mode="json") for s in stage.config_sections}
    identity = {"seed": cfg.seed, "sections": sections, "inputs": input_hashes, "potatura": __version__,
                "code": code_fingerprint()}
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
