"""hls4ml backend: QONNX network + fit -> hls4ml VivadoAccelerator project, C simulation.

The hls4ml config is built with config_from_onnx_model(granularity='name') and every type is
then set from potatura's own reading of the Quant nodes (potatura.hwgen.reader, lowered by
potatura.hwgen.hls4ml.lowering): nothing is left
to hls4ml's default ap_fixed<16,6>. After conversion the types hls4ml actually uses are checked
against potatura's, layer by layer (`check_types`): a difference is a bug, not a warning.

The VivadoAccelerator backend (axi_stream interface) writes the AXI-stream top level
(<project>_axi.cpp: float words in, float or double words out, one sample per stream packet),
its block-design Tcl and the PYNQ driver. Its axi_lite and axi_master interfaces are not used
(broken in hls4ml 1.3.0). hls_model.compile() builds the C simulation with g++ and the ap_types
headers shipped with hls4ml: no vendor tool needed.
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from potatura.boards.catalog import Board
from potatura.errors import PotaturaError
from potatura.hwgen.hls4ml.compat import HLS4ML_BACKEND
from potatura.hwgen.hls4ml.fitter import FitResult
from potatura.hwgen.hls4ml.lowering import (
    QuantizedNetwork,
    config_key,
    hls_name,
    precisions,
)

PROJECT_NAME = "potatura_accel"
INTERFACE = "axi_stream"


class CsimError(PotaturaError):
    """The generated C++ did not compile: the message names the log with g++'s output."""


