"""The backend interface: a toy second backend goes the whole hwgen path (registry, config, operator
table shared with quant's gate, lowering passes, fit, generate with design.json, verify, index.json)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from potatura.artifacts import read_json
from potatura.boards.catalog import Board
from potatura.errors import UnsupportedError
from potatura.hw.backends import (
    BackendSpec,
    get_spec,
    register_spec,
    unregister_spec,
    unsupported_onnx_ops,
)
from potatura.hw.ir import Design, Graph, Op, load_design, save_design
from potatura.hwgen.backend import (
    Backend,
    BuildOutcome,
    ProjectResult,
    apply_passes,
    get_backend,
)
from potatura.hwgen.config import HwgenConfig
from potatura.quant.hardware import hardware_problems


def fold_relu_into_dense(graph: Graph) -> tuple[Graph, bool]:
    """The toy builds dense+ReLU as one unit: a RELU after a DENSE (its only consumer) joins it."""
    for relu in graph.layers:
        if relu.op != Op.RELU:
            continue
        (dense,) = graph.producers(relu.name)
        if dense.op != Op.DENSE or len(graph.consumers(dense.name)) != 1 or dense.attrs.get("relu"):
            continue
        dense.attrs["relu"] = True
        dense.result_type = relu.result_type
        graph.bypass(relu.name, dense.name)
        return graph, True
    return graph, False


def _requantize(codes: np.ndarray, src, dst) -> np.ndarray:
    """Cast integer codes between fixed-point types (float64 is exact at these widths)."""
    v = codes.astype(np.float64) * 2.0 ** (dst.frac - src.frac)
    v = np.rint(v) if dst.rounding == "RND_CONV" else np.floor(v)
    if dst.saturation in ("SAT", "SAT_SYM"):
        v = np.clip(v, dst.min_code, dst.max_code)
    return v.astype(np.int64)


def run_ir(graph: Graph, x: np.ndarray) -> np.ndarray:
    """The toy's own execution of an MLP graph on float inputs: integer codes layer by layer."""
    inp = graph.layers[0].result_type
    values = {graph.layers[0].name: np.clip(np.rint(x.reshape(len(x), -1).astype(np.float64) * 2.0 ** inp.frac),
                                            inp.min_code, inp.max_code).astype(np.int64)}
    for layer in graph.layers[1:]:
        a = values[layer.inputs[0]]
        if layer.op == Op.FLATTEN:
            out = a.reshape(len(a), -1)
        elif layer.op == Op.DENSE:
            shift = layer.accum_type.frac - layer.input_type.frac - layer.weight_type.frac
            out = (a @ layer.weight_codes) << shift
            if layer.bias_codes is not None:
                out = out + (layer.bias_codes << (layer.accum_type.frac - layer.bias_type.frac))
            if layer.attrs.get("relu"):
                out = _requantize(np.maximum(out, 0), layer.accum_type, layer.result_type)
        elif layer.op == Op.RELU:
            out = np.maximum(a, 0)
        elif layer.op == Op.QUANT:
            out = _requantize(a, layer.input_type, layer.result_type)
        else:
            raise AssertionError(layer.op)
        values[layer.name] = out
    return values[graph.output.layer].astype(np.float64) * graph.output.type.lsb


@dataclass
class ToyFit:
    graph: Graph
    board: Board
    fits: bool
    source: str = "estimated"

    @property
    def totals(self) -> dict:
        return {"multipliers": sum(layer.n_weights - layer.n_zeros for layer in self.graph.compute_layers),
                "lut": 0, "ff": 0, "dsp": 0, "bram18": 0}

    @property
    def interval_cycles(self) -> int:
        return max(layer.n_out for layer in self.graph.compute_layers)  # one output per cycle

    @property
    def latency_cycles(self) -> int:
        return sum(layer.n_out for layer in self.graph.compute_layers)

    def layer_choices(self) -> dict:
        return {layer.name: {"outputs_per_cycle": 1} for layer in self.graph.compute_layers}

    def table(self) -> str:
        return f"toy fit on {self.board.name}: {self.totals['multipliers']} multiplications, fits: {self.fits}"

    def to_dict(self) -> dict:
        return {"fits": self.fits, "totals": self.totals, "interval_cycles": self.interval_cycles}


@dataclass
class ToyCheck:
    samples: int
    exact_matches: int

    def to_dict(self) -> dict:
        return {"samples": self.samples, "exact_matches": self.exact_matches}


class ToyBackend(Backend):
    name = "toy"

    def passes(self) -> list:
        return [fold_relu_into_dense]

    def fit(self, graph, board, cfg):
        return ToyFit(graph, board, fits=True)

    def generate(self, source, board, out_dir, cfg, *, x=None, reference=None, build=False, max_utilization=0.8,
                 on_step=None):
        graph = self.lower(source.graph)
        fit = self.fit(graph, board, cfg)
        save_design(Design(graph, self.name, board.name, board.clock_mhz, fit.layer_choices()), out_dir)
        result = ProjectResult(board.name, self.name, Path(out_dir), fit, None, BuildOutcome(False, "toy"), {})
        if x is not None:
            result.csim = self.verify(result, x, reference)
        return result

    def verify(self, result, x, reference):
        y = run_ir(load_design(result.out_dir).graph, x)
        return ToyCheck(len(x), int(np.sum(np.all(y == reference.reshape(len(y), -1), axis=1))))


@pytest.fixture
def toy():
    register_spec(BackendSpec("toy", frozenset({Op.INPUT, Op.QUANT, Op.DENSE, Op.RELU, Op.FLATTEN}), ToyBackend))
    yield get_backend("toy")
    unregister_spec("toy")


