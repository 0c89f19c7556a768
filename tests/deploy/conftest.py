"""Deploy fixtures: a small hwgen-style project (hand-built design.json, the real simulator behind it)
and its bundle, shared by the tests of this folder.

The design is an integer MLP (16 -> 8 -> relu -> 4) whose types are wide enough that nothing rounds or
saturates, so the expected outputs come from plain int64 numpy, independent of potatura's simulator.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from potatura.hw.ir import Design, Graph, IOSpec, Layer, Op, save_design
from potatura.hw.types import FixedType

U8 = FixedType(False, 8, 8)  # integers 0..255
W8 = FixedType(True, 8, 8)
ACC = FixedType(True, 24, 24)


def mlp_weights():
    rng = np.random.default_rng(7)
    return (rng.integers(-3, 4, size=(16, 8)), rng.integers(-20, 21, size=8),
            rng.integers(-3, 4, size=(8, 4)), rng.integers(-20, 21, size=4))


def mlp_reference(x_codes: np.ndarray) -> np.ndarray:
    """The MLP in plain int64 numpy: relu(x @ w1 + b1) @ w2 + b2."""
    w1, b1, w2, b2 = mlp_weights()
    h = np.maximum(x_codes.astype(np.int64) @ w1 + b1, 0)
    return h @ w2 + b2


def mlp_design(board: str = "pynq-z2", clock_mhz: float = 100.0) -> Design:
    w1, b1, w2, b2 = mlp_weights()
    layers = [
        Layer("in", Op.INPUT, (), (), (16,), result_type=U8),
        Layer("fc1", Op.DENSE, ("in",), ((16,),), (8,), U8, ACC, W8, ACC, ACC, w1, b1),
        Layer("relu1", Op.RELU, ("fc1",), ((8,),), (8,), ACC, ACC),
        Layer("fc2", Op.DENSE, ("relu1",), ((8,),), (4,), ACC, ACC, W8, ACC, ACC, w2, b2),
    ]
    graph = Graph("mlp", layers, IOSpec("in", (16,), "flat", U8), IOSpec("fc2", (4,), "flat", ACC))
    return Design(graph, "hls4ml", board, clock_mhz,
                  layer_choices={n: {"reuse_factor": 1, "strategy": "latency", "io_type": "io_parallel"}
                                 for n in ("fc1", "relu1", "fc2")})


def make_project(where: Path, board: str = "pynq-z2", samples: int = 24) -> Path:
    """A hwgen project directory as the deploy stage reads it: manifest.json, design.json, and golden.npz
    (x float inputs; y_codes from the independent int64 reference)."""
    where.mkdir(parents=True, exist_ok=True)
    save_design(mlp_design(board), where)
    (where / "manifest.json").write_text(json.dumps({
        "format": "potatura-hwgen-project/1", "backend": "hls4ml", "project_name": "potatura_accel",
        "board": board, "input": {"axi_word": "float"}, "output": {"axi_word": "float"}}))
    x = np.random.default_rng(3).integers(0, 256, size=(samples, 16))
    np.savez(where / "golden.npz", x=x.astype(np.float32), y_codes=mlp_reference(x))
    return where


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("hwgen") / "pynq-z2" / "hls4ml")


@pytest.fixture(scope="session")
def bundle(project, tmp_path_factory) -> Path:
    from potatura.deploy.writer import write_bundle

    out = tmp_path_factory.mktemp("deploy") / "pynq-z2" / "hls4ml"
    write_bundle(project, project / "golden.npz", out, samples=None)
    return out
