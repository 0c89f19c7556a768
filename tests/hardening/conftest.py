"""Shared pieces of the hardening tests: a tiny flow, the CLI in a subprocess, a malicious pickle."""

import os
import subprocess
import sys

import pytest

TINY_FLOW = """
name: tiny
seed: 3
runs_dir: {runs}
stages: [{stages}]
model:
  name: lenet300
  options: {{hidden: [16, 8]}}
data:
  limit_train: 300
train:
  method: none
  epochs: 1
  batch_size: 64
simplify:
  validation_samples: 32
"""


def write_flow(tmp_path, stages="train, simplify", name="flow.yaml", **extra) -> "os.PathLike":
    path = tmp_path / name
    text = TINY_FLOW.format(runs=tmp_path / "runs", stages=stages)
    for key, value in extra.items():
        text += f"{key}: {value}\n"
    path.write_text(text)
    return path


def cli(*args, cwd=None, env=None):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "potatura", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=300)


class _Evil:
    """Unpickling this runs `touch <marker>`: what a hostile model file would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_evil_pickle(path, marker, wrap_in_payload=True) -> None:
    """A torch-style file (a zip from torch.save) whose pickle calls os.system when loaded."""
    import torch

    obj = {"format": "potatura-model/2", "extra": {}, "module": _Evil(marker)} if wrap_in_payload else _Evil(marker)
    with open(path, "wb") as f:
        torch.save(obj, f)


@pytest.fixture
def evil(tmp_path):
    """(path of the malicious file, marker path that must never appear)."""
    marker = tmp_path / "pwned"
    path = tmp_path / "e.pt"
    write_evil_pickle(path, marker)
    # The file really is malicious: an unrestricted load creates the marker (checked in a child process).
    return path, marker
