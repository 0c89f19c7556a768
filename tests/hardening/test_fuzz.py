"""Issue 9: random malformed flow files, IDX headers and npz contents (hypothesis). Each must give
exit code 2 and one line without a traceback, write nothing outside its run directory, and leave
an existing good run directory unchanged."""

import hashlib
import io
import json
import struct

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from potatura.cli import main
from potatura.config import load_config
from potatura.data import load_dataset
from potatura.errors import PotaturaError
from potatura.flow import run_flow
from tests.hardening.conftest import write_flow

FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.filter_too_much])


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """A finished tiny run; every fuzzed flow points at its run directory."""
    root = tmp_path_factory.mktemp("good")
    run_flow(load_config(write_flow(root, stages="train")))
    return root


def _snapshot(root):
    """{relative path: sha256} of every file under root."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _cli_one_line_error(argv, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    assert info.value.code == 2, (argv, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) >= 1 and all(line.startswith("error: ") for line in lines), err
    assert "Traceback" not in out + err
    return lines


# -- flow files -------------------------------------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                     st.text(max_size=12))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                       max_leaves=6)
_sections = st.sampled_from(["seed", "stages", "data", "model", "train", "simplify", "quant", "hwgen", "name",
                             "runs_dir", "sim", "deploy", "bench", "nonsense"])
_flows = st.one_of(
    st.dictionaries(_sections, _values, min_size=1, max_size=4),
    st.text(max_size=60),  # anything at all: YAML errors, scalars, lists
)


@FUZZ
@given(flow=_flows)
def test_malformed_flow_files(flow, good_run, tmp_path, capsys):
    path = tmp_path / "fuzz.yaml"
    if isinstance(flow, dict):
        text = yaml.safe_dump(flow)
    else:
        text = flow
    path.write_text(text, encoding="utf-8")
    try:
        cfg = load_config(path)
    except PotaturaError:
        cfg = None
    assume(cfg is None)  # a valid flow would run: only malformed ones are this test's subject
    before_good, before_tmp = _snapshot(good_run), _snapshot(tmp_path)
    # the flow is pointed at the good run directory: --set applies after the file is read
    lines = _cli_one_line_error(["run", str(path), "--set", f"runs_dir={good_run / 'runs'}", "--set", "name=tiny"],
                                capsys)
    assert lines
    assert _snapshot(good_run) == before_good
    assert _snapshot(tmp_path) == before_tmp


# -- IDX headers ------------------------------------------------------------------------------------

@st.composite
def _idx_files(draw):
    magic = draw(st.sampled_from([b"\x00\x00", b"\x00\x01", b"\x1f\x8b", b"PK"]))
    code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x07, 0xFF]))
    ndim = draw(st.integers(0, 5))
    dims = draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim))
    declared = bytes([code, ndim]) + b"".join(struct.pack(">I", d) for d in dims)
    header_cut = draw(st.integers(0, len(declared)))  # a truncated header sometimes
    body = draw(st.binary(max_size=300))
    if draw(st.booleans()):
        declared = declared[:header_cut]
    return magic + declared + body


@FUZZ
@given(images=_idx_files())
def test_malformed_idx_images(images, good_run, tmp_path, capsys):
    folder = tmp_path / "idx"
    folder.mkdir(exist_ok=True)
    (folder / "train-images-idx3-ubyte").write_bytes(images)
    labels = bytes([0, 0, 0x08, 1]) + struct.pack(">I", 4) + bytes([0, 1, 0, 1])
    (folder / "train-labels-idx1-ubyte").write_bytes(labels)
    (folder / "t10k-images-idx3-ubyte").write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">III", 4, 2, 2) + bytes(16))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(labels)
    from potatura.config import DataConfig

    try:
        load_dataset(DataConfig(dataset="idx", data_dir=folder))
        valid = True
    except PotaturaError:
        valid = False
    assume(not valid)
    flow = write_flow(tmp_path, stages="train", name="idx.yaml")
    before_good = _snapshot(good_run)
    outside = _snapshot(tmp_path)
    _cli_one_line_error(["run", str(flow), "--set", "data.dataset=idx", "--set", f"data.data_dir={folder}",
                         "--set", "name=fuzz-idx"], capsys)
    assert _snapshot(good_run) == before_good
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("runs/fuzz-idx/")} == \
           {k: v for k, v in outside.items() if not k.startswith("runs/fuzz-idx/")}


# -- npz contents -----------------------------------------------------------------------------------

_dtypes = st.sampled_from(["float32", "float64", "int64", "uint8", "bool", "complex64", "U3", "object"])


@st.composite
def _npz_contents(draw):
    arrays = {}
    for key in draw(st.lists(st.sampled_from(["x_train", "y_train", "x_test", "y_test", "extra"]),
                             min_size=0, max_size=5, unique=True)):
        shape = tuple(draw(st.lists(st.integers(0, 5), min_size=0, max_size=4)))
        dtype = draw(_dtypes)
        size = int(np.prod(shape)) if shape else 1
        if dtype == "object":
            a = np.array([None] * size, dtype=object).reshape(shape)
        elif dtype == "U3":
            a = np.full(shape, "ab")
        else:
            values = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=size,
                                   max_size=size))
            with np.errstate(all="ignore"):
                a = np.array(values, dtype=np.float64).reshape(shape)
                a = np.nan_to_num(a) if dtype not in ("float32", "float64", "complex64") else a
                a = a.astype(dtype)
        arrays[key] = a
    return arrays


@FUZZ
@given(arrays=_npz_contents(), corrupt=st.booleans())
def test_malformed_npz(arrays, corrupt, good_run, tmp_path, capsys):
    path = tmp_path / "fuzz.npz"
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    if corrupt:
        data = data[: len(data) // 2]
    path.write_bytes(data)
    from potatura.config import DataConfig

    try:
        load_dataset(DataConfig(dataset="npz", path=path))
        valid = True
    except PotaturaError:
        valid = False
    assume(not valid)
    flow = write_flow(tmp_path, stages="train", name="npz.yaml")
    before_good = _snapshot(good_run)
    outside = _snapshot(tmp_path)
    _cli_one_line_error(["run", str(flow), "--set", "data.dataset=npz", "--set", f"data.path={path}",
                         "--set", "name=fuzz-npz"], capsys)
    assert _snapshot(good_run) == before_good
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("runs/fuzz-npz/")} == \
           {k: v for k, v in outside.items() if not k.startswith("runs/fuzz-npz/")}
    json.dumps(after)  # snapshot is plain data
