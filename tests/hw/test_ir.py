"""The hardware IR: graphs built by hand, validation rules, and an exact design.json round trip."""

import json

import numpy as np
import pytest

from potatura.errors import DataError
from potatura.hw.ir import (
    DESIGN_FILE,
    WEIGHTS_FILE,
    Design,
    Graph,
    GraphError,
    IOSpec,
    Layer,
    Op,
    load_design,
    save_design,
)
from potatura.hw.types import FixedType

I8 = FixedType(True, 8, 3, "RND_CONV", "SAT")
U8 = FixedType(False, 8, 4, "RND_CONV", "SAT")
W8 = FixedType(True, 8, 1, "RND_CONV", "SAT_SYM")
ACC = FixedType(True, 20, 8)


def residual_cnn() -> Graph:
    """input (4,4,2) -> conv 3x3 pad 1 (3 ch) -> relu -> quant -+-> add -> concat(with quant) -> maxpool -> flatten -> dense 5
                                                               `-> conv 1x1 -> quant -'"""
    rng = np.random.default_rng(0)
    w1 = rng.integers(-127, 128, size=(3, 3, 3, 2))
    w2 = rng.integers(-127, 128, size=(3, 1, 1, 3))
    w3 = rng.integers(-127, 128, size=(24, 5))
    layers = [
        Layer("in", Op.INPUT, (), (), (4, 4, 2), result_type=I8),
        Layer("conv1", Op.CONV2D, ("in",), ((4, 4, 2),), (4, 4, 3), I8, ACC, W8, ACC, ACC, w1,
              rng.integers(-5, 5, size=3), attrs={"kernel": (3, 3), "stride": (1, 1), "pads": (1, 1, 1, 1)}),
        Layer("relu1", Op.RELU, ("conv1",), ((4, 4, 3),), (4, 4, 3), ACC, FixedType(False, 19, 7)),
        Layer("q1", Op.QUANT, ("relu1",), ((4, 4, 3),), (4, 4, 3), FixedType(False, 19, 7), U8),
        Layer("conv2", Op.CONV2D, ("q1",), ((4, 4, 3),), (4, 4, 3), U8, ACC, W8, None, ACC, w2,
              attrs={"kernel": [1, 1]}),
        Layer("q2", Op.QUANT, ("conv2",), ((4, 4, 3),), (4, 4, 3), ACC, U8),
        Layer("add", Op.ADD, ("q1", "q2"), ((4, 4, 3), (4, 4, 3)), (4, 4, 3), U8, FixedType(False, 9, 5)),
        Layer("cat", Op.CONCAT, ("add", "q1"), ((4, 4, 3), (4, 4, 3)), (4, 4, 6), FixedType(False, 9, 5),
              FixedType(False, 9, 5)),
        Layer("pool", Op.MAXPOOL2D, ("cat",), ((4, 4, 6),), (2, 2, 6), FixedType(False, 9, 5),
              FixedType(False, 9, 5), attrs={"kernel": (2, 2), "stride": (2, 2)}),
        Layer("flat", Op.FLATTEN, ("pool",), ((2, 2, 6),), (24,), FixedType(False, 9, 5), FixedType(False, 9, 5)),
        Layer("fc", Op.DENSE, ("flat",), ((24,),), (5,), FixedType(False, 9, 5), ACC, W8, W8, ACC, w3,
              np.arange(5), attrs={"source_nodes": ("MatMul_0", "Add_0")}),
    ]
    return Graph("residual", layers, IOSpec("in", (4, 4, 2), "NHWC", I8), IOSpec("fc", (5,), "flat", ACC),
                 attrs={"input_shape_nchw": (2, 4, 4)})


def test_hand_built_graph_is_valid_and_answers_lookups():
    g = residual_cnn().validate()
    assert [p.name for p in g.producers("add")] == ["q1", "q2"]
    assert [c.name for c in g.consumers("q1")] == ["conv2", "add", "cat"]
    assert [layer.name for layer in g.compute_layers] == ["conv1", "conv2", "fc"]
    conv1 = g.layer("conv1")
    assert (conv1.n_in, conv1.n_out, conv1.n_weights, conv1.out_pixels) == (18, 3, 54, 16)
    assert conv1.kernel == (3, 3) and conv1.pads == (1, 1, 1, 1) and conv1.stride == (1, 1)
    assert g.layer("fc").n_zeros == int(np.count_nonzero(g.layer("fc").weight_codes == 0))
    assert g.layer("conv1").weight_codes.dtype == np.int64
    assert Op.CONV2D == "conv2d" and g.ops() >= {Op.ADD, Op.CONCAT}
    assert g.input.size == 32 and g.output.size == 5
    with pytest.raises(KeyError, match="no layer 'nope'"):
        g.layer("nope")


