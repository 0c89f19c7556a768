"""One accelerator project per (board, model): fit, hls4ml project, build files, csim check, reports.

Layout of out_dir (hwgen/<board>/hls4ml/ in a run):

    project/            the hls4ml VivadoAccelerator project (firmware/, build_prj.tcl, the AXI-stream
                        wrapper, the PYNQ driver) plus potatura's Makefile, build_overlay.tcl (Zynq)
                        and BUILD.md with the exact commands
    fit_report.md/json  per layer: strategy, RF, multipliers, DSP, BRAM18, LUT, FF, cycles; totals
                        against the board (estimated, or synthesized when a build ran)
    csim.json           C simulation vs QONNX reference: exact matches, max |difference| (simulated)
    design.json         the lowered IR graph and the backend's choices (potatura.hw.ir.save_design),
    design_weights.npz  with the integer weight and bias codes: what the simulator and the board read
    manifest.json       board, part, clock, io type, I/O encoding, types, files with sha256
    convert.log         hls4ml's and g++'s console output
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

from potatura.artifacts import file_sha256, write_json, write_text
from potatura.boards.catalog import Board
from potatura.errors import DataError, PotaturaError
from potatura.hw.ir import Design, Op, save_design
from potatura.hwgen.backend import BuildOutcome, ProjectResult
from potatura.hwgen.hls4ml import convert as backend
from potatura.hwgen.hls4ml.compat import HLS4ML_BACKEND
from potatura.hwgen.hls4ml.fitter import FitResult, fit_or_raise
from potatura.hwgen.hls4ml.lowering import QuantizedNetwork, hls_name
from potatura.hwgen.hls4ml.timing import design_for, sized_depths
from potatura.hwgen.reports import find_reports, parse_csynth_xml, parse_utilization

TEMPLATES = Path(__file__).parent.parent / "templates"


class TypeMismatchError(PotaturaError):
    """hls4ml chose a type different from the exact one potatura derived: the result would not be bit-exact."""


SMALL_MLP_WEIGHTS = 16384  # io_parallel unrolls everything: past this, compile and synthesis times explode


def resolve_io_type(net: QuantizedNetwork, io_type: str) -> str:
    """auto: io_stream for CNNs (line buffers, one pixel at a time) and large MLPs, io_parallel for small MLPs."""
    if io_type == "auto":
        small_mlp = not net.has_conv and sum(layer.n_weights for layer in net.compute_layers) <= SMALL_MLP_WEIGHTS
        return "io_parallel" if small_mlp else "io_stream"
    return io_type


def _render(name: str, values: dict) -> str:
    from potatura.hwgen.backend import render_template

    return render_template(name, values)


def _patch_part(project_dir: Path, board: Board) -> None:
    """hls4ml's VivadoAccelerator writer forces the part of its own template board: put the catalog's back."""
    for name in ("project.tcl", "hls4ml_config.yml"):
        path = project_dir / name
        if not path.is_file():
            continue
        lines = path.read_text().splitlines(keepends=True)
        out = []
        for line in lines:
            if name == "project.tcl" and line.startswith("set part "):
                line = f'set part "{board.part}"\n'
            elif name == "hls4ml_config.yml" and line.startswith("Part:"):
                line = f"Part: {board.part}\n"
            out.append(line)
        write_text(path, "".join(out))


def write_build_files(project_dir: Path, board: Board, net: QuantizedNetwork) -> list[str]:
    """Makefile (+ build_overlay.tcl on Zynq) and BUILD.md with the exact build commands."""
    overlay = backend.PROJECT_NAME
    in_bits = 32  # float words in (the wrapper rounds them to the input type)
    out_bits = 32 if backend.axi_output_type(net) == "float" else 64
    values = dict(BOARD=board.name, PART=board.part, PROJECT=backend.PROJECT_NAME, OVERLAY=overlay,
                  CLOCK_MHZ=f"{board.clock_mhz:g}", PLATFORM=board.platform or "")
    written = []
    if board.is_zynq:
        write_text(project_dir / "Makefile", _render("Makefile.zynq", values))
        write_text(project_dir / "build_overlay.tcl", _render("zynq_overlay.tcl", dict(
            values, FAMILY=board.family, BOARD_PART=board.board_part or "", PS_VLNV=board.ps_ip,
            IN_BITS=in_bits, OUT_BITS=out_bits)))
        written += ["Makefile", "build_overlay.tcl"]
        steps = ["make ip        # HLS synthesis + IP export (vivado_hls)",
                 "make overlay   # block design, bitstream: overlay/*.bit + overlay/*.hwh"]
        outputs = f"overlay/{overlay}.bit and overlay/{overlay}.hwh (copy both to the board, same folder)"
    else:
        write_text(project_dir / "Makefile", _render("Makefile.alveo", values))
        written.append("Makefile")
        steps = ["make ip        # HLS synthesis + IP export (vivado_hls)",
                 "make xo        # RTL kernel package (hls4ml's design.tcl)",
                 f"make xclbin    # v++ link for {board.platform}"]
        outputs = f"xclbin_files/{backend.PROJECT_NAME}_kernel.xclbin (load it with XRT's pyxrt)"
    build_md = "\n".join([
        f"# Building the {board.name} accelerator",
        "",
        f"Board {board.name} ({board.part}), PL clock {board.clock_mhz:g} MHz, shell {board.shell}.",
        "The resource figures in fit_report.md are potatura's estimates until these commands run",
        "(`potatura hwgen FLOW --build` runs them when the vendor tools are on PATH and reads the",
        "reports back).",
        "",
        "```",
        f"cd {project_dir.name}",
        *steps,
        "```",
        "",
        f"Result: {outputs}.",
        "",
        "Accelerator I/O (AXI stream, one packet per sample):",
        f"- input: {int(np.prod(net.input_shape))} float32 words, channels-last {list(net.input_shape)} "
        f"(the host transposes NCHW {list(net.input_shape_nchw)}); the IP rounds them to {net.input_type.ap()}",
        f"- output: {int(np.prod(net.output_shape))} {backend.axi_output_type(net)} words, exact values of "
        f"{net.output_type.ap()}",
        "",
        "The C simulation needs no vendor tool: `./build_lib.sh` (g++).",
        "",
        f"Tools: {SUPPORTED_HLS} for `make ip` (Vitis HLS 2020.2+ is refused: hls4ml 1.3's AXI-stream wrapper",
        "loses TLAST there), Vivado of the same release for the block design. Tested: " + TESTED_TOOLS + ".",
        "",
    ])
    write_text(project_dir / "BUILD.md", build_md)
    written.append("BUILD.md")
    return written


# The HLS tools hls4ml 1.3's VivadoAccelerator AXI-stream wrapper builds with: a struct of data and
# last on the stream, packed by DATA_PACK, which only Vivado HLS honours. Vitis HLS (2020.2 and later)
# packs the struct into the data bus with no TLAST: the DMA never completes.
SUPPORTED_HLS = "Vivado HLS 2019.2 or 2020.1 (vivado_hls)"
TESTED_TOOLS = ("no vendor tool run by potatura yet: the generated Tcl is dry-run under tclsh against the IP "
                "catalogs of Vivado 2019.2 and 2020.1 (tests/hwgen/test_tcl_dry_run.py); hls4ml 1.3 documents "
                "Vivado HLS 2019.2/2020.1 for its VivadoAccelerator backend")


class UnsupportedToolError(PotaturaError):
    """A vendor tool the generated project cannot be built with (named, with the supported ones)."""


def check_hls_tool(hls: str | None) -> None:
    """Refuse Vitis HLS by name: hls4ml 1.3's AXI-stream wrapper needs Vivado HLS (see SUPPORTED_HLS)."""
    if hls and "vitis_hls" in Path(hls).name:
        raise UnsupportedToolError(
            f"hwgen --build: {hls} is Vitis HLS (2020.2 or later), which packs hls4ml 1.3's AXI-stream struct "
            f"(data + last) into the data bus with no TLAST, so the DMA never completes; build with {SUPPORTED_HLS}: "
            "put vivado_hls on PATH or set POTATURA_HLS to its path")


