"""The hwgen session fixtures (trained, quantized, csim-compiled projects), shared with the simulator tests."""

from tests.hwgen.conftest import (  # noqa: F401  (pytest finds fixtures by name)
    cnn_flow, cnn_qonnx, cnn_report, digits, mlp_quant, mlp_resource_project, quantize_model)
