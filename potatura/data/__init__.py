"""Datasets: scikit-learn's bundled digits (the embedded default), IDX files, numpy arrays.

`load_dataset(cfg, seed)` returns a DatasetSplits with float32 NCHW tensors normalized with the
training split's mean and std (stored with the run), int64 labels, and deterministic
train/validation/test splits drawn from the seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from potatura.data.idx import find_idx_pair, read_idx, write_idx
from potatura.errors import DataError

if TYPE_CHECKING:
    import torch

__all__ = ["DatasetSplits", "load_dataset", "read_idx", "write_idx", "find_data_dir", "source_fingerprint", "DEBIAN_DATASETS"]

# Where Debian's dataset packages install (dataset-fashion-mnist -> /usr/share/datasets/fashion-mnist).
DEBIAN_DATASETS = Path("/usr/share/datasets")
_FOLDER_NAMES = {"mnist": ("mnist", "MNIST"), "fashion-mnist": ("fashion-mnist", "FashionMNIST", "fashion_mnist")}
_CLASS_NAMES = {
    "fashion-mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
}


@dataclass
class DatasetSplits:
    """Train/validation/test tensors; x are float32 [N, C, H, W], y are int64 [N]."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: float = 0.0
    std: float = 1.0
    class_names: list[str] = field(default_factory=list)
    source: str = ""
    notes: list[str] = field(default_factory=list)  # warnings about the data (e.g. classes without samples)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def stats(self) -> dict:
        """What a later stage (or the board) needs to feed raw data: normalization and shapes."""
        return {
            "dataset": self.name,
            "source": self.source,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "mean": self.mean,
            "std": self.std,
            "sizes": {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)},
            "class_names": self.class_names,
            **({"notes": self.notes} if self.notes else {}),
        }


def find_data_dir(dataset: str, data_dir: Optional[Path]) -> Path:
    """The folder holding the IDX files of `dataset`.

    An explicit data_dir is the only place looked at (the files in it, or in its subfolder named
    after the dataset). Without one: $POTATURA_DATA/<dataset>, then Debian's
    /usr/share/datasets/<dataset>. Only `idx` (any IDX files) accepts files at the top of a root:
    a folder of Fashion-MNIST files must never satisfy `dataset: mnist`.
    """
    subs = _FOLDER_NAMES.get(dataset, ())
    if data_dir is not None:
        candidates = [Path(data_dir)] + [Path(data_dir) / s for s in subs]
    else:
        roots = [Path(os.environ["POTATURA_DATA"])] if os.environ.get("POTATURA_DATA") else []
        if dataset == "idx":
            candidates = roots
        else:
            candidates = [r / s for r in roots + [DEBIAN_DATASETS] for s in subs]
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("train-images*")):
            return folder
    hint = ""
    if dataset == "fashion-mnist" and data_dir is None:
        hint = " (install it with: apt-get install dataset-fashion-mnist)"
    raise DataError(f"dataset {dataset!r}: no IDX files (train-images-idx3-ubyte[.gz], ...) found in "
                    f"{', '.join(map(str, candidates))}{hint}")


def source_fingerprint(cfg) -> dict:
    """What identifies the data a DataConfig reads, for the flow's cache key: the resolved
    folder or file with the size and modification time of each file (replacing a file at the
    same path must invalidate cached stages)."""
    if cfg.dataset == "digits":
        return {"source": "sklearn.datasets.load_digits"}
    try:
        if cfg.dataset == "npz":
            files = [Path(cfg.path)]
        else:
            files = sorted(p for p in find_data_dir(cfg.dataset, cfg.data_dir).iterdir() if p.is_file())
    except DataError:
        return {"source": None}  # the stage itself reports the missing data
    return {"files": [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]}


# Datasets whose class count is part of their definition: labels outside it are refused.
_KNOWN_CLASSES = {"digits": 10, "mnist": 10, "fashion-mnist": 10}


