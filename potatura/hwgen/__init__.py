"""hwgen: quantized QONNX model -> accelerator projects per board and backend, checked bit-exact.

Public face:
    read_qonnx(qonnx) -> QonnxGraph          the model in the hardware IR (potatura.hw.ir), backend-neutral
    get_backend(name) -> Backend             supports / lower / fit / generate / verify (potatura.hwgen.backend)
    potatura.hwgen.hls4ml                    the hls4ml backend: read_network, fit_network, generate_project
    STAGE (potatura.hwgen.stage)             the flow stage

Importing this package imports no backend's tool (hls4ml loads when a project is converted).
"""

# Lazy (PEP 562): the flow-file schema imports potatura.hwgen.config, and `potatura --help` or a
# config error should not pay for numpy either (issue 9 item 8).
_EXPORTS = {"Backend": "potatura.hwgen.backend", "apply_passes": "potatura.hwgen.backend",
            "get_backend": "potatura.hwgen.backend", "QonnxGraph": "potatura.hwgen.reader",
            "read_qonnx": "potatura.hwgen.reader"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'potatura.hwgen' has no attribute {name!r}")
