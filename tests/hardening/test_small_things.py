"""Issue 9 item 10: a failed `quant --model` leaves no folder, --quiet, the training bar's ETA."""

from potatura.models import build_model, save_model_file
from tests.hardening.conftest import cli, write_flow


def test_failed_quant_model_leaves_no_empty_folder(tmp_path):
    # a model for 28x28 inputs against the digits flow (8x8): quantization fails inside
    model = build_model("lenet300", (1, 28, 28), 10, hidden=[8, 4])
    save_model_file(tmp_path / "m.pt", model, spec={"name": "lenet300", "options": {"hidden": [8, 4]},
                                                    "input_shape": [1, 28, 28], "num_classes": 10})
    out = tmp_path / "qout"
    proc = cli("quant", write_flow(tmp_path), "--model", tmp_path / "m.pt", "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_quiet_prints_results_only(tmp_path):
    flow = write_flow(tmp_path, stages="train")
    loud = cli("run", flow)
    quiet = cli("--quiet", "run", flow, "--force")
    assert loud.returncode == quiet.returncode == 0, loud.stderr + quiet.stderr
    assert "stage train: started" in loud.stdout and "run tiny" in loud.stdout  # log lines, run table
    assert "stage train" not in quiet.stdout and "run tiny" not in quiet.stdout
    assert "train: lenet300 on digits: test accuracy" in quiet.stdout  # the result line stays
    assert "stage train: started" in (tmp_path / "runs" / "tiny" / "run.log").read_text()


def test_progress_bars_show_time_remaining():
    from rich.progress import TimeRemainingColumn

    from potatura.progress import Progress

    bars = Progress(enabled=True)
    assert any(isinstance(c, TimeRemainingColumn) for c in bars._rich.columns)