def check_finite(array: np.ndarray, where: str) -> None:
    """DataError naming `where` and the index of the first NaN or infinity in `array`."""
    if array.dtype.kind != "f":
        return
    bad = ~np.isfinite(array)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        count = int(bad.sum())
        raise DataError(f"{where}: non-finite value {array[index]} at index {list(index)} "
                        f"({count} non-finite value{'s' if count > 1 else ''} in all); data must be finite numbers")


def _split_indices(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    n_hold = max(1, int(round(n * fraction)))
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


def _load_raw(cfg) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray], str]:
    """(x_train, y_train, x_test, y_test, source) as numpy; x is [N, C, H, W] or [N, H, W]."""
    if cfg.dataset == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64), None, None, "sklearn.datasets.load_digits"
    if cfg.dataset in ("mnist", "fashion-mnist", "idx"):
        folder = find_data_dir(cfg.dataset, cfg.data_dir)
        xs, ys = [], []
        for split in ("train", "t10k"):
            img_path, lbl_path = find_idx_pair(folder, split)
            x, y = read_idx(img_path), read_idx(lbl_path)
            check_finite(x, f"{img_path}")
            check_finite(y, f"{lbl_path}")
            if x.ndim not in (3, 4):
                raise DataError(f"{img_path}: images must have 3 or 4 dimensions, file has {x.ndim}")
            if y.ndim != 1:
                raise DataError(f"{lbl_path}: labels must have 1 dimension, file has {y.ndim}")
            if len(x) != len(y):
                raise DataError(f"{img_path}: {len(x)} images but {lbl_path.name} has {len(y)} labels")
            scale = 255.0 if x.dtype == np.uint8 else 1.0
            xs.append(x.astype(np.float32) / scale)
            ys.append(y.astype(np.int64))
        return xs[0], ys[0], xs[1], ys[1], str(folder)
    if cfg.dataset == "npz":
        path = Path(cfg.path)
        try:
            arrays = np.load(path)
        except Exception as exc:  # numpy raises many kinds here
            raise DataError(f"{path}: cannot read .npz: {exc}") from None
        missing = [k for k in ("x_train", "y_train") if k not in arrays]
        if missing:
            raise DataError(f"{path}: missing arrays {missing}; expected x_train, y_train (and x_test, y_test)")
        if ("x_test" in arrays) != ("y_test" in arrays):
            raise DataError(f"{path}: has {'x_test' if 'x_test' in arrays else 'y_test'} without "
                            f"{'y_test' if 'x_test' in arrays else 'x_test'}; give both or neither")
        out = {}
        for key in ("x_train", "y_train", "x_test", "y_test"):
            if key not in arrays:
                continue
            try:
                a = arrays[key]
            except ValueError as exc:  # object arrays need pickle, which is never enabled
                raise DataError(f"{path}: array {key} cannot be read: {exc}") from None
            if a.dtype.kind not in "biuf":
                raise DataError(f"{path}: array {key} has dtype {a.dtype}; expected numbers")
            check_finite(a, f"{path}: array {key}")
            if key.startswith("x") and a.ndim not in (3, 4):
                raise DataError(f"{path}: array {key} has shape {a.shape}; expected [N, H, W] or [N, C, H, W]")
            if key.startswith("y"):
                if a.ndim != 1:
                    raise DataError(f"{path}: array {key} has shape {a.shape}; expected [N] class labels")
                if a.dtype.kind == "f" and not np.all(a == np.round(a)):
                    raise DataError(f"{path}: array {key} holds non-integer labels; expected class indices")
            out[key] = a
        for split in ("train", "test"):
            if f"x_{split}" in out and len(out[f"x_{split}"]) != len(out[f"y_{split}"]):
                raise DataError(f"{path}: x_{split} has {len(out[f'x_{split}'])} samples but y_{split} has "
                                f"{len(out[f'y_{split}'])} labels")
        x_test = out["x_test"].astype(np.float32) if "x_test" in out else None
        y_test = out["y_test"].astype(np.int64) if "y_test" in out else None
        return out["x_train"].astype(np.float32), out["y_train"].astype(np.int64), x_test, y_test, str(path)
    raise DataError(f"unknown dataset {cfg.dataset!r}")


