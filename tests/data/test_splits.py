"""Deterministic splits, normalization statistics, numpy-array datasets."""

import numpy as np
import pytest
import torch

from potatura.config import DataConfig
from potatura.data import load_dataset
from potatura.errors import DataError


def test_digits_default_split_sizes_and_shapes():
    s = load_dataset(DataConfig(), seed=0)
    assert s.input_shape == (1, 8, 8) and s.num_classes == 10
    # 1797 digits: 20% test (359), then 10% of the rest for validation (144)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (1294, 144, 359)
    assert s.x_train.dtype == torch.float32 and s.y_train.dtype == torch.int64
    assert abs(float(s.x_train.mean())) < 1e-5 and abs(float(s.x_train.std()) - 1.0) < 1e-3
    assert s.stats()["sizes"] == {"train": 1294, "val": 144, "test": 359}


def test_same_seed_same_split_other_seed_other_split():
    a, b, c = (load_dataset(DataConfig(), seed=s) for s in (7, 7, 8))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_test, c.y_test)
    # splits are disjoint and cover the dataset (compare raw rows; digits holds a few duplicates)
    rows = lambda x: {tuple(r) for r in x.flatten(1).numpy().round(4).tolist()}
    train, val, test = rows(a.x_train), rows(a.x_val), rows(a.x_test)
    from sklearn.datasets import load_digits

    all_rows = rows(torch.from_numpy(((load_digits().images / 16.0 - a.mean) / a.std).astype("float32")))
    assert train | val | test == all_rows
    assert len(a.y_train) + len(a.y_val) + len(a.y_test) == 1797
    overlap = len(train & val) + len(train & test) + len(val & test)
    assert overlap <= 2 * (1797 - len(all_rows)), overlap  # only exact duplicate images may recur


def test_limit_train_is_deterministic():
    a = load_dataset(DataConfig(limit_train=300), seed=1)
    b = load_dataset(DataConfig(limit_train=300), seed=1)
    assert len(a.y_train) + len(a.y_val) == 300
    assert torch.equal(a.x_train, b.x_train)


def test_npz_dataset(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.random((50, 3, 4, 4)), y_train=rng.integers(0, 3, 50),
             x_test=rng.random((10, 3, 4, 4)), y_test=rng.integers(0, 3, 10))
    s = load_dataset(DataConfig(dataset="npz", path=path), seed=0)
    assert s.input_shape == (3, 4, 4) and len(s.y_test) == 10 and len(s.y_train) + len(s.y_val) == 50


def test_npz_missing_arrays(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((3, 2, 2)))
    with pytest.raises(DataError, match=r"missing arrays \['x_train', 'y_train'\]"):
        load_dataset(DataConfig(dataset="npz", path=path))


@pytest.mark.parametrize("arrays,message", [
    (dict(x_train=np.zeros((10, 4, 4)), y_train=np.zeros(9)), "x_train has 10 samples but y_train has 9 labels"),
    (dict(x_train=np.zeros((10, 4, 4)), y_train=np.arange(10) * 0.5), "non-integer labels"),
    (dict(x_train=np.zeros((10, 16)), y_train=np.zeros(10)), r"shape \(10, 16\); expected \[N, H, W\]"),
    (dict(x_train=np.zeros((10, 4, 4)), y_train=np.zeros(10), x_test=np.zeros((3, 4, 4))), "x_test without y_test"),
    (dict(x_train=np.array([None] * 10, dtype=object), y_train=np.zeros(10)), "array x_train cannot be read"),
])
def test_npz_contents_are_checked(tmp_path, arrays, message):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_dataset(DataConfig(dataset="npz", path=path))


def test_empty_split_is_an_error():
    with pytest.raises(DataError, match="the train split is empty"):
        load_dataset(DataConfig(limit_train=1))