def vendor_tools(board: Board) -> dict[str, str | None]:
    """Paths of the tools a build needs (None when not on PATH). Vivado HLS only (check_hls_tool)."""
    hls = os.environ.get("POTATURA_HLS") or "vivado_hls"
    check_hls_tool(hls)
    tools = {"hls": shutil.which(hls), "vivado": shutil.which("vivado"), "make": shutil.which("make")}
    if not board.is_zynq:
        tools["v++"] = shutil.which("v++")
    return tools


def fix_driver(project_dir: Path, net: QuantizedNetwork, board: Board) -> None:
    """hls4ml's PYNQ driver (Zynq boards) allocates input and output buffers with one dtype: give each
    direction its own (float32 words in; float32 or float64 words out, as the AXI wrapper writes them)."""
    path = project_dir / "axi_stream_driver.py"
    if not board.is_zynq or not path.is_file():
        return
    out_dtype = "np.float32" if backend.axi_output_type(net) == "float" else "np.float64"
    text = path.read_text()
    edits = (("x_shape, y_shape, dtype=np.float32,", f"x_shape, y_shape, dtype=np.float32, out_dtype={out_dtype},"),
             ("self.output_buffer = allocate(shape=y_shape, dtype=dtype)",
              "self.output_buffer = allocate(shape=y_shape, dtype=out_dtype)  # potatura: the output word's dtype"))
    for old, new in edits:
        if text.count(old) != 1:
            raise DataError(f"{path}: hls4ml's driver changed ({old!r} not found once): cannot set the output dtype")
        text = text.replace(old, new)
    write_text(path, text)


