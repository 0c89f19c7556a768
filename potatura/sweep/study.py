"""The sweep driver: an Optuna study in a journal file, trials as Dask tasks.

    runs/<sweep>/sweep.yaml          the resolved sweep (base flow merged), checked on --resume
    runs/<sweep>/study.journal       Optuna's journal storage: survives a killed driver
    runs/<sweep>/trials/<n>/         trial n's run directory (a normal flow run)
    runs/<sweep>/stage_cache/        stage outputs shared by the trials (potatura.stagecache)
    runs/<sweep>/sweep.json|csv      every trial: parameters, metrics, status, reason, cache use
    runs/<sweep>/sweep.md, *.png     the report: Pareto front(s), plots per board

The driver asks Optuna for a trial, submits the flow run to Dask and tells Optuna the result,
keeping `workers` trials in flight. A killed driver loses only its in-flight bookkeeping: on
--resume the trials Optuna still has as RUNNING are submitted again with their parameters (their
run directories resume from the stage they were in), finished ones are never redone.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from potatura.artifacts import write_text
from potatura.errors import ConfigError, PotaturaError
from potatura.sweep.config import LoadedSweep, ParamSpec

log = logging.getLogger("potatura.sweep")
STUDY_FILE = "study.journal"
CONNECT_TIMEOUT_S = 30  # how long --scheduler waits for the scheduler to answer
_SCALARS = (type(None), bool, int, float, str)


@dataclass
class SweepOutcome:
    sweep_dir: Path
    trials: list[dict]
    summary: dict
    fronts: dict[str, list[int]] = field(default_factory=dict)


def _labels(spec: ParamSpec) -> list[Any]:
    """Optuna categorical choices: the values themselves, or their YAML text for lists and mappings."""
    if all(isinstance(c, _SCALARS) for c in spec.choices):
        return list(spec.choices)
    return [yaml.safe_dump(c, default_flow_style=True).strip() for c in spec.choices]


def distributions(loaded: LoadedSweep) -> dict:
    import optuna.distributions as d

    out = {}
    for name, spec in loaded.config.space.items():
        if spec.kind == "float":
            out[name] = d.FloatDistribution(spec.float_[0], spec.float_[1], log=spec.log, step=spec.step)
        elif spec.kind == "int":
            out[name] = d.IntDistribution(spec.int_[0], spec.int_[1], log=spec.log,
                                          step=int(spec.step) if spec.step else 1)
        else:
            out[name] = d.CategoricalDistribution(_labels(spec))
    return out


def flow_params(loaded: LoadedSweep, params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's parameter values -> flow values (categorical labels back to their choice)."""
    out = {}
    for name, value in params.items():
        spec = loaded.config.space[name]
        if spec.kind == "choices":
            value = spec.choices[_labels(spec).index(value)]
        out[name] = value
    return out


