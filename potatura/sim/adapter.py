"""Designs for the simulator from hwgen's in-memory objects (a QuantizedNetwork and its FitResult).

Projects carry their Design in design.json (potatura.hw.ir.load_design, what `load_project`
reads); this builds the same Design from the objects hwgen holds while it generates a project, so
a caller that has them (tests, the fitter) needs no file.
"""

from __future__ import annotations

from potatura.hw.ir import Design, Graph, IOSpec, Layer, Op

_OPS = {"conv2d": Op.CONV2D, "dense": Op.DENSE, "relu": Op.RELU, "quant": Op.QUANT, "maxpool2d": Op.MAXPOOL2D,
        "flatten": Op.FLATTEN}


def design_from_network(net, fit, board_name: str, clock_mhz: float, io_type: str) -> Design:
    """net: potatura.hwgen.graph.QuantizedNetwork; fit: its FitResult (reuse factors, strategies)."""
    layers = [Layer("input", Op.INPUT, (), (), tuple(net.input_shape), result_type=net.input_type)]
    prev = layers[0]
    choices = {}
    estimates = {f.layer.hls_name: f.estimate for f in fit.layers}
    for src in net.layers:
        op = _OPS[src.kind]
        attrs = {}
        if op in (Op.CONV2D, Op.MAXPOOL2D):
            attrs = {"kernel": list(src.kernel), "stride": list(src.stride), "pads": list(src.pads)}
        if op == Op.MAXPOOL2D:
            attrs["pads"] = [0, 0, 0, 0]
        layer = Layer(src.hls_name, op, (prev.name,), (prev.out_shape,), tuple(src.out_shape),
                      input_type=prev.result_type, result_type=src.result_type, weight_type=src.weight_type,
                      bias_type=src.bias_type if src.bias_codes is not None else None, accum_type=src.accum_type,
                      weight_codes=src.weight_codes, bias_codes=src.bias_codes, attrs=attrs)
        if op == Op.MAXPOOL2D:
            layer.accum_type = prev.result_type
        layers.append(layer)
        est = estimates.get(src.hls_name)
        choice = {"io_type": io_type}
        if est is not None and src.has_weights:
            choice.update(reuse_factor=int(est.reuse_factor), strategy=str(est.strategy))
        choices[src.hls_name] = choice
        prev = layer
    layout = "NHWC" if len(net.input_shape) == 3 else "flat"
    graph = Graph(net.source, layers, IOSpec("input", tuple(net.input_shape), layout, net.input_type),
                  IOSpec(prev.name, tuple(prev.out_shape), "flat" if len(prev.out_shape) == 1 else "NHWC",
                         prev.result_type), {"input_shape_nchw": list(net.input_shape_nchw)})
    graph.validate()
    return Design(graph, "hls4ml", board_name, clock_mhz, choices, {}, {"io_type": io_type})
