"""The shipped real-case flow: LeNet-5 on Fashion-MNIST through every stage, two boards."""

from pathlib import Path

from potatura.config import load_config
from potatura.flow import STAGE_ORDER

FLOW = Path(__file__).resolve().parents[2] / "flows" / "fashion-lenet5.yaml"


def test_fashion_lenet5_flow_loads_with_every_stage_and_both_boards():
    cfg = load_config(FLOW)
    assert cfg.name == "fashion-lenet5" and cfg.data.dataset == "fashion-mnist" and cfg.model.name == "lenet5"
    assert cfg.stages is None  # every available stage, in STAGE_ORDER
    assert cfg.train.method == "serene" and cfg.train.preset == "auto"
    assert cfg.hwgen.boards == ["pynq-z2", "zcu104"]
    assert cfg.deploy.target == "emulated"
    assert (cfg.bench.iterations, cfg.bench.warmup, cfg.bench.batch_sizes, cfg.bench.threads) == (1000, 100, [1, 16, 256], 1)
    text = FLOW.read_text()
    for section in STAGE_ORDER:
        assert f"\n{section}:" in text, section
