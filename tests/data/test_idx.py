"""IDX reader on good files (raw and gzip) and on every kind of corrupt file."""

import gzip

import numpy as np
import pytest

from potatura.config import DataConfig
from potatura.data import load_dataset, read_idx, write_idx
from potatura.errors import DataError


def _images(n=5, h=4, w=3):
    return (np.arange(n * h * w) % 256).astype(np.uint8).reshape(n, h, w)


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_round_trip_raw_and_gzip(tmp_path, name):
    arr = _images()
    write_idx(tmp_path / name, arr)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.uint8 and back.shape == (5, 4, 3)
    np.testing.assert_array_equal(back, arr)


def test_big_endian_int32_and_float(tmp_path):
    ints = np.array([[1, -2, 70000]], dtype=np.int32)
    floats = np.array([0.5, -1.25], dtype=np.float32)
    write_idx(tmp_path / "i.idx", ints)
    write_idx(tmp_path / "f.idx", floats)
    raw = (tmp_path / "i.idx").read_bytes()
    assert raw[:4] == bytes([0, 0, 0x0C, 2]) and raw[-4:] == (70000).to_bytes(4, "big")
    np.testing.assert_array_equal(read_idx(tmp_path / "i.idx"), ints)
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), floats)


def _corrupt(tmp_path, data: bytes, name="bad-idx3-ubyte"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_truncated_data_is_reported_with_sizes(tmp_path):
    write_idx(tmp_path / "ok", _images())
    data = (tmp_path / "ok").read_bytes()
    p = _corrupt(tmp_path, data[:-7])
    with pytest.raises(DataError, match=r"truncated: dimensions 5x4x3 of uint8 need 60 bytes, file has 53"):
        read_idx(p)


def test_trailing_bytes_are_reported(tmp_path):
    write_idx(tmp_path / "ok", _images())
    p = _corrupt(tmp_path, (tmp_path / "ok").read_bytes() + b"\0\0")
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(p)


def test_wrong_magic(tmp_path):
    p = _corrupt(tmp_path, b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(DataError, match="magic starts with 8950, expected 0000"):
        read_idx(p)


def test_unknown_type_code(tmp_path):
    p = _corrupt(tmp_path, bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]))
    with pytest.raises(DataError, match="unknown IDX type code 0x07"):
        read_idx(p)


def test_truncated_header(tmp_path):
    p = _corrupt(tmp_path, bytes([0, 0, 0x08, 3, 0, 0, 0, 5]))
    with pytest.raises(DataError, match="truncated IDX header: 3 dimensions need 16 bytes, file has 8"):
        read_idx(p)


def test_too_short_and_broken_gzip(tmp_path):
    with pytest.raises(DataError, match="shorter than the 4-byte magic"):
        read_idx(_corrupt(tmp_path, b"\0\0"))
    good = gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]))
    with pytest.raises(DataError, match=r"truncated .gz: the compressed stream ends early \(\d+ bytes on disk\)"):
        read_idx(_corrupt(tmp_path, good[:-6], "cut.gz"))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="IDX file not found"):
        read_idx(tmp_path / "nope")


def _write_mnist_like(folder, n_train=40, n_test=10, h=6, w=6, classes=4, labels_extra=0):
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, h, w), dtype=np.uint8))
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz",
                  rng.integers(0, classes, n + (labels_extra if split == "train" else 0)).astype(np.uint8))


def test_idx_dataset_from_folder(tmp_path):
    _write_mnist_like(tmp_path / "d")
    splits = load_dataset(DataConfig(dataset="idx", data_dir=tmp_path / "d", val_fraction=0.25), seed=3)
    assert splits.input_shape == (1, 6, 6)
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (30, 10, 10)
    assert splits.num_classes == 4
    assert abs(float(splits.x_train.mean())) < 1e-5 and abs(float(splits.x_train.std()) - 1) < 1e-2


def test_idx_dataset_with_mismatched_counts(tmp_path):
    _write_mnist_like(tmp_path / "d", labels_extra=3)
    with pytest.raises(DataError, match="40 images but train-labels-idx1-ubyte.gz has 43 labels"):
        load_dataset(DataConfig(dataset="idx", data_dir=tmp_path / "d"))


def test_idx_dataset_missing_files(tmp_path, monkeypatch):
    monkeypatch.delenv("POTATURA_DATA", raising=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no IDX files \(train-images-idx3-ubyte\[.gz\], ...\) found in .*empty"):
        load_dataset(DataConfig(dataset="idx", data_dir=tmp_path / "empty"))


def test_data_dir_from_environment(tmp_path, monkeypatch):
    _write_mnist_like(tmp_path / "env" / "fashion-mnist")
    monkeypatch.setenv("POTATURA_DATA", str(tmp_path / "env"))
    splits = load_dataset(DataConfig(dataset="fashion-mnist"), seed=0)
    assert splits.source == str(tmp_path / "env" / "fashion-mnist")
    assert splits.class_names[0] == "T-shirt/top"


def test_explicit_data_dir_is_the_only_place_looked_at(tmp_path, monkeypatch):
    _write_mnist_like(tmp_path / "env" / "fashion-mnist")
    monkeypatch.setenv("POTATURA_DATA", str(tmp_path / "env"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no IDX files"):
        load_dataset(DataConfig(dataset="fashion-mnist", data_dir=tmp_path / "empty"))


def test_fashion_files_never_satisfy_mnist(tmp_path, monkeypatch):
    _write_mnist_like(tmp_path / "fashion-mnist")
    monkeypatch.setenv("POTATURA_DATA", str(tmp_path / "fashion-mnist"))
    monkeypatch.setattr("potatura.data.DEBIAN_DATASETS", tmp_path / "nothing")
    with pytest.raises(DataError, match="dataset 'mnist': no IDX files"):
        load_dataset(DataConfig(dataset="mnist"))
