"""C simulation of the HLSinf-style engine: the kernel's C++ built with g++ and hls4ml's ap_types,
driven call by call from the host plan through ctypes (what the PYNQ driver does on the board).

    lib = compile_engine(engine, build_dir)       # one g++ run per engine configuration
    y = run_plan(lib, plan, x_codes)              # (N, *input shape) codes -> (N, *output shape)
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from potatura.errors import DataError, UnsupportedError
from potatura.hwgen.hlsinf.planner import EngineConfig, Plan, pack_activations, unpack_activations

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "hlsinf"
SOURCES = ("hlsinf_kernel.h", "hlsinf_csim.cpp")


class CsimBuildError(DataError):
    """g++ failed on the engine: the message names the log."""


def ap_types_dir() -> Path:
    """The ap_types headers that ship inside hls4ml (no vendor tool needed)."""
    import importlib.util

    spec = importlib.util.find_spec("hls4ml")
    if spec is None or spec.origin is None:
        raise UnsupportedError("hlsinf csim: hls4ml (for its ap_types headers) is not installed")
    path = Path(spec.origin).parent / "templates" / "vivado" / "ap_types"
    if not (path / "ap_int.h").is_file():
        raise UnsupportedError(f"hlsinf csim: {path}/ap_int.h not found in the hls4ml installation")
    return path


def compile_flags(engine: EngineConfig) -> list[str]:
    return [f"-DENGINE_CPI={engine.cpi}", f"-DENGINE_CPO={engine.cpo}", f"-DENGINE_HO_MAX={engine.ho_max}",
            f"-DENGINE_WO_MAX={engine.wo_max}", f"-DENGINE_DATA_BITS={engine.data_bits}",
            f"-DENGINE_WEIGHT_BITS={engine.weight_bits}", f"-DENGINE_ACC_BITS={engine.acc_bits}",
            f"-DENGINE_PIXEL_BITS={engine.pixel_bits}"]


def compile_engine(engine: EngineConfig, build_dir: Path) -> tuple[ctypes.CDLL, dict]:
    """Build (or reuse, keyed by the sources and flags) the engine library in build_dir; (library, info)."""
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    flags = compile_flags(engine)
    digest = hashlib.sha256("\n".join(flags).encode())
    for name in SOURCES:
        digest.update((TEMPLATES / name).read_bytes())
    lib_path = build_dir / f"libhlsinf_{digest.hexdigest()[:16]}.so"
    info = {"library": lib_path.name, "flags": flags, "compiled": False, "seconds": 0.0}
    if not lib_path.is_file():
        gxx = shutil.which("g++")
        if gxx is None:
            raise UnsupportedError("hlsinf csim: g++ not found on PATH")
        for name in SOURCES:
            shutil.copyfile(TEMPLATES / name, build_dir / name)
        tmp = lib_path.with_suffix(".tmp.so")
        cmd = [gxx, "-O2", "-std=c++14", "-shared", "-fPIC", "-w", f"-I{ap_types_dir()}", f"-I{build_dir}", *flags,
               str(build_dir / "hlsinf_csim.cpp"), "-o", str(tmp)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        (build_dir / "csim_build.log").write_text(" ".join(cmd) + "\n" + proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise CsimBuildError(f"hlsinf csim: g++ failed (exit {proc.returncode}); see {build_dir / 'csim_build.log'}")
        tmp.replace(lib_path)
        info.update(compiled=True, seconds=round(time.perf_counter() - t0, 2))
    lib = ctypes.CDLL(str(lib_path))
    p = ctypes.POINTER(ctypes.c_longlong)
    lib.hlsinf_call.argtypes = [p, ctypes.c_long, p, ctypes.c_long, p, ctypes.c_long, p, ctypes.c_long, p, ctypes.c_long,
                                p, ctypes.c_int]
    lib.hlsinf_call.restype = ctypes.c_int
    params = (ctypes.c_int * 8)()
    lib.hlsinf_params(params)
    built = list(params)
    expected = [engine.cpi, engine.cpo, engine.ho_max, engine.wo_max, engine.data_bits, engine.weight_bits,
                engine.acc_bits, engine.pixel_bits]
    if built != expected:
        raise CsimBuildError(f"hlsinf csim: {lib_path} was built for {built}, expected {expected}")
    return lib, info


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_longlong))


def run_plan(lib: ctypes.CDLL, plan: Plan, x_codes: np.ndarray) -> np.ndarray:
    """Every sample through every kernel call of `plan` (batch 1 per call, as the board driver does).

    x_codes: (N, *input shape) int64; returns (N, H, W, C) or (N, n) codes of the output tensor.
    """
    cpi = plan.engine.cpi
    x_codes = np.asarray(x_codes, dtype=np.int64)
    out_t = plan.tensors[plan.output]
    results = []
    packed = {name: (np.ascontiguousarray(p.filters.reshape(-1), dtype=np.int64),
                     np.ascontiguousarray(p.bias, dtype=np.int64)) for name, p in plan.weights.items()}
    no_add = np.zeros(1, dtype=np.int64)
    for sample in x_codes:
        ddr = {name: np.zeros(t.words(cpi), dtype=np.int64) for name, t in plan.tensors.items()}
        ddr[plan.input][:] = pack_activations(sample.reshape(_shape(plan.tensors[plan.input])), cpi)
        for call in plan.calls:
            filters, bias = packed[call.filters]
            src, dst = ddr[call.input], ddr[call.output]
            skip = ddr[call.add_input] if call.add_input is not None else no_add
            args = np.asarray(call.args(), dtype=np.int64)
            rc = lib.hlsinf_call(_ptr(src), src.size, _ptr(filters), filters.size, _ptr(bias), bias.size,
                                 _ptr(skip), skip.size, _ptr(dst), dst.size, _ptr(args), args.size)
            if rc != 0:
                raise UnsupportedError(f"hlsinf csim: call {call.layer} frame {call.frame} refused by the engine "
                                       f"(code {rc})")
        y = unpack_activations(ddr[plan.output], out_t, cpi)
        results.append(y)
    y = np.stack(results) if results else np.zeros((0, out_t.h, out_t.w, out_t.c), dtype=np.int64)
    return y


def _shape(t) -> tuple[int, int, int]:
    return (t.h, t.w, t.c)