def suggest_all(trial, loaded: LoadedSweep) -> dict[str, Any]:
    """Suggest every parameter of the space in `trial` (values already set, or enqueued, are kept).

    Also completes a trial a killed driver left half-created (some parameters not yet suggested)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    for name, dist in distributions(loaded).items():
        if name in trial.params:
            continue
        if isinstance(dist, CategoricalDistribution):
            trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, IntDistribution):
            trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.params


def make_sampler(loaded: LoadedSweep):
    import optuna

    s, n = loaded.config.sampler, loaded.config.n_trials
    if s.name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=s.seed, population_size=s.population_size or max(2, min(50, n)))
    if s.name == "tpe":
        return optuna.samplers.TPESampler(seed=s.seed, multivariate=True)
    # grid: every grid point is enqueued when the study is created (enqueue_grid), in order;
    # Optuna's GridSampler stops the study from inside tell(), which the ask-and-tell loop cannot take.
    return optuna.samplers.RandomSampler(seed=s.seed)


def grid_points(loaded: LoadedSweep) -> list[dict[str, Any]]:
    """Every point of the grid (Optuna parameter values), first parameter slowest."""
    import itertools

    names = list(loaded.config.space)
    axes = [(_labels(spec) if spec.kind == "choices" else spec.grid_values(name))
            for name, spec in loaded.config.space.items()]
    return [dict(zip(names, combo)) for combo in itertools.product(*axes)]


def _resolved_text(loaded: LoadedSweep) -> str:
    doc = loaded.config.model_dump(mode="json", by_alias=True, exclude_none=True)
    for k in ("workers", "n_trials"):  # how many machines and trials: may change on --resume
        doc.pop(k, None)
    doc["flow"] = loaded.base_raw
    doc.pop("base", None)
    return yaml.safe_dump(doc, sort_keys=True)


def check_state(loaded: LoadedSweep, resume: bool) -> None:
    """Refuse to start over an existing sweep, to resume a missing one, or one with another space."""
    sweep_dir = loaded.sweep_dir
    journal = sweep_dir / STUDY_FILE
    resolved = _resolved_text(loaded)
    if journal.exists() and not resume:
        raise ConfigError(f"{sweep_dir}: sweep {loaded.config.name!r} already exists; pass --resume to continue it, "
                          f"or give the sweep another name")
    if resume:
        if not journal.exists():
            raise ConfigError(f"{sweep_dir}: nothing to resume (no {STUDY_FILE}); run without --resume to start it")
        saved = (sweep_dir / "sweep.yaml").read_text(encoding="utf-8") if (sweep_dir / "sweep.yaml").is_file() else None
        if saved is not None and saved != resolved:
            raise ConfigError(f"{loaded.source}: differs from the sweep being resumed ({sweep_dir / 'sweep.yaml'}); "
                              f"a resumed sweep must keep its space, objectives and base flow")


def open_study(loaded: LoadedSweep, resume: bool):
    """Create (or, with resume, reopen) the study in <sweep>/study.journal."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

    check_state(loaded, resume)
    sweep_dir = loaded.sweep_dir
    journal = sweep_dir / STUDY_FILE
    resolved = _resolved_text(loaded)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_text(sweep_dir / "sweep.yaml", resolved)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # One driver writes the journal, for milliseconds at a time: a lock older than a few seconds
    # was left by a killed driver (Optuna's default waits 30 s before breaking it).
    storage = JournalStorage(JournalFileBackend(str(journal), lock_obj=JournalFileSymlinkLock(str(journal), grace_period=3)))
    study = optuna.create_study(storage=storage, study_name=loaded.config.name, load_if_exists=True,
                                directions=[o.resolved_direction for o in loaded.config.objective_list()],
                                sampler=make_sampler(loaded))
    if loaded.config.sampler.name == "grid" and not study.get_trials(deepcopy=False):
        for point in grid_points(loaded):
            study.enqueue_trial(point)
    return study


def _values(loaded: LoadedSweep, result: dict) -> tuple[Optional[list[float]], Optional[str]]:
    metrics = result.get("metrics") or {}
    values = []
    for o in loaded.config.objective_list():
        v = metrics.get(o.metric)
        if v is None or not math.isfinite(float(v)):
            return None, f"objective {o.metric} not measured (stages run: {', '.join(result.get('stages', {}))})"
        values.append(float(v))
    return values, None


def tell(study, loaded: LoadedSweep, trial, result: dict) -> None:
    """Record a trial's result in the study (complete, or failed with its reason)."""
    from optuna.trial import TrialState

    metrics = result.get("metrics") or {}
    # Optuna's constraint values (<= 0: satisfied), read by NSGA-II and TPE
    violations = {c.label: c.violation(metrics.get(c.metric)) for c in loaded.config.constraints}
    if "fits" in metrics:
        violations["fits the board"] = 0.0 if metrics["fits"] else 1.0
    for key, value in violations.items():
        trial.set_constraint(key, float(value))
    trial.set_user_attr("constraints", list(violations.values()) or [0.0])
    trial.set_user_attr("result", json.loads(json.dumps(result, default=str)))
    values, missing = _values(loaded, result) if result.get("status") == "complete" else (None, None)
    if values is None:
        trial.set_user_attr("reason", result.get("reason") or missing)
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, values)


