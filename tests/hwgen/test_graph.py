"""Reading QONNX into exact hls4ml types; clear errors for what the hls4ml backend cannot compute."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from potatura.errors import DataError, UnsupportedError
from potatura.hw.types import FixedType
from potatura.hwgen.hls4ml.lowering import hls_name, read_network
from potatura.quant.export import quant_parameters


def test_types_come_from_the_quant_nodes(cnn_qonnx):
    net = read_network(cnn_qonnx)
    params = quant_parameters(cnn_qonnx)
    from qonnx.core.modelwrapper import ModelWrapper

    graph_input = ModelWrapper(str(cnn_qonnx)).graph.input[0].name
    inp = next(e for e in params.values() if e["input"] == graph_input)
    assert net.input_type == FixedType(True, 8, inp["fixed_point"]["integer"], "RND_CONV", "SAT")
    weights = [e["fixed_point"] for e in params.values() if e["role"] == "weight"]
    layers = net.compute_layers
    assert [layer.op for layer in layers] == ["conv2d", "conv2d", "dense", "dense"]
    assert sorted((w["width"], w["integer"]) for w in weights) == \
        sorted((lt.weight_type.width, lt.weight_type.integer) for lt in layers)
    for layer in layers:
        assert layer.weight_type.saturation == "SAT_SYM"  # Brevitas Int8 weights are narrow range
        assert layer.weight_type.rounding == "RND_CONV"
        assert layer.accum_type == layer.result_type
        assert layer.accum_type.frac == layer.input_type.frac + layer.weight_type.frac
    relus = [layer for layer in net.layers if layer.op == "relu"]
    assert len(relus) == 3 and all(r.result_type.width == 8 and not r.result_type.signed for r in relus)
    assert all(r.attrs.get("merged") for r in relus)  # each Relu -> Quant pair is one hls4ml layer
    every = [net.input_type] + [t for layer in net.layers for t in
                                (layer.weight_type, layer.bias_type, layer.accum_type, layer.result_type) if t]
    assert "fixed<16,6>" not in {t.hls() for t in every}


def test_accumulators_hold_the_worst_case_sums(cnn_qonnx):
    """Brute force: drive each layer's input to the code extremes that maximize and minimize each output."""
    net = read_network(cnn_qonnx)
    for layer in net.compute_layers:
        w = layer.weight_codes.reshape(layer.n_out, -1) if layer.op == "conv2d" else layer.weight_codes.T
        x_hi = layer.input_type.max_code
        x_lo = min(layer.input_type.min_code, 0)
        shift = layer.accum_type.frac - layer.input_type.frac - layer.weight_type.frac
        b = (layer.bias_codes if layer.bias_codes is not None else np.zeros(layer.n_out, np.int64))
        b = b * 2 ** (layer.accum_type.frac - layer.bias_type.frac)
        top = np.where(w > 0, w * x_hi, w * x_lo).sum(axis=1) * 2 ** shift + np.maximum(b, 0)
        bottom = np.where(w > 0, w * x_lo, w * x_hi).sum(axis=1) * 2 ** shift + np.minimum(b, 0)
        acc = layer.accum_type
        assert acc.min_code <= bottom.min() and top.max() <= acc.max_code, hls_name(layer)
        narrower = FixedType(acc.signed, acc.width - 1, acc.integer - 1)
        assert narrower.min_code > bottom.min() or top.max() > narrower.max_code, f"{hls_name(layer)} not tight"


def _quant(name, x, scale, bits, signed=1, narrow=0, rounding="ROUND"):
    params = [numpy_helper.from_array(np.array(v, dtype=np.float32), f"{name}_{k}")
              for k, v in (("scale", scale), ("zp", 0.0), ("bits", float(bits)))]
    node = helper.make_node("Quant", [x, *(p.name for p in params)], [f"{name}_out"], name=name,
                            domain="qonnx.custom_op.general", signed=signed, narrow=narrow, rounding_mode=rounding)
    return node, params


def _model(nodes, inits, out, in_shape=(1, 4), out_shape=(1, 3)):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, list(out_shape))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("qonnx.custom_op.general", 1)])
    from qonnx.core.modelwrapper import ModelWrapper

    return ModelWrapper(model)