def remove_stale_files(project_dir: Path, board: Board) -> list[str]:
    """hls4ml's own block design (design.tcl, written for its template board's part, e.g. the ZCU102's
    for every Zynq UltraScale+ board) is not used on Zynq boards: build_overlay.tcl replaces it."""
    removed = []
    if board.is_zynq and (project_dir / "design.tcl").is_file():
        (project_dir / "design.tcl").unlink()
        removed.append("design.tcl")
    return removed


def run_build(project_dir: Path, board: Board, log_path: Path, timeout_s: float | None = None) -> BuildOutcome:
    """Run the Makefile when the vendor tools are on PATH; otherwise say how to build."""
    try:
        tools = vendor_tools(board)
    except UnsupportedToolError as exc:
        return BuildOutcome(False, str(exc))
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        return BuildOutcome(False, f"not built: {', '.join(missing)} not on PATH; build with `make` in {project_dir} "
                                   f"(see BUILD.md); resources stay potatura's estimates")
    env = dict(os.environ, HLS=tools["hls"])
    with open(log_path, "a") as log:
        proc = subprocess.run(["make", "HLS=" + tools["hls"]], cwd=project_dir, stdout=log, stderr=subprocess.STDOUT,
                              env=env, timeout=timeout_s)
    reports = {}
    for kind, path in find_reports(project_dir, backend.PROJECT_NAME).items():
        reports[kind] = parse_csynth_xml(path) if kind == "csynth" else parse_utilization(path)
    if proc.returncode != 0:
        return BuildOutcome(True, f"build failed (make exit {proc.returncode}); log: {log_path}", reports)
    return BuildOutcome(True, "built", reports)


def apply_reports(fit: FitResult, reports: dict) -> None:
    """Put report figures beside the estimates: implementation beats C synthesis."""
    if "utilization" in reports:
        fit.source = "implemented (Vivado utilization report); per-layer rows are estimates"
    elif "csynth" in reports:
        fit.source = "synthesized (HLS C-synthesis report); per-layer rows are estimates"
    fit.measured = reports


