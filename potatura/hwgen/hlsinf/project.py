"""One HLSinf-style project per board: fit, plan, sources and build files, C simulation, design.json.

Layout of out_dir (hwgen/<board>/hlsinf/ in a run):

    project/                 what a vendor build needs
      src/                   hlsinf_kernel.h (the engine), hlsinf_top.cpp (HLS top, AXI masters),
                             engine_params.h (CPI, CPO, HO_MAX, WO_MAX, word widths), hlsinf_csim.cpp
      hls.tcl                Vitis/Vivado HLS C synthesis + IP export
      plan.json              the kernel calls (run-time arguments) and tensors, read by the drivers
      engine_weights.npz     packed filters (GO, GI, CPO, CPI, 3, 3) and biases per layer (int64 codes)
      Zynq:  Makefile, build_overlay.tcl (PS + engine, AXI masters on the HP ports),
             driver/hlsinf_driver.py (PYNQ: loops over the calls)
      Alveo: Makefile (v++ -c / -l), connectivity.cfg (memory banks), host/host.cpp (XRT), calls.txt,
             tensors.txt, weights/*.bin
      BUILD.md               the exact commands
    csim/                    the engine library built with g++ for the C simulation
    fit_report.md/json       engine, estimated resources, calls with I_ITER/O_ITER/frames/cycles
    csim.json                C simulation vs the QONNX reference (simulated)
    design.json              the IR graph and the backend's choices (potatura.hw.ir.save_design)
    manifest.json            what the deploy bundle writer reads: board, protocol "memory-mapped-engine",
                             the engine IP (ap_ctrl_hs, AXI-Lite register map, m_axi ports), plan/weights files
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from potatura.artifacts import write_json, write_text
from potatura.boards.catalog import Board
from potatura.hw.ir import Design, Graph, save_design
from potatura.hwgen.backend import BuildOutcome, ProjectResult
from potatura.hwgen.hlsinf.csim import TEMPLATES, compile_engine, compile_flags, run_plan
from potatura.hwgen.hlsinf.fitter import HlsinfFit, fit_engine

BACKEND = "hlsinf"
PROJECT_NAME = "hlsinf"
# hlsinf_top's arguments in declaration order (templates/hlsinf/hlsinf_top.cpp): the m_axi pointers, then the
# run-time arguments in the order of planner.KernelCall.args(); bits of each AXI-Lite data register.
POINTER_ARGS = ("act_in", "filters", "bias", "act_add", "act_out")
CALL_ARGS = ("I", "O", "H", "W", "in_row0", "in_rows", "pt", "pb", "pl", "pr", "out_h", "out_w", "out_row0", "relu",
             "shift", "rounding", "clip_lo", "clip_hi", "pool", "add", "add_shift_main", "add_shift_skip", "relu2",
             "shift2", "rounding2", "clip2_lo", "clip2_hi")
WIDE_ARGS = ("clip_lo", "clip_hi", "clip2_lo", "clip2_hi")  # long long
WORD_DTYPES = {8: np.int8, 16: np.int16, 32: np.int32, 64: np.int64}


@dataclass
class CsimResult:
    samples: int
    exact_matches: int
    max_abs_difference: float
    argmax_agreement: float
    seconds: dict

    def to_dict(self) -> dict:
        return {"samples": self.samples, "exact_matches": self.exact_matches,
                "max_abs_difference": self.max_abs_difference, "argmax_agreement": self.argmax_agreement,
                "seconds": self.seconds,
                "kind": "simulated: potatura's HLSinf-style engine in C simulation (g++, ap_types) vs QONNX execution"}


def _render(name: str, values: dict) -> str:
    from potatura.hwgen.backend import render_template

    return render_template(f"hlsinf/{name}", values)


def input_codes(graph: Graph, x: np.ndarray) -> np.ndarray:
    """Float inputs as the model takes them ((N, C, H, W) or (N, n)) -> (N, *input shape) integer codes,
    through QONNX's own Quant function with the input type's parameters (the reference's semantics)."""
    from qonnx.custom_op.general.quant import quant

    t = graph.input.type
    x = np.asarray(x, dtype=np.float32)
    if graph.input.layout == "NHWC" and x.ndim == 4:
        x = x.transpose(0, 2, 3, 1)
    x = x.reshape(len(x), *graph.input.shape)
    scale = np.float32(2.0 ** -t.frac)
    rounding = {"RND_CONV": "ROUND", "TRN": "FLOOR"}[t.rounding]
    q = quant(x, scale, np.float32(0), np.float32(t.width), int(t.signed), int(t.saturation == "SAT_SYM"), rounding)
    return np.round(np.asarray(q, dtype=np.float64) / float(scale)).astype(np.int64)


def _project_values(board: Board, fit: HlsinfFit) -> dict:
    e = fit.engine
    return {"BOARD": board.name, "PART": board.part, "FAMILY": board.family, "CLOCK_MHZ": f"{board.clock_mhz:g}",
            "CLOCK_HZ": int(board.clock_mhz * 1e6), "CPI": e.cpi, "CPO": e.cpo, "HO_MAX": e.ho_max,
            "WO_MAX": e.wo_max, "DATA_BITS": e.data_bits, "WEIGHT_BITS": e.weight_bits, "ACC_BITS": e.acc_bits,
            "PIXEL_BITS": e.pixel_bits, "BOARD_PART": board.board_part or "", "PS_VLNV": board.ps_ip or "",
            "PLATFORM": board.platform or "", "CSIM_FLAGS": " ".join(compile_flags(e))}


def write_project(graph: Graph, board: Board, fit: HlsinfFit, out_dir: Path) -> Path:
    """The project sources and build files in out_dir/project; returns that directory."""
    project = Path(out_dir) / "project"
    values = _project_values(board, fit)
    plan = fit.plan
    for name in ("hlsinf_kernel.h", "hlsinf_csim.cpp"):
        write_text(project / "src" / name, (TEMPLATES / name).read_text())
    for name in ("hlsinf_top.cpp", "engine_params.h"):
        write_text(project / "src" / name, _render(name, values))
    write_text(project / "hls.tcl", _render("hls.tcl", values))
    # the argument values of every call, in hlsinf_top's order (the drivers write them as they are)
    write_json(project / "plan.json", {**plan.to_dict(), "call_args": {"names": list(CALL_ARGS),
                                                                       "values": [c.args() for c in plan.calls]}})
    arrays = {}
    for name, packed in plan.weights.items():
        arrays[f"{name}/filters"] = packed.filters
        arrays[f"{name}/bias"] = packed.bias
    tmp = project / ".engine_weights.tmp.npz"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    tmp.replace(project / "engine_weights.npz")
    if board.is_zynq:
        write_text(project / "Makefile", _render("Makefile.zynq", values))
        write_text(project / "build_overlay.tcl", _render("build_overlay.tcl", values))
        write_text(project / "driver" / "hlsinf_driver.py", _render("hlsinf_driver.py", {"CALL_ARGS": repr(CALL_ARGS)}))
    else:
        bank = "HBM" if "HBM" in board.memory_type.upper() else "DDR"
        ports = ("act_in", "filters", "bias", "act_add", "act_out")
        # A tensor is written by one call and read by the next: activations in and out share a bank.
        sp = "\n".join(f"sp=hlsinf_0.{p}:{bank}[{1 if p in ('filters', 'bias') else 0}]" for p in ports)
        write_text(project / "Makefile", _render("Makefile.alveo", values))
        write_text(project / "connectivity.cfg", _render("connectivity.cfg", {**values, "SP_LINES": sp}))
        write_text(project / "host" / "host.cpp", _render("host.cpp", values))
        names = list(plan.tensors)
        order = [plan.input] + [n for n in names if n != plan.input]
        filters = list(plan.weights)
        write_text(project / "tensors.txt", "".join(f"{n} {plan.tensors[n].words(fit.engine.cpi)}\n" for n in order))
        write_text(project / "calls.txt", "".join(
            " ".join(map(str, [order.index(c.input), order.index(c.output), filters.index(c.filters),
                               order.index(c.add_input) if c.add_input is not None else -1, *c.args()])) + "\n"
            for c in plan.calls))
        e = fit.engine
        for i, name in enumerate(filters):
            p = plan.weights[name]
            (project / "weights").mkdir(parents=True, exist_ok=True)
            (project / "weights" / f"{i}_filters.bin").write_bytes(p.filters.astype(WORD_DTYPES[e.weight_bits]).tobytes())
            (project / "weights" / f"{i}_bias.bin").write_bytes(p.bias.astype(WORD_DTYPES[e.acc_bits]).tobytes())
    write_text(project / "BUILD.md", _build_md(board, fit))
    write_json(Path(out_dir) / "manifest.json", _manifest(board, fit))
    return project


def register_map() -> dict[str, dict]:
    """The engine's AXI-Lite registers as HLS lays out an s_axilite bundle: ap_ctrl_hs at 0x00 (GIE 0x04,
    IER 0x08, ISR 0x0C), then each argument in declaration order from 0x10, a 32-bit one in 8 bytes (data,
    reserved), a 64-bit one (pointers with m_axi_addr64, long long) in 12 (low, high, reserved). After a
    build the overlay's .hwh is authoritative (pynq's register_map reads it)."""
    regs, offset = {}, 0x10
    for name in (*POINTER_ARGS, *CALL_ARGS):
        bits = 64 if name in POINTER_ARGS or name in WIDE_ARGS else 32
        regs[name] = {"offset": offset, "bits": bits, "signed": name not in POINTER_ARGS}
        offset += 8 if bits == 32 else 12
    return regs


def _manifest(board: Board, fit: HlsinfFit) -> dict:
    """manifest.json of the project: what the deploy bundle writer needs to drive the engine."""
    return {"format": "potatura-hwgen-project/1", "backend": BACKEND, "project_name": PROJECT_NAME,
            "board": board.name, "part": board.part, "clock_mhz": board.clock_mhz,
            "protocol": "memory-mapped-engine" if board.is_zynq else "xrt-kernel",
            "engine": {"ip": "hlsinf_0", "vlnv": "xilinx.com:hls:hlsinf_top:1.0", "control": "ap_ctrl_hs",
                       "registers": register_map(), "pointer_args": list(POINTER_ARGS), "call_args": list(CALL_ARGS),
                       "m_axi": {p: {"bundle": b, "port": fit.ports.get(b.replace("gmem_", ""))}
                                 for p, b in (("act_in", "gmem_in"), ("filters", "gmem_weights"),
                                              ("bias", "gmem_weights"), ("act_add", "gmem_add"),
                                              ("act_out", "gmem_out"))},
                       "config": fit.engine.to_dict()},
            "plan": "project/plan.json", "weights": "project/engine_weights.npz",
            "overlay": f"project/overlay/{PROJECT_NAME}.bit"}


def _build_md(board: Board, fit: HlsinfFit) -> str:
    e = fit.engine
    lines = [f"# Building the HLSinf-style engine for {board.name}", "",
             f"Engine: CPI x CPO = {e.cpi} x {e.cpo}, HO_MAX x WO_MAX = {e.ho_max} x {e.wo_max}, part {board.part}, "
             f"{board.clock_mhz:g} MHz. Resources in ../fit_report.md are potatura's estimates until a build "
             "replaces them with synthesis reports.", "",
             "C simulation (no vendor tool; g++ and the ap_types headers inside hls4ml):", "", "    make csim", ""]
    if board.is_zynq:
        lines += ["Hardware (Vitis HLS and Vivado on PATH):", "",
                  "    make ip        # vitis_hls -f hls.tcl: C synthesis + IP export",
                  "    make overlay   # vivado -mode batch -source build_overlay.tcl -> overlay/hlsinf.bit/.hwh", "",
                  f"On the board (PYNQ image {', '.join(board.pynq_images)}): copy this directory, then", "",
                  "    python3 driver/hlsinf_driver.py overlay/hlsinf.bit", "",
                  "The driver loops over the calls of plan.json (one fused layer or row frame each) and checks "
                  "golden_codes.npz when present.", ""]
    else:
        lines += ["Hardware (Vitis and XRT on PATH):", "",
                  "    make xo        # v++ -c: the engine kernel",
                  f"    make xclbin    # v++ -l for {board.platform}, memory banks from connectivity.cfg",
                  "    make host      # the XRT host", "    host/hlsinf_host hlsinf.xclbin input_ghwc.bin output_ghwc.bin",
                  ""]
    return "\n".join(lines)


def verify_plan(fit: HlsinfFit, graph: Graph, build_dir: Path, x: np.ndarray, reference: np.ndarray) -> CsimResult:
    """The engine's C simulation on float inputs x vs the QONNX reference values (exact comparison)."""
    t0 = time.perf_counter()
    lib, info = compile_engine(fit.engine, build_dir)
    t1 = time.perf_counter()
    codes = input_codes(graph, x)
    y = run_plan(lib, fit.plan, codes)
    t2 = time.perf_counter()
    values = y.reshape(len(y), -1).astype(np.float64) * graph.output.type.lsb
    ref = np.asarray(reference, dtype=np.float64).reshape(len(y), -1)
    if graph.output.layout == "NHWC" and np.asarray(reference).ndim == 4:
        ref = np.asarray(reference, dtype=np.float64).transpose(0, 2, 3, 1).reshape(len(y), -1)
    diff = np.abs(values - ref)
    exact = int(np.all(diff == 0, axis=1).sum())
    agree = float(np.mean(values.argmax(axis=1) == ref.argmax(axis=1))) if len(y) else 1.0
    return CsimResult(len(y), exact, float(diff.max()) if diff.size else 0.0, agree,
                      {"compile": round(t1 - t0, 2), "run": round(t2 - t1, 3), "compiled": info["compiled"]})


def _build(project: Path, board: Board) -> BuildOutcome:
    tool = "vitis_hls" if shutil.which("vitis_hls") else ("vivado_hls" if shutil.which("vivado_hls") else None)
    if tool is None or (board.is_zynq and not shutil.which("vivado")) or (not board.is_zynq and not shutil.which("v++")):
        return BuildOutcome(False, "vendor tools (vitis_hls/vivado or v++) not on PATH: build skipped; see "
                                   "project/BUILD.md")
    target = "overlay" if board.is_zynq else "xclbin"
    proc = subprocess.run(["make", target, f"HLS={tool}"], cwd=project, capture_output=True, text=True)
    (project / "build.log").write_text(proc.stdout + proc.stderr)
    return BuildOutcome(proc.returncode == 0, f"make {target} exited {proc.returncode} (project/build.log)")


def generate_project(graph: Graph, board: Board, out_dir: Path, cfg=None, *, x: np.ndarray | None = None,
                     reference: np.ndarray | None = None, build: bool = False, max_utilization: float = 0.8,
                     on_step: Callable[[str], None] | None = None) -> ProjectResult:
    step = on_step or (lambda s: None)
    out_dir = Path(out_dir)
    seconds: dict = {}
    t0 = time.perf_counter()
    fit = fit_engine(graph, board, cfg, max_utilization)
    seconds["fit"] = round(time.perf_counter() - t0, 3)
    step("fit")
    write_text(out_dir / "fit_report.md", fit.table() + "\n")
    write_json(out_dir / "fit_report.json", fit.to_dict())
    project = write_project(graph, board, fit, out_dir)
    design = Design(graph, BACKEND, board.name, board.clock_mhz, fit.layer_choices(), {},
                    {"engine": fit.engine.to_dict(), "plan": fit.plan.to_dict(), "ports": fit.ports,
                     "resources_estimated": fit.totals, "figures": fit.source})
    save_design(design, out_dir)
    step("convert")
    csim = None
    if x is not None and reference is not None:
        csim = verify_plan(fit, graph, out_dir / "csim", x, reference)
        write_json(out_dir / "csim.json", csim.to_dict())
        seconds["csim"] = csim.seconds
    step("compile")
    step("csim")
    outcome = _build(project, board) if build else BuildOutcome(False, "not requested (hwgen.build: false)")
    step("build")
    return ProjectResult(board.name, BACKEND, out_dir, fit, csim, outcome, seconds)
