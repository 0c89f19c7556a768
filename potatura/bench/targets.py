"""The targets of the bench, one small class each, and their discovery from a run directory.

    TorchTarget        CPU torch eager on a module (float, simplified, fake-quantized Brevitas)  measured
    OnnxRuntimeTarget  onnxruntime CPU on an ONNX file (1 thread / every core)                    measured
    CudaTarget         torch eager on a CUDA GPU (synchronized before the clock is read)          measured
    SimulatedTarget    a hwgen project through potatura.sim.api: cycles / clock                   simulated
    BoardTarget        a deploy bundle through the deploy client (emulated board or real agent)   emulated / measured

Inputs are real samples: the quant stage's golden.npz inputs (validation images, float32 NCHW),
repeated to fill a batch. A target whose inputs are missing is not built: discover_targets
returns it as a Skipped entry with the reason.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ContextManager, Iterator, Optional

import numpy as np

from potatura.artifacts import atomic_path, npz_read_error, read_json
from potatura.bench.config import BenchConfig
from potatura.bench.harness import LatencyPoint, Skipped, Target, TargetResult, torch_threads
from potatura.errors import DataError

log = logging.getLogger("potatura.bench")


def batch_of(x: np.ndarray, batch: int) -> np.ndarray:
    """`batch` samples of x (N, ...), cycling through them when batch > N."""
    return np.ascontiguousarray(x[np.arange(batch) % len(x)])


# -- CPU / GPU ------------------------------------------------------------------------------------


class TorchTarget(Target):
    """torch eager inference (torch.inference_mode) of a module on the CPU."""

    device = "cpu"

    def __init__(self, name: str, module, x: np.ndarray, threads: int, description: str):
        import torch

        self.name, self.description, self.threads = name, description, threads
        self.module = module.eval()
        self.x = x
        self._torch = torch
        self._input = None

    def threads_context(self) -> ContextManager:
        return torch_threads(self.threads)

    def setup(self, batch: int) -> None:
        self._input = self._torch.from_numpy(batch_of(self.x, batch))

    def run(self) -> None:
        with self._torch.inference_mode():
            self.module(self._input)

    def details(self) -> dict:
        return {"framework": f"torch {self._torch.__version__}", "mode": "eager, inference_mode",
                "parameters": int(sum(p.numel() for p in self.module.parameters()))}


class CudaTarget(TorchTarget):
    """torch eager on the first CUDA device; synchronize() waits for the stream before the clock."""

    device = "gpu"

    def __init__(self, name: str, module, x: np.ndarray, threads: int, description: str):
        super().__init__(name, module, x, threads, description)
        self.module = self.module.to("cuda")

    def setup(self, batch: int) -> None:
        self._input = self._torch.from_numpy(batch_of(self.x, batch)).to("cuda")
        self._torch.cuda.synchronize()

    def synchronize(self) -> None:
        self._torch.cuda.synchronize()

    def details(self) -> dict:
        return {**super().details(), "gpu": self._torch.cuda.get_device_name(0),
                "cuda": self._torch.version.cuda}

    def close(self) -> None:
        self.module = None
        self._input = None
        self._torch.cuda.empty_cache()


class OnnxRuntimeTarget(Target):
    """onnxruntime's CPU execution provider on an ONNX file, `threads` intra-op threads."""

    device = "cpu"

    def __init__(self, name: str, onnx_path: Path, x: np.ndarray, threads: int, description: str):
        import onnxruntime as ort

        self.name, self.description, self.threads = name, description, threads
        self.onnx_path = Path(onnx_path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.x = x.astype(np.float32)
        self._feed: dict = {}
        self._ort_version = ort.__version__

    def setup(self, batch: int) -> None:
        self._feed = {self.input_name: batch_of(self.x, batch)}

    def run(self) -> None:
        self.session.run(None, self._feed)

    def details(self) -> dict:
        return {"framework": f"onnxruntime {self._ort_version}", "provider": "CPUExecutionProvider",
                "intra_op_num_threads": self.threads, "inter_op_num_threads": 1, "onnx": self.onnx_path.name}

    def close(self) -> None:
        self.session = None


# -- FPGA -----------------------------------------------------------------------------------------


class SimulatedTarget(Target):
    """A hwgen project run through potatura's simulator: every figure is cycles / clock.

    Batch 1: the single-sample latency (first input token -> last output token); batch B: the
    cycles of B samples streamed back to back. Not timed: each point is computed once.
    """

    kind = "simulated"
    device = "fpga"

    def __init__(self, name: str, project_dir: Path, board: str, backend: str):
        from potatura.sim.api import load_project

        self.name = name
        self.project_dir = Path(project_dir)
        self.board, self.backend = board, backend
        self.accelerator = load_project(self.project_dir)
        self.description = f"{board} / {backend} accelerator, {self.accelerator.clock_mhz:g} MHz (potatura simulator)"

    def measure(self, batch_sizes: list[int], iterations: int, warmup: int,
                max_seconds: float = float("inf")) -> list[TargetResult]:
        points = []
        report_1 = None
        for batch in batch_sizes:
            report = self.accelerator.cycles(batch=batch)
            if batch == 1:
                report_1 = report
                seconds = report.seconds(report.latency_cycles)
            else:
                seconds = report.seconds(report.total_cycles)
            points.append(LatencyPoint.computed(batch, seconds))
        details = {"board": self.board, "backend": self.backend, "project": str(self.project_dir),
                   "clock_mhz": self.accelerator.clock_mhz,
                   "figures": "simulated: cycles from potatura's simulator / clock; accelerator only (no host, "
                              "no driver)"}
        if report_1 is not None:
            details["cycles"] = report_1.to_dict()
        return [TargetResult(self.name, self.kind, self.device, self.description, None, points, details)]


class BoardTarget(Target):
    """A deploy bundle on a board agent, through potatura.deploy.client.BoardClient.

    The agent times the hardware-only call (DMA start -> done) and the end-to-end call (pack, copy
    in, run, copy out, unpack); each becomes one result. The kind is the one the agent's answer
    gives (board_kind: "emulated" for the emulated board, "measured" for a real one).
    """

    device = "fpga"

    def __init__(self, name: str, bundle_dir: Path, kind: str, url: Optional[str] = None,
                 token: Optional[str] = None, requested_by: Optional[str] = None):
        self.name, self.kind = name, kind
        # What asked for this board (bench.board_url, $POTATURA_BOARD): its failure fails the bench.
        self.required = f"the board agent at {url} ({requested_by})" if requested_by else None
        self.bundle_dir = Path(bundle_dir)
        self.url, self.token = url, token
        self._stop = None
        self.description = f"{self.bundle_dir.name} bundle on " + ("the emulated board" if kind == "emulated"
                                                                  else f"the board agent at {url}")

    def _client(self):
        from potatura.deploy.client import BoardClient

        if self.kind == "emulated":
            from potatura.deploy.emulated import start_emulated_agent

            self.url, self.token, self._stop = start_emulated_agent(self.bundle_dir)
            client = BoardClient(self.url, self.token)
        else:
            client = BoardClient(self.url, self.token)
            client.info()  # an unreachable agent is named as such before the bundle is checked and packed
            client.deploy(self.bundle_dir)
        return client

    def measure(self, batch_sizes: list[int], iterations: int, warmup: int,
                max_seconds: float = float("inf")) -> list[TargetResult]:
        client = self._client()
        info = client.info()
        raw = client.benchmark(batch_sizes, iterations, warmup)
        return board_results(self.name, self.description, self.kind, raw, info)

    def close(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None


class ReportedBoardTarget(Target):
    """A board benchmark the deploy stage already ran through the same agent protocol (a JSON file
    under <run>/deploy/ with the agent's "rows"): read, not run again."""

    device = "fpga"

    def __init__(self, name: str, path: Path, answer: dict):
        self.name, self.path, self.answer = name, Path(path), answer
        self.kind = board_kind(answer, name=name)
        where = answer.get("device")
        if self.kind == "emulated" and where != "emulated":  # the emulated board behind pynq
            where = f"{where}, emulated hardware"
        self.description = f"deploy stage's board benchmark ({self.path.parent.name}, {where})"

    def measure(self, batch_sizes: list[int], iterations: int, warmup: int,
                max_seconds: float = float("inf")) -> list[TargetResult]:
        results = board_results(self.name, self.description, self.kind, self.answer)
        for r in results:
            r.details["read_from"] = str(self.path)
        return results


def board_kind(raw: dict, default: str = "measured", name: str = "board") -> str:
    """The kind of a board agent's answer (its /benchmark answer, or the deploy stage's record of it).

    The agent's `hardware_source` (its driver's timing source, potatura.deploy.driver: "measured"
    on a real board, "emulated" on potatura's emulated board, including the emulated board behind
    pynq, POTATURA_EMULATED_PYNQ, where `device` is "pynq") decides; `device` only when an answer
    has no hardware_source. "measured" only for a real board: on the emulated board the hardware
    time is simulated cycles on its virtual clock and the end-to-end time is measured on the
    agent's host with the simulator inside, so both are "emulated". `default` when the answer says
    neither.
    """
    source, device = raw.get("hardware_source"), raw.get("device")
    if source is None:
        if device is None:
            return default
        return "emulated" if device == "emulated" else "measured"
    if source not in ("measured", "emulated"):
        raise DataError(f"{name}: the board agent's hardware_source {source!r} is neither measured nor emulated")
    return "measured" if source == "measured" and device != "emulated" else "emulated"


def board_results(name: str, description: str, kind: str, raw: dict, info: Any = None) -> list[TargetResult]:
    """TargetResults (hardware-only, end-to-end) from the board agent's /benchmark answer.

    The answer (potatura.deploy.agent.AgentCore.benchmark) holds per batch size ("rows") the
    p50/p90/p99/mean/min/max of hardware_s and end_to_end_s over `iterations` runs. The answer
    decides the kind (board_kind), whatever the caller expected: a real board is never shown as
    emulated or the reverse.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("rows"), list):
        raise DataError(f"{name}: the board agent's benchmark answer has no 'rows' (got "
                        f"{', '.join(raw) if isinstance(raw, dict) else type(raw).__name__})")
    kind = board_kind(raw, kind, name)
    series: dict[str, list[LatencyPoint]] = {"hardware-only": [], "end-to-end": []}
    for row in raw["rows"]:
        batch = int(row["batch"])
        for label, key in (("hardware-only", "hardware_s"), ("end-to-end", "end_to_end_s")):
            stats = row.get(key)
            if not isinstance(stats, dict) or stats.get("p50") is None:
                continue
            p50 = float(stats["p50"])
            point = LatencyPoint.computed(batch, p50)
            point.runs = int(row.get("iterations", 1))
            for ours, theirs in (("p90_s", "p90"), ("p99_s", "p99"), ("mean_s", "mean"), ("min_s", "min"),
                                 ("max_s", "max")):
                if stats.get(theirs) is not None:
                    setattr(point, ours, float(stats[theirs]))
            point.std_s = None  # the agent reports percentiles, not the spread
            point.throughput_per_s = batch / point.mean_s if point.mean_s > 0 else 0.0
            series[label].append(point)
    details = {"agent": info if isinstance(info, dict) else str(info),
               "sources": {k: raw.get(k) for k in ("device", "hardware_source", "end_to_end_source", "note")},
               "clock_mhz": raw.get("clock_mhz"),
               "fits": {k: raw.get(k) for k in ("fit_hardware", "fit_end_to_end")}}
    out = [TargetResult(f"{name} {label}", kind, "fpga", f"{description}, {label}", None, points, details)
           for label, points in series.items() if points]
    if not out:
        raise DataError(f"{name}: the board agent's benchmark answer has no hardware-only or end-to-end times")
    return out


# -- discovery ------------------------------------------------------------------------------------


def stage_outputs(run_dir: Path, stage: str) -> dict[str, Path]:
    """{output name: path} of a completed stage, from the run's manifest.json ({} when not done)."""
    manifest = run_dir / "manifest.json"
    if not manifest.is_file():
        return {}
    record = read_json(manifest).get("stages", {}).get(stage, {})
    if record.get("status") != "done":
        return {}
    return {k: run_dir / v["path"] for k, v in record.get("outputs", {}).items()}


def load_inputs(golden: Path) -> np.ndarray:
    """The golden inputs (float32 NCHW) of the quant stage."""
    try:
        with np.load(golden, allow_pickle=False) as data:
            if "x" not in data:
                raise DataError(f"{golden}: no 'x' array (inputs); arrays: {', '.join(data.files)}")
            x = np.asarray(data["x"], dtype=np.float32)
    except (OSError, ValueError) as exc:
        raise npz_read_error(golden, exc) from None
    if len(x) == 0:
        raise DataError(f"{golden}: 'x' holds no samples")
    return x


def export_onnx(module, x: np.ndarray, path: Path) -> dict:
    """Export `module` to ONNX with a dynamic batch axis; check onnxruntime against torch on x.

    Uses torch's TorchScript-based exporter: it takes tens of milliseconds on these models where
    the dynamo exporter takes seconds, and the bench stage should stay short.
    """
    import onnxruntime as ort
    import torch

    sample = torch.from_numpy(x[:1])
    with atomic_path(path) as tmp, warnings.catch_warnings(), _quiet_loggers("torch.onnx"):
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (sample,), str(tmp), input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = batch_of(x, min(len(x), 64))
    (got,) = session.run(None, {"x": batch})
    with torch.inference_mode():
        expected = module(torch.from_numpy(batch)).numpy()
    diff = float(np.abs(got - expected).max())
    scale = float(np.abs(expected).max()) or 1.0
    return {"file": path.name, "samples": len(batch), "max_abs_difference_vs_torch": diff,
            "relative_difference": diff / scale, "argmax_agreement": float((got.argmax(1) == expected.argmax(1)).mean()),
            "measured": f"onnxruntime vs torch eager on {len(batch)} golden inputs"}


@contextmanager
def _quiet_loggers(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def hwgen_projects(run_dir: Path) -> list[dict]:
    """[{board, backend, path (absolute), fits}] of the run's hwgen stage ([] when it has not run),
    read the way the sim stage reads them (hwgen/index.json, else hwgen/report.json)."""
    from potatura.hwgen.index import hwgen_projects as read_projects

    hwgen = run_dir / "hwgen"
    if not ((hwgen / "index.json").is_file() or (hwgen / "report.json").is_file()):
        return []
    return read_projects(hwgen)


def deploy_benchmarks(run_dir: Path) -> list[tuple[Path, dict]]:
    """Board benchmark answers the deploy stage saved: JSON files under <run>/deploy/ holding the
    agent's "rows" and "device"."""
    deploy = run_dir / "deploy"
    found = []
    for path in sorted(deploy.rglob("*.json")) if deploy.is_dir() else []:
        try:
            data = read_json(path)
        except ValueError:
            continue
        candidates = [data] + ([data["benchmark"]] if isinstance(data, dict) and isinstance(data.get("benchmark"), dict)
                               else [])
        for c in candidates:
            if isinstance(c, dict) and isinstance(c.get("rows"), list) and "device" in c:
                found.append((path, c))
    return found


def deploy_bundles(run_dir: Path) -> list[Path]:
    """Bundle folders of the run's deploy stage (deploy/<board>/<backend>/ holding a manifest.json)."""
    deploy = run_dir / "deploy"
    if not deploy.is_dir():
        return []
    return sorted(p.parent for p in deploy.rglob("manifest.json"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def discover_targets(run_dir: Path, cfg: BenchConfig, out_dir: Path) -> tuple[list[Target], list[Skipped], dict]:
    """The targets `cfg.targets` asks for, built from the artifacts of `run_dir`.

    Writes the ONNX exports under out_dir/onnx/. Returns (targets, skipped with reasons,
    {onnx model name: export check}).
    """
    run_dir = Path(run_dir)
    targets: list[Target] = []
    skipped: list[Skipped] = []
    exports: dict[str, dict] = {}
    families = set(cfg.targets)
    quant = stage_outputs(run_dir, "quant")
    golden = quant.get("golden")
    if golden is None or not Path(golden).is_file():
        raise DataError(f"{run_dir}: the bench needs the quant stage's golden.npz (its inputs); run the quant stage")
    x = load_inputs(golden)

    float_models: dict[str, tuple[Any, str]] = {}
    if families & {"torch", "onnxruntime", "cuda"}:
        from potatura.models import load_model_file

        for stage, label, what in (("train", "float", "trained float model (pruned weights at zero, full size)"),
                                   ("simplify", "simplified", "simplified float model (pruned neurons removed)")):
            path = stage_outputs(run_dir, stage).get("model")
            if path is None:
                skipped.append(Skipped(f"* {label}", f"no {stage} stage output in {run_dir}"))
                continue
            module, _ = load_model_file(path)
            float_models[label] = (module.eval(), what)

    threads = cfg.threads
    if "torch" in families:
        for label, (module, what) in float_models.items():
            targets.append(TorchTarget(f"torch {label}", module, x, threads, f"CPU torch eager, {what}"))
        brevitas = quant.get("brevitas_model")
        if brevitas is not None:
            from potatura.quant.pipeline import load_brevitas_model

            module, _ = load_brevitas_model(brevitas)
            targets.append(TorchTarget("torch fake-quant", module.eval(), x, threads,
                                       "CPU torch eager, Brevitas fake-quantized model (quant stage)"))
        else:
            skipped.append(Skipped("torch fake-quant", "the quant stage wrote no Brevitas model"))

    if "onnxruntime" in families:
        cores = os.cpu_count() or 1
        for label, (module, what) in float_models.items():
            path = out_dir / "onnx" / f"{label}.onnx"
            try:
                exports[label] = export_onnx(module, x, path)
            except Exception as exc:  # an operator the exporter or onnxruntime lacks: say so, go on
                skipped.append(Skipped(f"onnxruntime {label}", f"ONNX export or check failed: {_first_line(exc)}"))
                continue
            targets.append(OnnxRuntimeTarget(f"onnxruntime {label} {threads}t", path, x, threads,
                                             f"onnxruntime CPU, {threads} thread(s), {what}"))
            if cores != threads:
                targets.append(OnnxRuntimeTarget(f"onnxruntime {label} {cores}t", path, x, cores,
                                                 f"onnxruntime CPU, every core ({cores} threads), {what}"))
            else:
                skipped.append(Skipped(f"onnxruntime {label} all cores",
                                       f"this machine has {cores} core(s): the same as the {threads}-thread target"))

    if "cuda" in families:
        import torch

        if not torch.cuda.is_available():
            why = ("torch is built without CUDA" if torch.version.cuda is None else "no CUDA device visible")
            skipped.append(Skipped("cuda", f"no GPU: {why} (torch {torch.__version__})"))
        else:
            for label, (module, what) in float_models.items():
                import copy

                targets.append(CudaTarget(f"cuda {label}", copy.deepcopy(module), x, threads,
                                          f"GPU torch eager ({torch.cuda.get_device_name(0)}), {what}"))

    projects = hwgen_projects(run_dir)
    if "simulated" in families:
        if not projects:
            skipped.append(Skipped("simulated", f"no hwgen projects in {run_dir / 'hwgen'}"))
        else:
            for p in projects:
                name = f"fpga {p['board']}/{p['backend']} simulated"
                if not p["fits"]:
                    skipped.append(Skipped(name, f"the {p['backend']} accelerator does not fit {p['board']}"))
                elif not (p["path"] / "design.json").is_file():
                    skipped.append(Skipped(name, f"{p['path']} has no design.json (hwgen predates the hardware IR)"))
                else:
                    try:
                        targets.append(SimulatedTarget(name, p["path"], p["board"], p["backend"]))
                    except Exception as exc:  # a design this simulator version cannot load
                        skipped.append(Skipped(name, f"the simulator could not load {p['path']}: {_first_line(exc)}"))

    bundles = deploy_bundles(run_dir)
    reported = []
    for path, answer in deploy_benchmarks(run_dir):
        # deploy/<board>/<backend>.result.json -> "<board>/<backend>"
        where = str(path.relative_to(run_dir / "deploy")).split(".")[0]
        try:  # the answer's hardware_source decides its family (the emulated board behind pynq: emulated)
            reported.append((board_kind(answer, name=where), where, path, answer))
        except DataError as exc:
            skipped.append(Skipped(f"fpga {where} board", str(exc)))
    for family in ("emulated", "measured"):
        if family not in families:
            continue
        mine = [(where, path, answer) for kind, where, path, answer in reported if kind == family]
        if mine:
            for where, path, answer in mine:
                targets.append(ReportedBoardTarget(f"fpga {where} {'emulated' if family == 'emulated' else 'board'}",
                                                   path, answer))
            continue
        url = cfg.board_url or os.environ.get("POTATURA_BOARD")
        requested_by = "bench.board_url" if cfg.board_url else "$POTATURA_BOARD"
        if family == "measured" and not url:
            skipped.append(Skipped("fpga board", "no board agent: set bench.board_url or $POTATURA_BOARD"))
        elif not bundles:
            skipped.append(Skipped(family, f"no deploy bundles in {run_dir / 'deploy'}"))
        else:
            for bundle in bundles:
                if family == "emulated":
                    where = str(bundle.relative_to(run_dir / "deploy"))
                    targets.append(BoardTarget(f"fpga {where} emulated", bundle, "emulated"))
                else:
                    url = url if "://" in url else f"http://{url}"
                    where = str(bundle.relative_to(run_dir / "deploy"))
                    targets.append(BoardTarget(f"fpga {where} board", bundle, "measured", url,
                                               os.environ.get(cfg.token_env), requested_by=requested_by))
    return targets, skipped, exports