def generate_project(net: QuantizedNetwork, board: Board, out_dir: Path, *, io_type: str = "auto",
                     max_utilization: float = 0.8, reuse_factor=None, strategy: str = "auto",
                     x_nchw: np.ndarray | None = None, reference: np.ndarray | None = None,
                     build: bool = False, keep_model: bool = False, fifo_depths: str = "sized",
                     on_step: Callable[[str], None] | None = None) -> ProjectResult:
    """Fit, convert, write, (compile + csim when inputs are given), (build); write the reports.

    Raises FitError when the model fits the board at no reuse factor, TypeMismatchError when hls4ml
    would not use potatura's exact types. With keep_model, result.hls_model is the hls4ml model.
    fifo_depths: "sized" (io_stream: the simulator's smallest depths keeping the latency and interval
    of unbounded FIFOs, written into the stream pragmas and design.json) or "hls4ml" (its defaults).

    The project is written into a sibling folder (.<name>.partial) and replaces out_dir only once it
    is complete and checked: a failure leaves an earlier project in out_dir as it was.
    """
    step = on_step or (lambda s: None)
    final_dir = Path(out_dir)
    out_dir = final_dir.with_name(f".{final_dir.name}.partial")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    project_dir = out_dir / "project"
    log_path = out_dir / "convert.log"
    io = resolve_io_type(net, io_type)
    seconds: dict[str, float] = {}

    step("fit")
    fit = fit_or_raise(net, board, io, max_utilization, reuse_factor, strategy)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "fit_report.md", fit.table() + "\n")

    step("convert")
    t0 = time.perf_counter()
    hls_model = backend.convert(net, board, fit, project_dir, log_path)
    problems = backend.check_types(net, hls_model)
    if problems:
        raise TypeMismatchError(f"hwgen: hls4ml would not compute {net.source} bit-exactly on {board.name}:\n"
                                + "\n".join(problems))
    design = design_of(net, board, fit)
    if design.fifo_depths and fifo_depths == "sized":
        applied = apply_fifo_depths(hls_model, net, sized_depths(design))
        design.fifo_depths.update(applied)
        design.backend_info["fifo_depths"] = (
            f"sized by potatura.sim ({len(applied)} streams: the smallest depths keeping the latency and interval of "
            "unbounded FIFOs); hls4ml 1.3 defaults (the producing layer's pixels) for the others")
    csim = None
    if x_nchw is not None:
        if reference is None:
            raise ValueError("reference outputs are needed with x_nchw")
        step("compile")
        seconds["convert_write"] = time.perf_counter() - t0
        seconds["compile"] = backend.compile_csim(hls_model, log_path)
        step("csim")
        csim, _ = backend.run_csim(hls_model, net, x_nchw, reference)
        seconds["csim"] = csim.seconds
    else:
        with backend.quiet_stdout(log_path):
            hls_model.write()
        seconds["convert_write"] = time.perf_counter() - t0
    _patch_part(project_dir, board)
    fix_driver(project_dir, net, board)
    remove_stale_files(project_dir, board)
    tarball = project_dir.with_name(project_dir.name + ".tar.gz")
    if tarball.exists():
        tarball.unlink()  # hls4ml's copy of the project; the folder is the artifact
    build_files = write_build_files(project_dir, board, net)
    _patch_output_dir(project_dir, final_dir / "project")
    _replace_dir(out_dir, final_dir)
    out_dir, project_dir, log_path = final_dir, final_dir / "project", final_dir / "convert.log"

    outcome = BuildOutcome(False, "not requested (figures are estimates; `potatura hwgen FLOW --build` builds "
                                  "when Vivado/Vitis is on PATH)")
    if build:
        step("build")
        t0 = time.perf_counter()
        outcome = run_build(project_dir, board, log_path)
        seconds["build"] = time.perf_counter() - t0
        if outcome.reports:
            apply_reports(fit, outcome.reports)

    write_text(out_dir / "fit_report.md", fit.table() + _measured_lines(fit) + "\n")
    write_json(out_dir / "fit_report.json", fit.to_dict())
    if csim is not None:
        write_json(out_dir / "csim.json", csim.to_dict())
    design.backend_info["fit_figures"] = fit.source
    save_design(design, out_dir)
    write_json(out_dir / "manifest.json", _manifest(net, board, fit, project_dir, build_files, csim, outcome))
    return ProjectResult(board.name, "hls4ml", out_dir, fit, csim, outcome,
                         {k: round(v, 3) for k, v in seconds.items()}, hls_model if keep_model else None)


