"""The backend-neutral reader on DAGs: ResNet-8 (residual adds, global average pooling) and
DenseNet-small (concatenations, average pooling) become IR graphs whose integer execution (the
simulator's functional model) equals the QONNX reference on every golden sample."""

import numpy as np
import pytest

from potatura.hw.ir import Op
from potatura.hwgen.backend import get_backend
from potatura.hwgen.reader import read_qonnx


def run_ir(graph, x_codes):
    from potatura.sim.functional import run_layer

    values = {graph.layers[0].name: x_codes}
    types = {layer.name: layer.result_type for layer in graph.layers}
    for layer in graph.layers[1:]:
        values[layer.name] = run_layer(layer, [values[i] for i in layer.inputs], [types[i] for i in layer.inputs])
    return values[graph.output.layer].reshape(len(x_codes), -1) * graph.output.type.lsb


@pytest.mark.parametrize("name, ops", [("resnet8", {Op.ADD, Op.GLOBAL_AVGPOOL}),
                                       ("densenet-small", {Op.CONCAT, Op.AVGPOOL2D, Op.GLOBAL_AVGPOOL})])
def test_zoo_dags_read_exactly(quantize_model, name, ops):
    q = quantize_model(name, epochs=1)
    graph = read_qonnx(q.paths["qonnx"]).graph
    assert ops <= graph.ops()
    assert any(len(graph.consumers(layer.name)) > 1 for layer in graph.layers)  # a real DAG
    with np.load(q.paths["golden"], allow_pickle=False) as golden:
        x, y = golden["x"], golden["y"].astype(np.float64)
    t = graph.input.type
    x_codes = np.clip(np.rint(x.astype(np.float64) * 2.0 ** t.frac), t.min_code, t.max_code).astype(np.int64)
    y_ir = run_ir(graph, np.ascontiguousarray(x_codes.transpose(0, 2, 3, 1)))
    assert len(y_ir) >= 100
    assert np.array_equal(y_ir, y.reshape(len(y), -1))
    # hls4ml builds none of these yet: its operator table says which layers, by name.
    problems = get_backend("hls4ml").supports(graph)
    assert problems and all("not built by the hls4ml backend" in p or "chain" in p for p in problems)
    assert {p.split(" ")[1] for p in problems if "not built" in p} == {f"({op.value}):" for op in ops}