def _client(scheduler: Optional[str], workers: int, retries: int):
    import dask
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s"), None
        except (OSError, TimeoutError) as exc:
            raise PotaturaError(f"--scheduler {scheduler}: no Dask scheduler answers there ({exc})") from None
    # A worker that dies mid-task makes the scheduler move the task elsewhere, up to allowed-failures
    # times (run_trial itself never raises: failures are results).
    with dask.config.set({"distributed.scheduler.allowed-failures": retries}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=logging.ERROR)
    return Client(cluster), cluster


def run_sweep(loaded: LoadedSweep, resume: bool = False, scheduler: Optional[str] = None,
              workers: Optional[int] = None, client=None,
              on_result: Optional[Callable[[dict], None]] = None) -> SweepOutcome:
    """Run (or resume) the sweep to n_trials finished trials; write the results and the report.

    client: an existing dask.distributed Client (tests, notebooks); else `scheduler` (an address
    such as tcp://host:8786) or a LocalCluster of `workers` processes with one thread each.
    """
    import optuna
    from dask.distributed import as_completed
    from optuna.trial import TrialState

    from potatura.sweep.report import write_results

    cfg = loaded.config
    sweep_dir = loaded.sweep_dir
    cache = str(sweep_dir / "stage_cache") if cfg.stage_cache else None
    n_workers = workers or cfg.workers
    own_client = client is None
    cluster = None
    check_state(loaded, resume)
    if own_client:  # before anything is written: a wrong address leaves no half-made sweep behind
        client, cluster = _client(scheduler, n_workers, cfg.retries)
    t0 = time.perf_counter()
    live: dict[int, Any] = {}  # trial number -> optuna Trial being run

    def submit(trial, params):
        flow = loaded.trial_flow(trial.number, flow_params(loaded, params))
        spec = {"number": trial.number, "flow": flow, "stage_cache": cache, "threads": cfg.threads_per_trial}
        live[trial.number] = trial
        from potatura.sweep.trial import run_trial

        return client.submit(run_trial, spec, key=f"potatura-sweep-{cfg.name}-trial-{trial.number}", pure=False)

    try:
        study = open_study(loaded, resume)
        in_flight = as_completed()
        # Trials a killed driver left running: same parameters, same run directory (which resumes).
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            trial = optuna.trial.Trial(study, frozen._trial_id)
            log.info("sweep: resubmitting trial %d left running", frozen.number)
            in_flight.add(submit(trial, suggest_all(trial, loaded)))
        finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)))
        to_ask = cfg.n_trials - finished - len(live)
        slots = max(1, n_workers if own_client and not scheduler else _n_workers(client, n_workers))

        def top_up():
            nonlocal to_ask
            while to_ask > 0 and len(live) < slots:
                trial = study.ask()
                to_ask -= 1
                in_flight.add(submit(trial, suggest_all(trial, loaded)))

        top_up()
        for future in in_flight:
            try:
                result = future.result()
            except Exception as exc:  # the task itself died (KilledWorker after Dask's retries, cancelled)
                number = int(future.key.rsplit("-", 1)[1])
                result = {"number": number, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
            trial = live.pop(result["number"])
            tell(study, loaded, trial, result)
            log.info("sweep: trial %d %s%s", result["number"], result["status"],
                     f" ({result['reason']})" if result.get("reason") else "")
            if on_result is not None:
                on_result(result)
            write_results(loaded, study, wall_seconds=time.perf_counter() - t0, final=False)
            top_up()
    finally:
        if own_client:
            client.close()
            if cluster is not None:
                cluster.close()
    return write_results(loaded, study, wall_seconds=time.perf_counter() - t0, final=True)


def _n_workers(client, default: int) -> int:
    try:
        n = sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
    except Exception:  # an older scheduler without that info
        return default
    return n or default
