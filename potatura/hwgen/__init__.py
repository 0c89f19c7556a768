"""hwgen: quantized QONNX model -> accelerator projects per board and backend, checked bit-exact.

Public face:
    read_qonnx(qonnx) -> QonnxGraph          the model in the hardware IR (potatura.hw.ir), backend-neutral
    get_backend(name) -> Backend             supports / lower / fit / generate / verify (potatura.hwgen.backend)
    potatura.hwgen.hls4ml                    the hls4ml backend: read_network, fit_network, generate_project
    STAGE (potatura.hwgen.stage)             the flow stage

Importing this package imports no backend's tool (hls4ml loads when a project is converted).
"""

from potatura.hwgen.backend import Backend, apply_passes, get_backend
from potatura.hwgen.reader import QonnxGraph, read_qonnx

__all__ = ["Backend", "QonnxGraph", "apply_passes", "get_backend", "read_qonnx"]
