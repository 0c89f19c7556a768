"""The reference the simulator is checked against: a hwgen project's hls4ml C simulation, through ctypes.

The library is the one hls4ml's build_lib.sh compiles (g++ with the ap_types headers) into
project/firmware/<project>-<stamp>.so; its <project>_double(in, out) entry point is what hls4ml's
predict() calls, one sample per call. Used by the tests and scripts/bench_sim.py.
"""

from __future__ import annotations

import ctypes
import subprocess
import time
from pathlib import Path

import numpy as np

from potatura.errors import DataError


def csim_library(project_dir: Path, project_name: str = "potatura_accel") -> Path:
    libs = sorted((Path(project_dir) / "project" / "firmware").glob(f"{project_name}-*.so"),
                  key=lambda p: p.stat().st_mtime)
    if not libs:
        raise DataError(f"{project_dir}: no compiled C simulation (project/firmware/{project_name}-*.so)")
    return libs[-1]


def csim_predict(project_dir: Path, x: np.ndarray, n_out: int, project_name: str = "potatura_accel") -> np.ndarray:
    """x: (N, ...) float values in the accelerator's layout -> (N, n_out) float64 outputs."""
    lib = ctypes.CDLL(str(csim_library(project_dir, project_name)))
    fn = getattr(lib, f"{project_name}_double")
    ptr = ctypes.POINTER(ctypes.c_double)
    fn.argtypes = [ptr, ptr]
    fn.restype = None
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(len(x), -1))
    y = np.zeros((len(x), n_out), dtype=np.float64)
    for i in range(len(x)):
        row = np.ascontiguousarray(x[i])
        out = np.zeros(n_out, dtype=np.float64)
        fn(row.ctypes.data_as(ptr), out.ctypes.data_as(ptr))
        y[i] = out
    return y


def compile_csim(project_dir: Path) -> float:
    """Rebuild the C simulation library with the project's build_lib.sh (g++); return the seconds it took."""
    project = Path(project_dir) / "project"
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", "build_lib.sh"], cwd=project, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DataError(f"{project}/build_lib.sh failed: {proc.stderr[-500:]}")
    return time.perf_counter() - t0