def _class_count(cfg, labels: np.ndarray, source: str) -> tuple[int, list[str]]:
    """(number of classes, notes). Known datasets refuse labels outside their classes; others
    take data.num_classes when given (refusing labels beyond it), else the largest label + 1,
    with a note when some classes below it have no sample (a gap usually means a wrong file)."""
    if labels.min() < 0:
        raise DataError(f"{source}: negative class label {labels.min()}")
    known = _KNOWN_CLASSES.get(cfg.dataset)
    declared = getattr(cfg, "num_classes", None)
    expected = known if known is not None else declared
    if expected is not None:
        if declared is not None and known is not None and declared != known:
            raise DataError(f"data.num_classes {declared}: dataset {cfg.dataset!r} has {known} classes")
        outside = labels[labels >= expected]
        if outside.size:
            field = f"dataset {cfg.dataset!r} has classes" if known is not None else "data.num_classes says"
            raise DataError(f"{source}: class label {int(outside[0])} is outside 0..{expected - 1} ({field} "
                            f"0..{expected - 1}; {outside.size} label{'s' if outside.size > 1 else ''} outside)")
        num_classes = expected
    else:
        num_classes = int(labels.max()) + 1
    notes = []
    missing = sorted(set(range(num_classes)) - set(np.unique(labels).tolist()))
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        notes.append(f"{source}: {len(missing)} of {num_classes} classes have no sample (labels {shown}); "
                     f"set data.num_classes if the class count is not the largest label + 1")
    return num_classes, notes


def load_dataset(cfg, seed: int = 0) -> DatasetSplits:
    """Load the dataset described by a DataConfig and split it deterministically from `seed`."""
    x, y, x_test, y_test, source = _load_raw(cfg)
    rng = np.random.default_rng(seed)
    if x_test is None:
        keep, hold = _split_indices(len(y), cfg.test_fraction, rng)
        x, y, x_test, y_test = x[keep], y[keep], x[hold], y[hold]
    if cfg.limit_train is not None and cfg.limit_train < len(y):
        pick = np.sort(rng.permutation(len(y))[: cfg.limit_train])
        x, y = x[pick], y[pick]
    train_idx, val_idx = _split_indices(len(y), cfg.val_fraction, rng)

    def nchw(a: np.ndarray) -> np.ndarray:
        return a[:, None] if a.ndim == 3 else a

    x, x_test = nchw(x), nchw(x_test)
    if x.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{source}: train images are {x.shape[1:]} but test images are {x_test.shape[1:]}")
    x_train, y_train, x_val, y_val = x[train_idx], y[train_idx], x[val_idx], y[val_idx]
    for split, n in (("train", len(y_train)), ("validation", len(y_val)), ("test", len(y_test))):
        if n == 0:
            raise DataError(f"{source}: the {split} split is empty ({len(y)} training samples with "
                            f"val_fraction {cfg.val_fraction}); use more data or another fraction")
    mean, std = 0.0, 1.0
    if cfg.normalize:
        mean, std = float(x_train.mean()), float(x_train.std()) or 1.0
    num_classes, notes = _class_count(cfg, np.concatenate([y_train, y_val, y_test]), source)

    import torch

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray((a - mean) / std, dtype=np.float32))

    return DatasetSplits(
        name=cfg.dataset,
        x_train=t(x_train), y_train=torch.from_numpy(y_train),
        x_val=t(x_val), y_val=torch.from_numpy(y_val),
        x_test=t(x_test), y_test=torch.from_numpy(y_test),
        num_classes=num_classes, mean=mean, std=std,
        class_names=_CLASS_NAMES.get(cfg.dataset, [str(i) for i in range(num_classes)]),
        source=source, notes=notes,
    )