def test_operator_table_is_shared_with_quants_gate(toy):
    assert unsupported_onnx_ops("toy", ["Quant", "Gemm", "Relu", "Flatten"]) == []
    assert unsupported_onnx_ops("toy", ["Conv", "MaxPool"]) == [
        "Conv (IR conv2d: not built by the toy backend)", "MaxPool (IR maxpool2d: not built by the toy backend)"]
    problems = hardware_problems({}, {}, ["Quant", "Conv", "Gemm"], {"exact": True}, backend="toy")
    assert problems == ["operators the toy backend does not build: Conv (IR conv2d: not built by the toy backend)"]
    assert hardware_problems({}, {}, ["Quant", "Conv", "Gemm"], {"exact": True}, backend="hls4ml") == []
    # quant used to accept these; hwgen never built them: now both say no.
    assert [p.split(" ")[0] for p in unsupported_onnx_ops("hls4ml", ["Add", "Concat", "AveragePool"])] == \
        ["Add", "AveragePool", "Concat"]
    assert get_spec("hls4ml").missing([Op.ADD, Op.CONV2D]) == [Op.ADD]


def test_toy_backend_refuses_a_cnn_and_lowers_an_mlp(toy, cnn_qonnx, mlp_quant):
    from potatura.hwgen.reader import read_qonnx

    cnn = read_qonnx(cnn_qonnx).graph
    assert [p.split(" ")[0] for p in toy.supports(cnn)] == ["Conv_0", "MaxPool_0", "Conv_1", "MaxPool_1"]
    assert get_backend("hls4ml").supports(cnn) == []
    mlp = read_qonnx(mlp_quant.paths["qonnx"]).graph
    assert toy.supports(mlp) == []
    lowered = toy.lower(mlp)
    assert Op.RELU not in lowered.ops() and Op.RELU in mlp.ops()  # lowering works on a copy
    assert len(lowered.layers) == len(mlp.layers) - 2 and apply_passes(lowered, toy.passes()) == lowered


def test_toy_backend_goes_through_the_hwgen_stage(toy, mlp_quant, tmp_path):
    from potatura.hwgen.stage import run_hwgen

    cfg = HwgenConfig(boards=["pynq-z2", "zcu104"], backends=["toy"], csim_samples=64)
    assert cfg.backend("toy") is None
    outputs = run_hwgen(cfg, mlp_quant.paths["qonnx"], mlp_quant.paths["golden"], tmp_path / "hwgen")
    index = read_json(outputs["index"])
    assert [(e["board"], e["backend"], e["path"], e["fits"]) for e in index] == [
        ("pynq-z2", "toy", "hwgen/pynq-z2/toy", True), ("zcu104", "toy", "hwgen/zcu104/toy", True)]
    for entry in index:
        # The toy's integer execution of the IR equals the QONNX reference on every sample: the IR is exact.
        assert entry["csim"] == {"samples": 64, "exact_matches": 64}
        design = load_design(tmp_path / entry["path"])
        assert design.backend == "toy" and design.board == entry["board"]
        assert all(layer.attrs.get("relu") for layer in design.graph.compute_layers[:-1])
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"backend toy takes no options, got \['io_type'\]"):
        HwgenConfig(backends={"toy": {"io_type": "io_stream"}})


def test_unknown_and_unsupported_backends_are_clear(cnn_qonnx, tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown backend 'nonesuch'; known backends: hls4ml"):
        HwgenConfig(backends=["nonesuch"])
    register_spec(BackendSpec("toy", frozenset({Op.INPUT, Op.DENSE}), ToyBackend))
    try:
        from potatura.hwgen.stage import run_hwgen

        with pytest.raises(UnsupportedError, match=r"hwgen \(toy backend\), model.qonnx.onnx: Conv_0 \(conv2d\): "
                                                   "not built by the toy backend"):
            run_hwgen(HwgenConfig(backends=["toy"], csim=False), cnn_qonnx, None, tmp_path)
    finally:
        unregister_spec("toy")
    assert not (tmp_path / "index.json").exists()


def test_hls4ml_backend_refuses_branches_and_merges_by_its_table():
    from tests.hw.test_ir import residual_cnn

    problems = get_backend("hls4ml").supports(residual_cnn())
    assert problems == [
        "add (add): not built by the hls4ml backend", "cat (concat): not built by the hls4ml backend",
        "q1 (quant): its result feeds 3 layers; the hls4ml backend builds a chain of layers (no branches)"]


def test_backend_options_list_map_and_the_earlier_top_level_fields():
    from pydantic import ValidationError

    assert HwgenConfig().backend("hls4ml").io_type == "auto"
    mapped = HwgenConfig(backends={"hls4ml": {"io_type": "io_parallel", "reuse_factor": {"Dense_MatMul_0": 4}}})
    assert mapped.backend("hls4ml").reuse_factor == {"Dense_MatMul_0": 4}
    earlier = HwgenConfig(backends=["hls4ml"], io_type="io_stream", strategy="resource")
    assert (earlier.backend("hls4ml").io_type, earlier.backend("hls4ml").strategy) == ("io_stream", "resource")
    assert earlier.io_type is None  # one place holds the value
    assert HwgenConfig.model_validate(earlier.model_dump(mode="json")).backend("hls4ml").strategy == "resource"
    with pytest.raises(ValidationError, match="hwgen.io_type and hwgen.backends.hls4ml.io_type are both set"):
        HwgenConfig(backends={"hls4ml": {"io_type": "io_stream"}}, io_type="io_parallel")
    with pytest.raises(ValidationError, match=r"backends.hls4ml.reuse_factor: .*reuse factors are integers >= 1"):
        HwgenConfig(backends={"hls4ml": {"reuse_factor": 0}})
