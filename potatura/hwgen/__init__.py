"""hwgen: quantized QONNX model -> accelerator projects per board, fitted and checked bit-exact in csim.

Public face:
    read_network(qonnx)                  the layers hls4ml will build, with exact fixed-point types
    fit_network / fit_or_raise(net, board, io_type, max_utilization, reuse_factor, strategy)
                                         per-layer reuse factor and strategy, estimated resources
    generate_project(net, board, out_dir, ...)   the hls4ml project, build files, csim, reports
    STAGE (potatura.hwgen.stage)         the flow stage
"""

from potatura.hwgen.fitter import FitError, FitResult, fit_network, fit_or_raise
from potatura.hwgen.graph import QuantizedNetwork, read_network
from potatura.hwgen.project import generate_project

__all__ = ["read_network", "QuantizedNetwork", "fit_network", "fit_or_raise", "FitResult", "FitError",
           "generate_project"]
