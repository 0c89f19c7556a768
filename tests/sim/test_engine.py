"""The timing engine and module models on hand-built designs: RF scaling, deadlocks, FIFO sizing, functions."""

import dataclasses

import numpy as np
import pytest

from potatura.hw.types import FixedType
from potatura.sim import fixed
from potatura.sim.api import Accelerator
from potatura.sim.engine import Fifo, Module, Step, simulate
from potatura.sim.errors import DeadlockError
from tests.sim.designs import lenet_design, residual_design


def test_two_stage_pipeline_cycles():
    """A producer at II 1 feeding a consumer at II 2 through a FIFO of depth 2: writes stall exactly."""
    src = Module("src", "x", [Step(1, 1, (), (0,))] * 10)
    slow = Module("slow", "x", [Step(2, 1, (0,), (1,))] * 10)
    sink = Module("sink", "x", [Step(1, 0, (1,), ())] * 10)
    fifos = [Fifo("a", None, tokens_per_sample=10), Fifo("b", None, tokens_per_sample=10)]
    free = simulate([src, slow, sink], fifos)
    assert free.writes[0].tolist() == list(range(1, 11))
    assert free.reads[0].tolist() == list(range(2, 21, 2))
    assert free.max_occupancy(0) == 6
    bounded = simulate([src, slow, sink], fifos, depths=[2, None])
    # token k >= 2 waits for token k - 2 to be read (+1 cycle): 1, 2, 3, 5, 7, ...
    assert bounded.writes[0].tolist() == [1, 2, 3, 5, 7, 9, 11, 13, 15, 17]
    assert bounded.reads[1].tolist() == free.reads[1].tolist()  # the consumer sets the pace either way
    assert bounded.max_occupancy(0) == 2
    assert bounded.stall_out[0] == 7


@pytest.mark.parametrize("io_type", ["io_stream", "io_parallel"])
def test_doubling_the_conv_reuse_factor(io_type):
    """The conv is the bottleneck: its II per pixel (io_stream) or per sample (io_parallel) is RF-bound,
    so doubling RF from 2 to 4 adds pixels * 2 cycles to the interval, as the model's per-layer II says."""
    reports = {rf: Accelerator(lenet_design(io_type, conv_rf=rf)).cycles(batch=3) for rf in (2, 4)}
    conv = {rf: next(layer for layer in r.per_layer if layer["name"] == "conv") for rf, r in reports.items()}
    if io_type == "io_stream":
        assert conv[2]["ii"] == 2 and conv[4]["ii"] == 4 and conv[4]["trip_count"] == 64  # one step per input pixel
        assert reports[2].interval_cycles == 64 * 2
        assert reports[4].interval_cycles == 64 * 4
    else:
        assert conv[2]["ii"] == 36 * 2 and conv[4]["ii"] == 36 * 4  # 36 output pixels, II = RF each
        assert reports[2].interval_cycles == 72  # the AXI input copy (64 words) is faster
        assert reports[4].interval_cycles == 144
    # Latency grows by the conv's own latency growth (nothing else changed).
    assert reports[4].latency_cycles - reports[2].latency_cycles == pytest.approx(
        conv[4]["latency"] - conv[2]["latency"], abs=2 * 2)


def test_too_shallow_fifo_is_a_deadlock_naming_it():
    acc = Accelerator(residual_design({"relu->add": 1}))
    with pytest.raises(DeadlockError, match="relu->add") as info:
        acc.cycles(batch=1)
    assert info.value.fifo == "relu->add"
    assert info.value.cycle > 0
    # The sized depth of that FIFO runs without a deadlock and keeps the unbounded timing.
    free = Accelerator(residual_design())
    sized = free.size_fifos()
    assert sized["relu->add"] > 1
    ok = Accelerator(residual_design(sized)).cycles(batch=3, size_fifos=False)
    unbounded = free.trace(3, [None] * len(free.network.fifos))
    assert (ok.latency_cycles, ok.interval_cycles) == free._latency_interval(unbounded, 3)[:2]
    too_small = dict(sized, **{"relu->add": sized["relu->add"] - 1})
    try:
        worse = Accelerator(residual_design(too_small)).cycles(batch=3, size_fifos=False)
        assert (worse.latency_cycles, worse.interval_cycles) != (ok.latency_cycles, ok.interval_cycles)
    except DeadlockError as exc:
        assert exc.fifo == "relu->add"


def test_fifo_sizing_reports_and_batch_totals():
    acc = Accelerator(lenet_design("io_stream", conv_rf=2))
    r = acc.cycles(batch=4)
    assert r.total_cycles == r.latency_cycles + 3 * r.interval_cycles
    by_name = {f["name"]: f for f in r.fifos}
    assert set(by_name) == {"input", "conv", "relu", "pool", "dense"}
    for f in r.fifos:
        assert 1 <= f["sized_depth"] <= max(1, f["unbounded_max_occupancy"])
    d = r.to_dict()
    assert d["latency_seconds"] == pytest.approx(r.latency_cycles / 100e6)
    assert r.dma["bytes_in"] == 64 * 4 and r.dma["cycles_in"] >= 64


