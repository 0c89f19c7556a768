"""NNC (MPEG-7 Part 17) size report: code a float model with NNCodec and measure the bitstream.

NNCodec (PyPI `nncodec`, the reference codec: NNC quantization + DeepCABAC) needs numpy<2, so it
lives in its own environment, not in potatura's: <repo>/.venv-nnc, or the board lane .venv-board
(override with $POTATURA_NNC_PYTHON). Create a dedicated one with:

    python3.11 -m venv .venv-nnc
    .venv-nnc/bin/pip install torch==2.13.0          # first: the CPU build
    .venv-nnc/bin/pip install -c <(echo torch==2.13.0) nncodec 'numpy<2' 'protobuf<6' 'torchvision==0.28.*'

(nncodec requires torchvision; unpinned, pip pulls the newest one and with it a newer CUDA torch.
PyPI's torchvision is a CUDA build that cannot load beside the CPU torch; nnc_worker.py copes,
since coding a parameter dict never uses torchvision.)

The parameters go to that interpreter as an .npz file; nnc_worker.py (numpy + nncodec only)
encodes them at NNCodec's defaults, decodes the bitstream and writes the decoded parameters
back; potatura then measures the decoded model's accuracy here.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from potatura.errors import PotaturaError

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("nnc_worker.py")


class NNCError(PotaturaError):
    """The NNC environment is missing or NNCodec failed."""


def nnc_python() -> Path:
    """The interpreter of the NNC environment: $POTATURA_NNC_PYTHON, else <repo>/.venv-nnc, else the
    board lane <repo>/.venv-board (scripts/env-board installs the nnc extra there too)."""
    env = os.environ.get("POTATURA_NNC_PYTHON")
    if env:
        return Path(env)
    candidates = [REPO / ".venv-nnc" / "bin" / "python", REPO / ".venv-board" / "bin" / "python"]
    return next((c for c in candidates if c.is_file()), candidates[0])


def available() -> bool:
    """True when the NNC environment exists and imports nncodec."""
    python = nnc_python()
    if not python.is_file():
        return False
    probe = subprocess.run([str(python), "-c", "import nncodec"], capture_output=True, timeout=120)
    return probe.returncode == 0


def compress(model: nn.Module, data, work_dir: Path, timeout_s: float = 1800) -> dict:
    """Code every parameter of `model` with NNCodec at its defaults (measured).

    Returns bitstream_bytes, float32_bytes (4 bytes x parameters), parameters, nonzero_parameters,
    decoded_accuracy (test split, the model with decoded parameters), max_abs_error (decoded vs
    original parameter), and the codec settings NNCodec reports.
    """
    python = nnc_python()
    if not python.is_file():
        raise NNCError(f"NNC environment not found at {python}; create it as described in potatura/quant/nnc.py "
                       "or set POTATURA_NNC_PYTHON")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    params = {name: p.detach().cpu().numpy().astype(np.float32) for name, p in model.state_dict().items()
              if p.dtype.is_floating_point}
    src, decoded_path, bitstream, report = (work_dir / "params.npz", work_dir / "decoded.npz", work_dir / "model.nnc",
                                            work_dir / "nnc.json")
    np.savez(src, **params)
    proc = subprocess.run([str(python), str(WORKER), str(src), str(bitstream), str(decoded_path), str(report)],
                          capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        tail = "\n".join(line[:300] for line in (proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise NNCError(f"NNCodec failed (exit {proc.returncode}) in {python}:\n{tail}")
    decoded = np.load(decoded_path)
    state = model.state_dict()
    new_state = {k: (torch.from_numpy(decoded[k]).reshape(v.shape).to(v.dtype) if k in params else v) for k, v in state.items()}
    restored = copy.deepcopy(model)
    restored.load_state_dict(new_state)
    restored.eval()
    from potatura.train.loop import evaluate

    info = json.loads(report.read_text())
    n = sum(v.size for v in params.values())
    return {
        "bitstream_bytes": bitstream.stat().st_size,
        "float32_bytes": 4 * n,
        "parameters": int(n),
        "nonzero_parameters": int(sum(int(np.count_nonzero(v)) for v in params.values())),
        "decoded_accuracy": evaluate(restored, data.x_test, data.y_test)["accuracy"],
        "max_abs_error": float(max(np.abs(decoded[k].reshape(v.shape) - v).max() for k, v in params.items())),
        "codec": info,
        "measured": "bitstream size and decoded test accuracy measured; NNCodec defaults",
    }


def compress_if_available(model: nn.Module, data, work_dir: Path) -> Optional[dict]:
    return compress(model, data, work_dir) if available() else None