def test_design_round_trip_is_exact(tmp_path):
    g = residual_cnn()
    design = Design(g, "hls4ml", "pynq-z2", 100.0,
                    layer_choices={"conv1": {"reuse_factor": 9, "strategy": "Latency", "io_type": "io_stream"}},
                    fifo_depths={"layer2_out": 16}, backend_info={"project_name": "potatura_accel", "rf": (1, 2)})
    path = save_design(design, tmp_path)
    assert path == tmp_path / DESIGN_FILE and (tmp_path / WEIGHTS_FILE).is_file()
    back = load_design(tmp_path)
    assert back == design
    for a, b in zip(g.layers, back.graph.layers):
        for name in ("weight_codes", "bias_codes"):
            if getattr(a, name) is not None:
                assert getattr(b, name).dtype == np.int64
                assert np.array_equal(getattr(a, name), getattr(b, name))
    # Saving what was loaded writes the same bytes: the format has one spelling.
    save_design(back, tmp_path / "again")
    assert (tmp_path / "again" / DESIGN_FILE).read_bytes() == path.read_bytes()
    doc = json.loads(path.read_text())
    assert doc["format"] == "potatura-design/1"
    assert doc["graph"]["layers"][1]["weight_type"] == {"signed": True, "width": 8, "integer": 1,
                                                        "rounding": "RND_CONV", "saturation": "SAT_SYM"}
    with np.load(tmp_path / WEIGHTS_FILE, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["layer10_bias_codes", "layer10_weight_codes", "layer1_bias_codes",
                                     "layer1_weight_codes", "layer4_weight_codes"]


def test_wide_codes_survive_the_round_trip(tmp_path):
    """Codes past 2**53 (a 60-bit bias) stay exact: they travel as int64 in the npz, not as JSON floats."""
    wide = FixedType(True, 62, 30)
    layers = [Layer("x", Op.INPUT, (), (), (2,), result_type=I8),
              Layer("d", Op.DENSE, ("x",), ((2,),), (1,), I8, wide, W8, wide, wide, np.array([[1], [-1]]),
                    np.array([2 ** 60 + 1]))]
    g = Graph("wide", layers, IOSpec("x", (2,), "flat", I8), IOSpec("d", (1,), "flat", wide))
    save_design(Design(g, "toy", "pynq-z2", 125), tmp_path)
    assert int(load_design(tmp_path).graph.layer("d").bias_codes[0]) == 2 ** 60 + 1


@pytest.mark.parametrize("breakage, message", [
    (lambda g: g.layers.insert(3, g.layers.pop(6)), "not an earlier layer"),
    (lambda g: setattr(g.layers[6], "inputs", ("q1", "cat")), "not an earlier layer"),
    (lambda g: setattr(g.layers[2], "in_shapes", ((4, 4, 2),)), r"gives shape \[4, 4, 3\]"),
    (lambda g: setattr(g.layers[1], "out_shape", (2, 2, 3)), r"output shape \[2, 2, 3\], expected \[4, 4, 3\]"),
    (lambda g: g.layers[1].weight_codes.__setitem__((0, 0, 0, 0), 128), "exceed"),
    (lambda g: setattr(g.layers[7], "out_shape", (4, 4, 5)), "joined along the last axis"),
    (lambda g: setattr(g.layers[3], "input_type", U8), "is not the result type of 'relu1'"),
    (lambda g: setattr(g, "output", IOSpec("fc", (5,), "flat", U8)), "does not describe layer 'fc'"),
    (lambda g: setattr(g.layers[4], "name", "q1"), "used twice"),
    (lambda g: g.layers.append(Layer("dangling", Op.RELU, ("fc",), ((5,),), (5,), ACC, ACC)), "dangling feed nothing"),
])
def test_validate_names_the_broken_rule(breakage, message):
    g = residual_cnn()
    breakage(g)
    with pytest.raises(GraphError, match=message):
        g.validate()


def test_invalid_design_is_not_written(tmp_path):
    g = residual_cnn()
    g.layers[2].in_shapes = ((9,),)
    with pytest.raises(GraphError):
        save_design(Design(g, "hls4ml", "pynq-z2", 100), tmp_path)
    assert not (tmp_path / DESIGN_FILE).exists()


def test_load_design_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="no design.json"):
        load_design(tmp_path)
    (tmp_path / DESIGN_FILE).write_text('{"format": "something-else"}')
    with pytest.raises(DataError, match="not a potatura design"):
        load_design(tmp_path)
    save_design(Design(residual_cnn(), "hls4ml", "pynq-z2", 100), tmp_path)
    (tmp_path / WEIGHTS_FILE).unlink()
    with pytest.raises(GraphError, match="design.json: layer 'conv1': weight_codes refers to 'layer1_weight_codes'"):
        load_design(tmp_path)


def test_fixed_type_dict_round_trip_and_errors():
    for t in (I8, U8, W8, ACC, FixedType(True, 4, -2), FixedType(False, 40, 50)):
        assert FixedType.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    with pytest.raises(ValueError, match="exactly the keys"):
        FixedType.from_dict({"signed": True, "width": 8})
    with pytest.raises(ValueError, match="rounding in"):
        FixedType.from_dict(dict(I8.to_dict(), rounding="RND"))
    with pytest.raises(ValueError, match="width and integer are integers"):
        FixedType.from_dict(dict(I8.to_dict(), width=8.0))


def test_float_codes_are_refused():
    with pytest.raises(GraphError, match="integer codes expected"):
        Layer("d", Op.DENSE, ("x",), ((2,),), (1,), weight_codes=np.array([[0.5], [1.0]]))


def test_copy_is_independent():
    g = residual_cnn()
    c = g.copy()
    c.layers[1].attrs["kernel"] = [1, 1]
    c.layers.pop()
    assert g.layers[1].kernel == (3, 3) and len(g.layers) == 11