def _exact(layer_fn, *arrays):
    return layer_fn(*[np.asarray(a, dtype=object) for a in arrays])


def test_residual_functional_model_is_exact_integer_arithmetic():
    design = residual_design()
    acc = Accelerator(design)
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (7, 6, 6, 2))
    y = acc.run(x)
    g = design.graph
    conv, add = g.layer("conv"), g.layer("add")
    # Reference with Python ints: relu, padded conv, requantize (round half even, saturate), add.
    r = np.maximum(x, 0)
    rp = np.pad(r, ((0, 0), (1, 1), (1, 1), (0, 0))).astype(object)
    w = conv.weight_codes.astype(object)
    out = np.zeros((7, 6, 6, 2), dtype=object)
    for i in range(6):
        for j in range(6):
            win = rp[:, i:i + 3, j:j + 3, :]
            out[:, i, j, :] = np.tensordot(win, w, axes=([1, 2, 3], [1, 2, 3])) * 2 + conv.bias_codes * 2 ** 5
    # Products have 4 + 7 = 11 fractional bits, the bias 7, the accumulator 12; requant to I8 (4 bits).
    q = fixed.cast(out, conv.accum_type.frac, g.layer("requant").result_type)
    s = q + r  # both 4 fractional bits; the sum type <10, 6> wraps (never needed here: |s| < 512)
    expected = s
    assert add.result_type == FixedType(True, 10, 6)
    assert np.array_equal(y, expected.reshape(7, -1).astype(np.int64))


def test_avgpool_concat_global_pool_functions():
    from potatura.hw.ir import Layer, Op
    from potatura.sim import functional

    t = FixedType(True, 8, 4)
    acc_t = FixedType(True, 16, 12)  # 4 fractional bits, as the input: the division alone rounds
    x = np.random.default_rng(2).integers(-128, 128, (3, 4, 4, 2))
    pool = Layer("p", Op.AVGPOOL2D, ("x",), ((4, 4, 2),), (2, 2, 2), input_type=t, result_type=t, accum_type=acc_t,
                 attrs={"kernel": [2, 2], "stride": [2, 2], "pads": [0, 0, 0, 0]})
    got = functional.run_layer(pool, [x], [t])
    sums = x.reshape(3, 2, 2, 2, 2, 2).sum(axis=(2, 4))
    assert np.array_equal(got, np.trunc(sums / 4).astype(np.int64))  # C division truncates towards zero
    gp = Layer("g", Op.GLOBAL_AVGPOOL, ("x",), ((4, 4, 2),), (2,), input_type=t, result_type=t, accum_type=acc_t)
    assert np.array_equal(functional.run_layer(gp, [x], [t]), np.trunc(x.sum(axis=(1, 2)) / 16).astype(np.int64))
    u = FixedType(False, 6, 2)
    cat = Layer("c", Op.CONCAT, ("x", "y"), ((4, 4, 2), (4, 4, 1)), (4, 4, 3), input_type=t, result_type=t)
    y = np.random.default_rng(3).integers(0, 64, (3, 4, 4, 1))
    got = functional.run_layer(cat, [x, y], [t, u])
    assert np.array_equal(got[..., :2], x) and np.array_equal(got[..., 2:], np.clip(y * 4, -128, 127) * 0 +
                                                                    fixed.cast(y, u, t))


def test_unbounded_and_declared_depths_are_reported():
    d = lenet_design("io_stream")
    d = dataclasses.replace(d, fifo_depths={"input": 3})
    r = Accelerator(d).cycles(batch=2)
    assert {f["name"]: f["depth"] for f in r.fifos}["input"] == 3


def test_sized_depths_written_back_keep_the_timing():
    """What hwgen writes into a project: sized depths keyed like Design.fifo_depths, same latency and interval."""
    from potatura.sim.api import sized_fifo_depths

    design = lenet_design("io_stream", conv_rf=2)
    sized = sized_fifo_depths(design)
    assert set(sized) == {"input", "conv", "relu", "pool", "dense"}
    default = Accelerator(design).cycles(batch=3, size_fifos=False)
    resized = Accelerator(dataclasses.replace(design, fifo_depths=sized)).cycles(batch=3, size_fifos=False)
    assert (resized.latency_cycles, resized.interval_cycles) == (default.latency_cycles, default.interval_cycles)
    assert sum(sized.values()) < sum(f["depth"] for f in default.fifos)


def test_design_cycles_for_the_fitter():
    from potatura.sim.api import design_cycles

    out = design_cycles(lenet_design("io_stream", conv_rf=2))
    assert out["interval_cycles"] == 128 and out["core_interval_cycles"] == 128
    assert out["per_layer_cycles"]["conv"] == 64 * 2  # 64 input pixels at II 2
    assert out["latency_cycles"] > out["core_latency_cycles"] > 0  # the AXI wrapper adds the word copies
