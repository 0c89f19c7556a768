"""The `hwgen` stage: quantized QONNX model -> one accelerator project per (board, backend), csim-checked.

Reads the quant stage's "qonnx" (the cleaned QONNX model), "golden" (golden.npz: x float32 NCHW
inputs; y reference outputs; x_codes/x_exponent and y_codes/y_exponent when the quant stage wrote
them) and, when present, "quant_json" (cross-checked, never required). The model is read once
into the hardware IR (potatura.hwgen.reader); each backend of hwgen.backends (potatura.hwgen.backend)
checks it against its operator table and generates hwgen/<board>/<backend>/ (with design.json).
Writes report.json, report.md and index.json: [{board, backend, path (relative to the run
directory), fits, csim}], what later stages read instead of parsing directory names.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from potatura import formats
from potatura.artifacts import npz_read_error, write_json, write_text
from potatura.boards.catalog import get_board
from potatura.errors import DataError, PotaturaError, UnsupportedError
from potatura.flow import Input, Output, Progress, Stage, StageContext
from potatura.hw.ir import Graph
from potatura.hw.types import FixedType
from potatura.hwgen.backend import DoesNotFitError, get_backend
from potatura.hwgen.config import HwgenConfig
from potatura.hwgen.reader import read_qonnx


def load_golden(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(x float32 NCHW inputs, y reference outputs or None) from golden.npz.

    y comes from y_codes * 2**y_exponent (exact, float64) when the file has them, else from y.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data:
                raise DataError(f"{path}: golden file has no 'x' array (inputs); arrays: {', '.join(data.files)}")
            x = np.asarray(data["x"], dtype=np.float32)
            if "y_codes" in data and "y_exponent" in data:
                y = np.asarray(data["y_codes"], dtype=np.int64).astype(np.float64) * 2.0 ** int(data["y_exponent"])
            else:
                y = np.asarray(data["y"]) if "y" in data else None
    except (OSError, ValueError) as exc:
        raise npz_read_error(path, exc) from None
    return x, y


def qonnx_reference(qonnx_path: str | Path, x_nchw: np.ndarray) -> np.ndarray:
    """The QONNX integer reference (qonnx's executor, via the quant stage) on inputs (N, C, H, W), float64."""
    from potatura.quant.reference import execute_qonnx

    return np.asarray(execute_qonnx(qonnx_path, np.asarray(x_nchw, dtype=np.float32)), dtype=np.float64)


def cross_check_quant_json(net: Graph, path: Path | None, backends: tuple[str, ...] = ("hls4ml",)) -> dict:
    """Gate on the quant stage's hardware flag, then check its fixed-point types against the model's.

    Types are derived from the QONNX Quant nodes (the model is the truth); quant.json must agree:
    a tensor type there that the model does not have means the two files do not belong together.
    """
    if path is None:
        return {"checked": False, "reason": "no quant.json"}
    from potatura.quant.hardware import require_hardware_ready

    for name in backends:
        info = require_hardware_ready(path, backend=f"the {name} backend")
    derived = {(t.width, t.integer, t.signed) for layer in net.layers
               for t in (layer.weight_type, layer.bias_type, layer.result_type) if t}
    unmatched = []
    checked = 0
    for tensor, entry in (info.get("tensors") or {}).items():
        fixed = entry.get("fixed_point") or {}
        if not isinstance(fixed.get("integer"), int):
            continue
        checked += 1
        if (fixed["width"], fixed["integer"], fixed["signed"]) not in derived:
            unmatched.append(f"{tensor} ({entry.get('role')}): {fixed.get('type')}")
    if unmatched:
        raise DataError(f"hwgen: {path} does not describe {net.attrs.get('source', net.name)}: no Quant node of the model has the type of "
                        + "; ".join(unmatched[:5]))
    return {"checked": True, "hardware_ready": True, "tensors_checked": checked, "consistent": True}


def golden_consistency(y_golden: np.ndarray | None, reference: np.ndarray, output_type: FixedType) -> dict:
    """How the quant stage's golden outputs relate to the QONNX execution run here."""
    if y_golden is None:
        return {"checked": False, "reason": "golden.npz has no y"}
    ref = reference.reshape(len(reference), -1)
    y = np.asarray(y_golden).reshape(len(y_golden), -1)
    if y.shape != ref.shape:
        return {"checked": True, "consistent": False, "reason": f"y has shape {y.shape}, the model gives {ref.shape}"}
    if np.issubdtype(y.dtype, np.integer):
        # Integer codes of the output type (the last accumulator's grid).
        diff = np.abs(y.astype(np.float64) * output_type.lsb - ref)
        encoding = f"integer codes x {output_type.lsb:g}"
    else:
        diff = np.abs(y.astype(np.float64) - ref)
        encoding = "values"
    return {"checked": True, "encoding": encoding, "consistent": bool(diff.max() == 0) if diff.size else True,
            "max_abs_difference": float(diff.max()) if diff.size else 0.0}


def check_input_codes(path: Path, x: np.ndarray, input_type: FixedType, limit: int | None = None) -> str:
    """Whether golden.npz's x_codes/x_exponent encode x in the model's input type (DataError if not).

    Checks the exponent, the shape, the code range and that each code is within half an LSB of
    its value or saturated: a golden file of another model fails, without a second rounding rule.
    """
    with np.load(path, allow_pickle=False) as data:
        if "x_codes" not in data or "x_exponent" not in data:
            return "absent"
        codes, exponent = np.asarray(data["x_codes"])[:limit], int(data["x_exponent"])
    t = input_type
    ok = exponent == -t.frac and codes.shape == x.shape
    if ok and codes.size:
        error = np.abs(codes * t.lsb - x.astype(np.float64))
        saturated = (codes == t.min_code) | (codes == t.max_code)
        ok = (codes.min() >= t.min_code and codes.max() <= t.max_code
              and bool(np.all((error <= t.lsb / 2) | saturated)))
    if not ok:
        raise DataError(f"{path}: x_codes (exponent {exponent}) do not encode x in the model's input type "
                        f"{t.ap()}: the golden file does not belong to this model")
    return "consistent"


def run_hwgen(cfg: HwgenConfig, qonnx_path: Path, golden_path: Path | None, out_dir: Path,
              quant_json: Path | None = None, log: logging.Logger | None = None,
              progress: Progress | None = None) -> dict[str, Path]:
    """Generate every (board, backend) project; return {output name: path}."""
    log = log or logging.getLogger("potatura.hwgen")
    progress = progress or Progress(enabled=False)
    out_dir = Path(out_dir)
    source = read_qonnx(qonnx_path)
    graph = source.graph
    networks = _backend_networks(cfg, source)
    hls = networks.get("hls4ml")
    io_type = resolve_io_type(hls, cfg.backend("hls4ml").io_type) if hls is not None else None
    log.info("hwgen: %s: %d layers, input %s %s, output %s%s", source.source, len(graph.layers) - 1,
             graph.attrs["input_shape_nchw"], graph.input.type.ap(), graph.output.type.ap(),
             f", {io_type}" if io_type else "")
    json_check = cross_check_quant_json(graph, quant_json, tuple(cfg.backends))
    x = reference = None
    golden_check: dict = {"checked": False, "reason": "csim disabled"}
    if cfg.csim:
        if golden_path is None:
            raise DataError("hwgen: csim needs the golden inputs (quant's golden.npz); set hwgen.csim: false to skip")
        x, y_golden = load_golden(golden_path)
        if cfg.csim_samples is not None:
            x = x[:cfg.csim_samples]
            y_golden = y_golden[:cfg.csim_samples] if y_golden is not None else None
        if x.shape[1:] != tuple(graph.attrs["input_shape_nchw"]):
            raise DataError(f"{golden_path}: inputs have shape {list(x.shape[1:])}, the model takes "
                            f"{list(graph.attrs['input_shape_nchw'])}")
        reference = qonnx_reference(qonnx_path, x)
        golden_check = golden_consistency(y_golden, reference, graph.output.type)
        golden_check["x_codes"] = check_input_codes(golden_path, x, graph.input.type, cfg.csim_samples)
        if golden_check.get("checked") and not golden_check.get("consistent"):
            log.warning("hwgen: golden y differs from the QONNX execution here (%s); csim is compared with QONNX",
                        golden_check)

    float32_exact = all(layer.accum_type.float_exact(24) for layer in graph.compute_layers)
    reference_info = {"kind": REFERENCE_QONNX, "exact": float32_exact}
    if reference is not None and not float32_exact:
        # float32 cannot hold these accumulators: compare with the exact integer execution instead.
        qonnx_float32 = reference
        reference = exact_reference(graph, x)
        same = np.all(qonnx_float32.reshape(len(x), -1) == reference, axis=1)
        reference_info = {"kind": REFERENCE_EXACT, "exact": True,
                          "why": "an accumulator is wider than 24 bits: the float32 QONNX executor rounds its sums",
                          "qonnx_float32_equal_samples": int(same.sum()), "samples": int(len(x))}
        log.info("hwgen: accumulators over 24 bits: csim is compared with %s (the float32 QONNX reference equals it "
                 "on %d/%d samples)", REFERENCE_EXACT, int(same.sum()), len(x))

    projects = []
    failed = []
    index = []
    outputs: dict[str, Path] = {}
    steps = ["fit", "convert", "compile", "csim", "build"]
    total = len(cfg.boards) * len(cfg.backends) * len(steps)
    with progress.task("hwgen", total=total) as update:
        for board_name in cfg.boards:
            board = get_board(board_name)
            if cfg.clock_mhz is not None:
                board = dataclasses.replace(board, clock_mhz=float(cfg.clock_mhz))
            for backend_name, network in networks.items():
                where = out_dir / board.name / backend_name
                try:
                    result = get_backend(backend_name).generate(
                        network, board, where, cfg.backend(backend_name), x=x, reference=reference, build=cfg.build,
                        max_utilization=cfg.max_utilization,
                        on_step=lambda s, b=board.name: update(advance=1, description=f"hwgen {b}: {s}"))
                except PotaturaError as exc:
                    # One board (or backend) failing does not stop the others; report.json says which.
                    status = "does not fit" if isinstance(exc, DoesNotFitError) else "failed"
                    partial = where.with_name(f".{where.name}.partial")  # what it wrote, with its convert.log
                    failed.append({"board": board.name, "backend": backend_name, "status": status,
                                   "error": str(exc).splitlines()[0], "exception": exc,
                                   "partial": str(partial.relative_to(out_dir)) if partial.exists() else None})
                    log.error("hwgen %s/%s: %s: %s", board.name, backend_name, status, str(exc).splitlines()[0])
                    continue
                if not (where / "fit_report.md").is_file():  # every project has its fit report
                    write_text(where / "fit_report.md", result.fit.table() + "\n")
                summary = result.summary()
                summary["dir"] = str(where.relative_to(out_dir))
                projects.append(summary)
                index.append({"board": board.name, "backend": backend_name,
                              "path": str(Path(out_dir.name) / board.name / backend_name),
                              "fits": summary["fits"], "csim": summary["csim"]})
                outputs[f"{board.name}.{backend_name}"] = where
                csim = result.csim
                log.info("hwgen %s/%s: %s, interval %d cycles (%s), %s", board.name, backend_name,
                         ", ".join(f"RF {k}={v}" for k, v in summary["reuse_factors"].items()),
                         result.fit.interval_cycles, summary["cycles"].split(" ")[0],
                         f"csim {csim.exact_matches}/{csim.samples} bit-exact (simulated)" if csim else "no csim")
    report = {"model": str(qonnx_path), "io_type": io_type, "input_type": graph.input.type.ap(),
              "float32_reference_exact": float32_exact, "reference": reference_info,
              "output_type": graph.output.type.ap(), "layers": hls.summary() if hls is not None else _ir_summary(graph),
              "quant_json": json_check, "golden": golden_check, "projects": projects,
              "failed": [{k: v for k, v in f.items() if k != "exception"} for f in failed]}
    outputs["report"] = write_json(out_dir / "report.json", report)
    outputs["index"] = write_json(out_dir / "index.json", index)
    outputs["summary"] = write_text(out_dir / "report.md", _markdown(report, out_dir))
    if failed and not projects:
        raise failed[0]["exception"]  # nothing was generated: the stage failed (report.json says why per board)
    return outputs


REFERENCE_QONNX = "QONNX execution (qonnx executor, float32)"
REFERENCE_EXACT = "potatura.sim integer execution of the model's hardware IR (exact)"


def exact_reference(graph: Graph, x_nchw: np.ndarray) -> np.ndarray:
    """The model's outputs (N, n) float64 on inputs (N, C, H, W) or (N, n), computed exactly in integers
    by the simulator's functional model (potatura.sim: one fixed-point implementation), for models whose
    accumulators float32 cannot hold (over 24 bits)."""
    from potatura.hw.ir import Design
    from potatura.sim.api import Accelerator

    acc = Accelerator(Design(graph=graph, backend="reference", board="-", clock_mhz=100.0, layer_choices={},
                             fifo_depths={}, backend_info={"io_type": "io_parallel"}))
    y = acc.decode(acc.run(acc.encode(x_nchw)))
    return np.asarray(y, dtype=np.float64).reshape(len(x_nchw), -1)


def resolve_io_type(net, io_type: str) -> str:
    from potatura.hwgen.hls4ml.project import resolve_io_type as resolve

    return resolve(net, io_type)


def _backend_networks(cfg: HwgenConfig, source) -> dict[str, object]:
    """What each backend generates from: checked against its operator table (UnsupportedError otherwise)."""
    networks = {}
    for name in cfg.backends:
        backend = get_backend(name)
        problems = backend.supports(source.graph)
        if problems:
            raise UnsupportedError(f"hwgen ({name} backend), {source.source}: " + "; ".join(problems))
        networks[name] = backend.network(source) if hasattr(backend, "network") else source
    return networks


def _ir_summary(graph: Graph) -> list[dict]:
    return [{"layer": layer.name, "kind": layer.op.value, "in": list(layer.in_shape), "out": list(layer.out_shape),
             "result": layer.result_type.hls()} for layer in graph.layers if layer.inputs]


def _markdown(report: dict, out_dir: Path) -> str:
    lines = ["# hwgen report", "", f"model {report['model']}: input {report['input_type']}, output "
             f"{report['output_type']}, {report['io_type']}", "",
             "| board | backend | fits | DSP | BRAM18 | LUT | interval (cycles) | latency (cycles) | csim exact | "
             "max abs diff |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for p in report["projects"]:
        t = p["totals_estimated"]
        c = p["csim"] or {}
        exact = f"{c['exact_matches']}/{c['samples']}" if c else "-"
        lines.append(f"| {p['board']} | {p['backend']} | {'yes' if p['fits'] else 'no'} | {t['dsp']:,} | "
                     f"{t['bram18']:,} | {t['lut']:,} | {p['interval_cycles']:,} | {p['latency_cycles']:,} | {exact} | "
                     f"{c.get('max_abs_difference', '-')} |")
    for f in report.get("failed", []):
        lines.append(f"| {f['board']} | {f['backend']} | {f['status']} | | | | | | | |")
    cycles = sorted({p["cycles"] for p in report["projects"]})
    ref = (report.get("reference") or {}).get("kind", REFERENCE_QONNX)
    lines += ["", "Resources: potatura's estimates unless a project's fit_report.md says synthesized; cycles: "
              + "; ".join(cycles) + f"; csim: simulated (hls4ml C simulation) vs the reference: {ref}.", ""]
    for f in report.get("failed", []):
        lines += [f"- {f['board']} / {f['backend']}: {f['status']}: {f['error']}"]
    if report.get("failed"):
        lines.append("")
    for p in report["projects"]:
        lines += [f"## {p['board']} / {p['backend']}", "", (out_dir / p["dir"] / "fit_report.md").read_text(), ""]
    return "\n".join(lines)


def run(ctx: StageContext) -> dict:
    cfg = ctx.config.hwgen
    quant_json = ctx.inputs.get("quant", {}).get("quant_json")
    golden = ctx.input("quant", "golden") if cfg.csim else ctx.inputs.get("quant", {}).get("golden")
    return run_hwgen(cfg, ctx.input("quant", "qonnx"), golden, ctx.out_dir, quant_json, ctx.log, ctx.progress)


def headline(stage_dir: Path) -> str | None:
    """One line per project for the end-of-run report, from report.json."""
    from potatura.artifacts import read_json

    path = stage_dir / "report.json"
    if not path.is_file():
        return None
    parts = []
    report = read_json(path)
    for p in report["projects"]:
        if not p.get("fits", True):
            parts.append(f"{p['board']}/{p['backend']}: does not fit")
            continue
        t, c = p["totals_estimated"], p.get("csim") or {}
        sim = (f", csim {c['exact_matches']}/{c['samples']} bit-exact (simulated)" if c.get("samples") else "")
        measured = p.get("measured") or {}
        if measured.get("lut") is not None:
            # After --build: the vendor's figures, labelled by where they come from.
            kind = measured["resources"].split(" ")[0]
            figures = (f"{measured['lut']:,} LUT, {measured.get('dsp', 0):,} DSP, {measured.get('bram18', 0):,} "
                       f"BRAM18 ({kind})")
            if measured.get("interval_cycles") is not None:
                figures += f", interval {measured['interval_cycles']:,} cycles (synthesized)"
            parts.append(f"{p['board']}/{p['backend']}: {figures}; simulated interval {p['interval_cycles']:,} "
                         f"cycles{sim}")
            continue
        parts.append(f"{p['board']}/{p['backend']}: {t['multipliers']:,} multipliers, {t['lut']:,} LUT, "
                     f"{t['bram18']} BRAM18 (estimated), interval {p['interval_cycles']:,} cycles "
                     f"({p['cycles'].split(' ')[0]}){sim}")
    for f in report.get("failed", []):
        parts.append(f"{f['board']}/{f['backend']}: {f['status']}")
    return "; ".join(parts)

def fingerprint(cfg) -> dict:
    """The catalog entries of the boards this stage fits against (edits to them must rerun it)."""
    from potatura.artifacts import file_sha256
    from potatura.boards.catalog import CATALOG_DIR

    return {b: file_sha256(CATALOG_DIR / f"{b}.yaml") for b in cfg.hwgen.boards if (CATALOG_DIR / f"{b}.yaml").is_file()}


STAGE = Stage(
    name="hwgen",
    run=run,
    config_sections=("hwgen",),
    needs=("quant",),
    description="hls4ml accelerator projects per board, fitted and checked bit-exact in C simulation",
    headline=headline,
    fingerprint=fingerprint,
    # Per project also "<board>.<backend>" (a folder); later stages find projects through the index.
    outputs=(Output("report", formats.JSON, "report.json"), Output("index", formats.PROJECT_INDEX, "index.json")),
    inputs=(Input("quant", "qonnx"), Input("quant", "golden", optional=True),
            Input("quant", "quant_json", optional=True)),
)