def _dense(op_after=None, act_scale=0.125, x_quant=True):
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    src = "x"
    if x_quant:
        q, p = _quant("qin", "x", act_scale, 8)
        nodes.append(q)
        inits += p
        src = "qin_out"
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32) * 0.3, "w")
    qw, pw = _quant("qw", "w", 2.0 ** -6, 8, narrow=1)
    nodes += [qw, helper.make_node("MatMul", [src, "qw_out"], ["mm"], name="fc")]
    inits += [w, *pw]
    out = "mm"
    if op_after:
        nodes.append(helper.make_node(op_after, ["mm"], ["y"], name="head"))
        out = "y"
    return _model(nodes, inits, out)


def test_a_plain_quantized_dense_layer_is_read():
    net = read_network(_dense(), source="tiny")
    assert net.input_type.hls() == "fixed<8,5,RND_CONV,SAT>"
    (fc,) = net.compute_layers
    assert fc.weight_type.hls() == "fixed<8,2,RND_CONV,SAT_SYM>" and fc.n_in == 4 and fc.n_out == 3


def test_unsupported_operator_names_node_and_what_is_supported():
    with pytest.raises(UnsupportedError) as err:
        read_network(_dense("Sigmoid"), source="tiny")
    msg = str(err.value)
    assert "'head'" in msg and "Sigmoid" in msg and "supported: Quant" in msg and "Relu" in msg


def test_non_power_of_two_scale_is_refused():
    with pytest.raises(UnsupportedError, match=r"node 'Quant_\d+' \(Quant\): scale 0\.3\d* is not a power of two"):
        read_network(_dense(act_scale=0.3), source="tiny")


def test_unquantized_input_is_refused():
    with pytest.raises(UnsupportedError, match="the model input must be quantized first"):
        read_network(_dense(x_quant=False), source="tiny")


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="QONNX model not found"):
        read_network(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(DataError, match="not a readable ONNX model"):
        read_network(bad)


def test_a_branch_that_ends_nowhere_is_refused():
    model = _dense()
    model.graph.node.append(helper.make_node("Relu", ["qin_out"], ["side"], name="side_relu"))
    with pytest.raises(UnsupportedError, match="the result of node 'Relu_0' reaches no output"):
        read_network(model, source="tiny")


def _conv_with_bias_map():
    rng = np.random.default_rng(0)
    q, p = _quant("qin", "x", 2.0 ** -4, 8)
    w = numpy_helper.from_array(rng.standard_normal((2, 1, 3, 3)).astype(np.float32) * 0.3, "w")
    qw, pw = _quant("qw", "w", 2.0 ** -6, 8, narrow=1)
    bias_map = numpy_helper.from_array(rng.standard_normal((1, 2, 4, 4)).astype(np.float32), "bias_map")
    nodes = [q, qw, helper.make_node("Conv", ["qin_out", "qw_out"], ["c"], name="conv", pads=[1, 1, 1, 1],
                                     kernel_shape=[3, 3], strides=[1, 1], dilations=[1, 1], group=1),
             helper.make_node("Add", ["c", "bias_map"], ["y"], name="bias_map_add")]
    return _model(nodes, [*p, w, *pw, bias_map], "y", in_shape=(1, 1, 4, 4), out_shape=(1, 2, 4, 4))


def test_per_position_bias_map_is_refused_with_the_simplify_option():
    with pytest.raises(UnsupportedError, match=r"\(Add\): a constant added after a convolution .*simplify.bias_maps: refuse"):
        read_network(_conv_with_bias_map(), source="tiny")


def test_io_type_auto(cnn_qonnx, mlp_quant):
    from potatura.hwgen.hls4ml.project import resolve_io_type

    assert resolve_io_type(read_network(cnn_qonnx), "auto") == "io_stream"
    mlp = read_network(mlp_quant.paths["qonnx"])
    assert resolve_io_type(mlp, "auto") == "io_parallel"
    assert resolve_io_type(mlp, "io_stream") == "io_stream"
    assert mlp.float32_reference_exact
