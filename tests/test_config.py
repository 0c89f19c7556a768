"""Flow-file validation: every malformed file gets one clear line naming the field, exit code 2."""

import subprocess
import sys
import textwrap

import pytest

from potatura.config import FlowConfig, load_config
from potatura.errors import ConfigError

MALFORMED = [
    # (flow file text, substrings the error must contain)
    ("trian:\n  epochs: 3\n", ["trian", "unknown field", "train", "model", "data"]),
    ("train:\n  epochs: many\n", ["train.epochs", "valid integer", "many"]),
    ("train:\n  lr: -0.1\n", ["train.lr", "greater than 0"]),
    ("data:\n  dataset: cifar99\n", ["data.dataset", "cifar99", "'digits'", "'fashion-mnist'"]),
    ("model:\n  name: lenet7\n", ["model.name", "lenet7", "lenet5", "resnet20"]),
    ("data:\n  dataset: idx\n  data_dir: /no/such/folder\n", ["data.data_dir", "folder not found", "/no/such/folder"]),
    ("data:\n  dataset: npz\n", ["data", "needs data.path"]),
    ("data:\n  dataset: npz\n  path: /no/such.npz\n", ["data.path", "file not found"]),
    ("train:\n  epochs: 3\n  lr_shedule: cosine\n", ["train.lr_shedule", "unknown field", "lr_schedule"]),
    ("name: 'my run/with slash'\n", ["name", "letters, digits"]),
    ("train: [1, 2]\n", ["train", "valid dictionary"]),
    ("- just\n- a list\n", ["must be a mapping"]),
    ("train:\n  epochs: 3\n lr: 0.1\n", ["not valid YAML", "line"]),
    ("stages: [train, synthesize]\n", ["stages", "synthesize", "simplify"]),
]


@pytest.mark.parametrize("text,expected", MALFORMED, ids=[m[0].split(":")[0][:12] + str(i) for i, m in enumerate(MALFORMED)])
def test_malformed_flow_file_names_the_problem(tmp_path, text, expected):
    flow = tmp_path / "flow.yaml"
    flow.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(flow)
    message = str(info.value)
    assert message.startswith(str(flow)), message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert "Traceback" not in message


def test_missing_flow_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="flow file not found"):
        load_config(tmp_path / "absent.yaml")


def test_empty_file_gives_the_defaults(tmp_path):
    flow = tmp_path / "flow.yaml"
    flow.write_text("")
    cfg = load_config(flow)
    assert cfg == FlowConfig()
    assert cfg.data.dataset == "digits" and cfg.model.name == "lenet5"


def test_set_overrides_are_merged_and_validated(tmp_path):
    flow = tmp_path / "flow.yaml"
    flow.write_text("train:\n  epochs: 7\n  batch_size: 32\n")
    cfg = load_config(flow, {"train": {"epochs": 2}, "name": "x"})
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.name) == (2, 32, "x")
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(flow, {"train": {"epochs": -1}})


def test_cli_exits_2_with_one_line_and_no_traceback(tmp_path):
    flow = tmp_path / "flow.yaml"
    flow.write_text(textwrap.dedent("""
        data:
          dataset: cifar99
    """))
    proc = subprocess.run([sys.executable, "-m", "potatura", "run", str(flow)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "data.dataset" in lines[0] and "cifar99" in lines[0], proc.stderr
