"""Issue 9 items 2 and 3: non-finite data and labels outside the classes are refused when read;
exactness checks fail on non-finite values."""

import numpy as np
import pytest
import torch

from potatura.config import DataConfig
from potatura.data import load_dataset, write_idx
from potatura.errors import DataError
from tests.hardening.conftest import cli, write_flow


def _npz(tmp_path, x_train=None, y_train=None, name="d.npz"):
    rng = np.random.default_rng(0)
    x = rng.random((60, 6, 6), dtype=np.float32) if x_train is None else x_train
    y = np.arange(60) % 3 if y_train is None else y_train
    np.savez(tmp_path / name, x_train=x, y_train=y)
    return tmp_path / name


def test_nan_in_npz_is_refused_naming_array_and_index(tmp_path):
    x = np.random.default_rng(0).random((60, 6, 6), dtype=np.float32)
    x[7, 2, 3] = np.nan
    path = _npz(tmp_path, x)
    with pytest.raises(DataError, match=r"d.npz: array x_train: non-finite value nan at index \[7, 2, 3\]"):
        load_dataset(DataConfig(dataset="npz", path=path))
    # the CLI: one line, exit 2, and no training with NaN statistics
    proc = cli("run", write_flow(tmp_path, stages="train"), "--set", "data.dataset=npz", "--set", f"data.path={path}")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "index [7, 2, 3]" in proc.stderr and "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "runs" / "tiny" / "train" / "data_stats.json").exists()


def test_inf_in_idx_images_is_refused(tmp_path):
    x = np.ones((20, 4, 4), dtype=np.float32)
    x[3, 0, 1] = np.inf
    for split, n in (("train", 20), ("t10k", 20)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", x[:n])
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", (np.arange(n) % 2).astype(np.uint8))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: non-finite value inf at index \[3, 0, 1\]"):
        load_dataset(DataConfig(dataset="idx", data_dir=tmp_path))


def _mnist_like(folder, train_labels):
    folder.mkdir(parents=True, exist_ok=True)
    n = len(train_labels)
    images = (np.arange(n * 64) % 256).astype(np.uint8).reshape(n, 8, 8)
    write_idx(folder / "train-images-idx3-ubyte", images)
    write_idx(folder / "train-labels-idx1-ubyte", np.asarray(train_labels, dtype=np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte", images[:20])
    write_idx(folder / "t10k-labels-idx1-ubyte", (np.arange(20) % 10).astype(np.uint8))
    return folder


def test_label_outside_the_classes_of_mnist_is_refused(tmp_path):
    labels = np.arange(100) % 10
    labels[42] = 200
    folder = _mnist_like(tmp_path / "m", labels)
    with pytest.raises(DataError, match=r"class label 200 is outside 0\.\.9 \(dataset 'mnist' has classes"):
        load_dataset(DataConfig(dataset="mnist", data_dir=folder))
    # generic idx: the label makes 201 classes, which is reported as a gap
    data = load_dataset(DataConfig(dataset="idx", data_dir=folder))
    assert data.num_classes == 201
    assert any("190 of 201 classes have no sample" in n for n in data.notes)
    # data.num_classes: the class count is taken from the config and the stray label refused
    with pytest.raises(DataError, match=r"class label 200 is outside 0\.\.9 \(data.num_classes says"):
        load_dataset(DataConfig(dataset="idx", data_dir=folder, num_classes=10))


def test_declared_class_count_covers_unseen_classes(tmp_path):
    path = _npz(tmp_path, y_train=np.arange(60) % 3)
    data = load_dataset(DataConfig(dataset="npz", path=path, num_classes=5))
    assert data.num_classes == 5
    assert any("2 of 5 classes have no sample (labels 3, 4)" in n for n in data.notes)
    assert not load_dataset(DataConfig(dataset="npz", path=path)).notes  # 0..2 all present


def test_nan_weights_are_refused_and_nan_logits_fail_the_check(tmp_path):
    from potatura.models import build_model, save_model_file
    from potatura.simplify.report import compare_logits

    model = build_model("lenet300", (1, 8, 8), 10, hidden=[6, 4])
    with torch.no_grad():
        model.fc1.weight[0, 0] = float("nan")
    save_model_file(tmp_path / "nan.pt", model)
    proc = cli("simplify", "--model", tmp_path / "nan.pt", "--out", tmp_path / "o.pt")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "non-finite" in proc.stderr and not (tmp_path / "o.pt").exists()
    # the exactness check itself: a NaN logit is never "max difference 0"
    check = compare_logits(model.eval(), model, torch.randn(4, 1, 8, 8))
    assert check["max_abs_logit_difference"] == float("inf")
    from potatura.simplify.stage import SimplifyCheckError, check_agreement

    with pytest.raises(SimplifyCheckError):
        check_agreement(None, check, 1e-4, "random inputs")