@contextlib.contextmanager
def quiet_stdout(log_path: Path | None = None):
    """hls4ml prints its progress on stdout: keep it in a log file instead of the user's terminal."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield buffer
    finally:
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "a") as f:
                f.write(buffer.getvalue())


def axi_output_type(net: QuantizedNetwork) -> str:
    """'float' when every output value converts to float32 exactly, else 'double'."""
    return "float" if net.output_type.float_exact(24) else "double"


def build_config(net: QuantizedNetwork, fit: FitResult, log_path: Path | None = None) -> dict:
    """The hls4ml config: granularity 'name', potatura's exact types, the fitter's RF and strategy."""
    import hls4ml

    with quiet_stdout(log_path):
        config = hls4ml.utils.config.config_from_onnx_model(
            net.model, granularity="name", backend=HLS4ML_BACKEND, default_precision="fixed<16,6>",
            default_reuse_factor=1)
    names = config["LayerName"]

    def set_result(key: str, precision: str) -> None:
        names.setdefault(key, {}).setdefault("Precision", {})["result"] = precision

    set_result(net.input_name, net.input_type.hls())
    for key, precision in net.passthrough.items():
        if precision:
            set_result(key, precision)
    for f in fit.layers:
        layer = f.layer
        entry = names.setdefault(config_key(layer), {})
        entry.setdefault("Precision", {}).update(precisions(layer))
        if layer.has_weights:
            entry["ReuseFactor"] = int(f.estimate.reuse_factor)
            entry["Strategy"] = f.estimate.strategy
    return config


def convert(net: QuantizedNetwork, board: Board, fit: FitResult, project_dir: Path, log_path: Path | None = None):
    """Convert to an hls4ml ModelGraph (VivadoAccelerator, axi_stream) writing into project_dir."""
    import hls4ml

    config = build_config(net, fit, log_path)
    kwargs = dict(board=board.backend_option("hls4ml", "board"), part=board.part, clock_period=round(board.clock_period_ns, 3),
                  io_type=fit.io_type, interface=INTERFACE, driver="python", input_type="float",
                  output_type=axi_output_type(net))
    if board.platform:
        kwargs["platform"] = board.platform
    with quiet_stdout(log_path):
        model = hls4ml.converters.convert_from_onnx_model(
            net.model, output_dir=str(project_dir), project_name=PROJECT_NAME, backend=HLS4ML_BACKEND,
            hls_config=config, **kwargs)
    return model


def _key(precision) -> tuple:
    return (bool(precision.signed), int(precision.width), int(precision.integer),
            str(getattr(precision, "rounding_mode", "TRN")), str(getattr(precision, "saturation_mode", "WRAP")))


def check_types(net: QuantizedNetwork, hls_model) -> list[str]:
    """Differences between the types hls4ml uses and potatura's exact ones (empty: all equal).

    Layers potatura has no type for (transposes, zero padding, reshapes) must not convert: their
    output type must equal their input type.
    """
    backend = hls_model.config.backend
    expected: dict[str, dict[str, str]] = {net.input_name: {"result": net.input_type.hls()}}
    for layer in net.layers:
        expected[hls_name(layer)] = precisions(layer)
    problems = []
    for layer in hls_model.get_layers():
        want = expected.get(layer.name)
        actual = {"result": layer.get_output_variable().type.precision}
        if want is not None and "weight" in want:
            actual["weight"] = layer.get_weights("weight").type.precision
            actual["bias"] = layer.get_weights("bias").type.precision
            actual["accum"] = layer.get_attr("accum_t").precision
        if want is None:
            inputs = layer.get_input_variable() if layer.inputs else None
            if inputs is not None and _key(inputs.type.precision) != _key(actual["result"]):
                problems.append(f"{layer.name} ({layer.class_name}): converts {inputs.type.precision} -> "
                                f"{actual['result']}, expected no conversion")
            continue
        for var, prec in actual.items():
            if var not in want:
                continue
            if _key(backend.convert_precision_string(want[var])) != _key(prec):
                problems.append(f"{layer.name} ({layer.class_name}) {var}: hls4ml uses {prec}, potatura derived "
                                f"{want[var]}")
    return problems


@dataclass
class CsimResult:
    """Bit-exactness of the C simulation against the QONNX integer reference (simulated)."""

    samples: int
    exact_matches: int
    max_abs_difference: float
    max_difference_lsb: float  # in units of the output type's LSB
    argmax_agreement: float
    seconds: float

    @property
    def bit_exact(self) -> bool:
        return self.samples > 0 and self.exact_matches == self.samples

    def to_dict(self) -> dict:
        return {"samples": self.samples, "exact_matches": self.exact_matches,
                "exact_match_rate": self.exact_matches / self.samples if self.samples else None,
                "max_abs_difference": self.max_abs_difference, "max_difference_lsb": self.max_difference_lsb,
                "argmax_agreement": self.argmax_agreement, "bit_exact": self.bit_exact,
                "seconds": round(self.seconds, 3),
                "kind": "simulated: hls4ml C simulation (g++, ap_types) vs QONNX execution"}


def compile_csim(hls_model, log_path: Path) -> float:
    """Build the C simulation library with g++; return the seconds it took."""
    t0 = time.perf_counter()
    try:
        with quiet_stdout(log_path):
            hls_model.compile()
    except Exception as exc:
        raise CsimError(f"hwgen: the hls4ml C simulation of {hls_model.config.get_output_dir()} did not compile "
                        f"({exc}); g++ output in {log_path}") from None
    return time.perf_counter() - t0


def run_csim(hls_model, net: QuantizedNetwork, x_nchw: np.ndarray, reference: np.ndarray) -> tuple[CsimResult, np.ndarray]:
    """Run inputs (N, C, H, W) or (N, F) through the compiled C simulation; compare with `reference`.

    Inputs go in as float64 (float32 values widen exactly), outputs come back as float64: both
    conversions are exact, so any difference is the accelerator's arithmetic.
    """
    x = net.to_channels_last(np.asarray(x_nchw, dtype=np.float32)).astype(np.float64)
    n = len(x)
    t0 = time.perf_counter()
    with quiet_stdout():
        y = np.asarray(hls_model.predict(x), dtype=np.float64).reshape(n, -1)
    seconds = time.perf_counter() - t0
    ref = np.asarray(reference, dtype=np.float64).reshape(n, -1)
    if ref.shape != y.shape:
        raise PotaturaError(f"hwgen csim: reference outputs have shape {ref.shape}, the C simulation gives {y.shape}")
    diff = np.abs(y - ref)
    result = CsimResult(
        samples=n, exact_matches=int(np.sum(np.all(y == ref, axis=1))),
        max_abs_difference=float(diff.max()) if n else 0.0,
        max_difference_lsb=float(diff.max() / net.output_type.lsb) if n else 0.0,
        argmax_agreement=float(np.mean(np.argmax(y, axis=1) == np.argmax(ref, axis=1))) if n else 0.0,
        seconds=seconds)
    return result, y