def _patch_output_dir(project_dir: Path, final: Path) -> None:
    """hls4ml_config.yml names the folder the project was written to: name the one it ends up in."""
    path = project_dir / "hls4ml_config.yml"
    if path.is_file():
        lines = [f"OutputDir: {final}\n" if line.startswith("OutputDir:") else line
                 for line in path.read_text().splitlines(keepends=True)]
        write_text(path, "".join(lines))


def _replace_dir(new: Path, final: Path) -> None:
    """Put the complete project `new` at `final`; the earlier one is removed only after the rename."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    new.rename(final)
    if old.exists():
        shutil.rmtree(old)


def design_of(net: QuantizedNetwork, board: Board, fit: FitResult) -> Design:
    """The Design of a project: the lowered graph, the fitter's choices, hls4ml's default FIFO depths.

    fifo_depths: io_stream only, keyed by the IR name of the layer writing the stream ("<layer>_pad"
    for the zero padding hls4ml puts before a padded conv/pool); hls4ml 1.3 sizes each FIFO to the
    producing layer's pixels (H*W words of C values; 1 for a vector). generate_project replaces them
    with the simulator's sized depths (hwgen.backends.hls4ml.fifo_depths: sized).
    """
    fifos = {}
    if fit.io_type == "io_stream":
        for layer in net.layers:
            shape = layer.out_shape
            fifos[layer.name] = int(np.prod(shape[:-1])) if len(shape) == 3 else 1
            if layer.op in (Op.CONV2D, Op.MAXPOOL2D, Op.AVGPOOL2D) and any(layer.pads):
                top, left, bottom, right = layer.pads
                fifos[f"{layer.name}_pad"] = (layer.in_shape[0] + top + bottom) * (layer.in_shape[1] + left + right)
    return design_for(net.graph, board, fit.io_type, fit.layer_choices(), fifos, {
        "hls4ml_backend": HLS4ML_BACKEND, "interface": backend.INTERFACE, "project_name": backend.PROJECT_NAME,
        "axi_input_word": "float", "axi_output_word": backend.axi_output_type(net), "part": board.part,
        "fit_figures": fit.source, "cycles": fit.cycles_source,
        "fifo_depths": "hls4ml 1.3 default: the producing layer's pixels" if fifos else None})


def fifo_depth_targets(net: QuantizedNetwork) -> dict[str, str]:
    """IR stream name (Design.fifo_depths key) -> the hls4ml layer whose output variable is that stream."""
    targets = {}
    for layer in net.layers:
        if layer.op in (Op.INPUT, Op.FLATTEN):
            continue  # the input: hls4ml's model input variable; flatten: an alias, no stream
        targets[layer.name] = hls_name(layer)
        if layer.op in (Op.CONV2D, Op.MAXPOOL2D, Op.AVGPOOL2D) and any(layer.pads):
            targets[f"{layer.name}_pad"] = "zp2d_" + hls_name(layer)  # hls4ml's conv_same_pad pass names it so
    return targets


def apply_fifo_depths(hls_model, net: QuantizedNetwork, depths: dict[str, int]) -> dict[str, int]:
    """Set the `#pragma HLS STREAM depth` of each stream the simulator sized (io_stream models).

    hls4ml 1.3 writes a stream's depth from its output variable's pragma ("stream", depth), the input's
    into the AXI wrapper's in_local stream; this is where its FifoDepthOptimization flow writes too.
    Returns the depths applied, keyed like Design.fifo_depths. Streams of hls4ml layers the IR does not
    have (a bias "normalize" layer, the wrapper's out_local) keep hls4ml's default depth (their
    producer's pixels, never too shallow). A depth changes no value: the C simulation stays bit-exact.
    """
    applied: dict[str, int] = {}

    def set_depth(var, key: str) -> None:
        pragma = getattr(var, "pragma", None)
        if isinstance(pragma, tuple) and pragma and pragma[0] == "stream" and key in depths:
            var.pragma = ("stream", int(depths[key]))
            applied[key] = int(depths[key])

    by_name = {layer.name: layer for layer in hls_model.get_layers()}
    for key, hls_layer in fifo_depth_targets(net).items():
        if hls_layer in by_name:
            set_depth(by_name[hls_layer].get_output_variable(), key)
    inputs = hls_model.get_input_variables()
    if len(inputs) == 1:
        set_depth(inputs[0], net.graph.input.layer)
    return applied


def _measured_lines(fit: FitResult) -> str:
    if not fit.measured:
        return ""
    lines = ["", "Vendor reports:"]
    for kind, rep in fit.measured.items():
        figures = ", ".join(f"{k} {rep[k]}" for k in ("lut", "ff", "dsp", "bram18", "uram",
                                                       "latency_worst_cycles", "interval_max_cycles")
                            if rep.get(k) is not None)
        lines.append(f"- {rep.get('source', kind)}: {figures}")
    return "\n".join(lines)


def _manifest(net: QuantizedNetwork, board: Board, fit: FitResult, project_dir: Path, build_files: list[str],
              csim, outcome: BuildOutcome) -> dict:
    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    key_files = ["firmware/" + backend.PROJECT_NAME + ".cpp", "firmware/" + backend.PROJECT_NAME + "_axi.cpp",
                 "firmware/parameters.h", "build_prj.tcl", "project.tcl", "axi_stream_driver.py", *build_files]
    files = {f: file_sha256(project_dir / f) for f in key_files if (project_dir / f).is_file()}
    if not files:
        raise DataError(f"{project_dir}: the hls4ml project was not written")
    return {
        "format": "potatura-hwgen-project/1",
        "backend": "hls4ml", "hls4ml_backend": "VivadoAccelerator", "interface": backend.INTERFACE,
        "project_name": backend.PROJECT_NAME, "project_dir": "project",
        "board": board.name, "part": board.part, "family": board.family, "shell": board.shell,
        "clock_mhz": board.clock_mhz, "hls4ml_template_board": board.backend_option("hls4ml", "board"), "platform": board.platform,
        "io_type": fit.io_type,
        "input": {"shape_nchw": list(net.input_shape_nchw), "shape": list(net.input_shape),
                  "layout": "channels-last (host transposes NCHW)", "axi_word": "float",
                  "type": net.input_type.ap(), "quant_node": net.input_quant},
        "output": {"shape": list(net.output_shape), "axi_word": backend.axi_output_type(net),
                   "type": net.output_type.ap()},
        "layers": net.summary(),
        "reuse_factors": fit.reuse_factors(),
        "strategies": {hls_name(f.layer): f.estimate.strategy for f in fit.layers if f.layer.has_weights},
        "resources": {"figures": fit.source, "estimated_totals": fit.totals, "reports": fit.measured},
        "csim": csim.to_dict() if csim is not None else None,
        "build": outcome.to_dict(),
        "files": files,
        "tools": {"hls4ml": version("hls4ml"), "qonnx": version("qonnx"), "onnx": version("onnx")},
    }
