"""Run a hwgen project's compiled hls4ml C simulation (firmware/<project>-*.so) through ctypes, sample by sample.

The library is the one hwgen compiled (hls4ml's build_lib.sh: g++ with the ap_types headers); its
<project>_double(in, out) entry point is what hls4ml's predict() calls.
"""

import ctypes
from pathlib import Path

import numpy as np


def csim_library(project_dir: Path, project_name: str = "potatura_accel") -> Path:
    libs = sorted((Path(project_dir) / "project" / "firmware").glob(f"{project_name}-*.so"),
                  key=lambda p: p.stat().st_mtime)
    if not libs:
        raise FileNotFoundError(f"{project_dir}: no compiled C simulation (firmware/{project_name}-*.so)")
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
