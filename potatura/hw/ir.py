"""The hardware IR: a quantized network as integer codes and fixed-point types, backend-neutral.

Read by every stage after quant (docs/ARCHITECTURE.md, section "The hardware IR"):

- `Graph`: layers in topological order forming a DAG (a layer names its producers in `inputs`),
  plus the accelerator's I/O contract (`IOSpec`): shapes per sample, layout, and the encoding of
  the words (integer codes of a FixedType: value = code * 2**-frac).
- `Layer`: one operation (`Op`) with its shapes (channels-last, no batch; a model without spatial
  layers keeps its (C, H, W) input, layout NCHW), its types and, for
  CONV2D/DENSE, integer weight and bias codes (int64; conv weights (O, KH, KW, I), dense
  (n_in, n_out)). Attributes (kernel, stride, pads (top, left, bottom, right), ...) live in
  `attrs`, a JSON-safe dict.
- `Design`: a graph as one backend builds it on one board: clock, per-layer choices (reuse
  factor, strategy, io type, ...), FIFO depths and whatever else the backend records.

`save_design(design, dir)` writes dir/design.json and dir/design_weights.npz (int64 codes,
loaded with allow_pickle=False); `load_design(dir)` reads them back, equal to what was saved.

numpy and the standard library only: the simulator, the emulated board and the board-side
driver import this module (Python 3.10, numpy 1.x compatible).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from potatura.errors import DataError
from potatura.hw.types import FixedType
from potatura.artifacts import npz_read_error

DESIGN_FORMAT = "potatura-design/1"
DESIGN_FILE = "design.json"
WEIGHTS_FILE = "design_weights.npz"
LAYOUTS = ("NHWC", "NCHW", "flat")
ENCODING = "integer codes of type"


class GraphError(DataError):
    """A graph or design file that breaks the IR's rules: the message names the layer and the rule."""


class Op(str, Enum):
    """Operations of the IR. Values are the names design.json uses."""

    INPUT = "input"  # the accelerator's input: result_type is the input encoding
    QUANT = "quant"  # requantize/cast to result_type (round, saturate)
    CONV2D = "conv2d"  # attrs: kernel (KH, KW), stride (SH, SW), pads (top, left, bottom, right)
    DENSE = "dense"
    RELU = "relu"
    MAXPOOL2D = "maxpool2d"  # attrs: kernel, stride, pads
    AVGPOOL2D = "avgpool2d"  # attrs: kernel, stride, pads
    GLOBAL_AVGPOOL = "global_avgpool"
    ADD = "add"  # element-wise sum of two or more producers of one shape
    CONCAT = "concat"  # along the channel (last) axis
    FLATTEN = "flatten"  # -> (n,); attrs: order "row-major" (default: as stored) or "CHW" ((H, W, C) read channel-major)


WEIGHTED = (Op.CONV2D, Op.DENSE)
_TYPE_FIELDS = ("input_type", "result_type", "weight_type", "bias_type", "accum_type")


def _json_safe(value: Any) -> Any:
    """Tuples -> lists, numpy scalars -> Python: attrs compare equal after a JSON round trip."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    return value


def _codes(array: np.ndarray | None, what: str) -> np.ndarray | None:
    if array is None:
        return None
    array = np.asarray(array)
    if array.dtype.kind not in "iu" or (array.dtype.kind == "u" and array.dtype.itemsize >= 8):
        raise GraphError(f"{what}: integer codes expected, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


@dataclass(eq=False)
class Layer:
    """One IR operation. Shapes are channels-last without batch: (H, W, C) or (n,)."""

    name: str  # stable and backend-neutral (the QONNX node it came from)
    op: Op
    inputs: tuple[str, ...]  # producer layer names, in operand order
    in_shapes: tuple[tuple[int, ...], ...]  # one per input
    out_shape: tuple[int, ...]
    input_type: FixedType | None = None  # type of the first input (the others: their producers' result_type)
    result_type: FixedType | None = None
    weight_type: FixedType | None = None
    bias_type: FixedType | None = None
    accum_type: FixedType | None = None
    weight_codes: np.ndarray | None = field(default=None, repr=False)  # int64; conv (O,KH,KW,I), dense (n_in,n_out)
    bias_codes: np.ndarray | None = field(default=None, repr=False)  # int64 (n_out,)
    attrs: dict = field(default_factory=dict)  # JSON-safe: kernel, stride, pads, source nodes, backend notes

    def __post_init__(self) -> None:
        self.op = Op(self.op)
        self.inputs = tuple(str(i) for i in self.inputs)
        self.in_shapes = tuple(tuple(int(d) for d in s) for s in self.in_shapes)
        self.out_shape = tuple(int(d) for d in self.out_shape)
        self.weight_codes = _codes(self.weight_codes, f"layer {self.name} weight_codes")
        self.bias_codes = _codes(self.bias_codes, f"layer {self.name} bias_codes")
        self.attrs = _json_safe(self.attrs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Layer):
            return NotImplemented
        for name in ("name", "op", "inputs", "in_shapes", "out_shape", *_TYPE_FIELDS, "attrs"):
            if getattr(self, name) != getattr(other, name):
                return False
        for name in ("weight_codes", "bias_codes"):
            a, b = getattr(self, name), getattr(other, name)
            if (a is None) != (b is None) or (a is not None and (a.shape != b.shape or not np.array_equal(a, b))):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    # --- derived facts (never stored twice) ---
    @property
    def in_shape(self) -> tuple[int, ...]:
        """The first input's shape (the output shape for INPUT)."""
        return self.in_shapes[0] if self.in_shapes else self.out_shape

    @property
    def has_weights(self) -> bool:
        return self.op in WEIGHTED

    @property
    def kernel(self) -> tuple[int, int]:
        return tuple(self.attrs.get("kernel", (1, 1)))

    @property
    def stride(self) -> tuple[int, int]:
        return tuple(self.attrs.get("stride", (1, 1)))

    @property
    def pads(self) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) zero padding."""
        return tuple(self.attrs.get("pads", (0, 0, 0, 0)))

    @property
    def n_in(self) -> int:
        """Inputs of one matrix-vector product: KH*KW*C for a conv, n_in for a dense layer."""
        if self.op == Op.CONV2D:
            return int(self.kernel[0] * self.kernel[1] * self.in_shape[-1])
        if self.op == Op.DENSE and self.weight_codes is not None:
            return int(self.weight_codes.shape[0])
        return 0

    @property
    def n_out(self) -> int:
        if self.op in WEIGHTED and self.weight_codes is not None:
            return int(self.weight_codes.shape[0 if self.op == Op.CONV2D else 1])
        return 0

    @property
    def n_weights(self) -> int:
        return self.n_in * self.n_out

    @property
    def n_zeros(self) -> int:
        """Zero weight codes (multiplications a constant-weight datapath drops)."""
        return int(np.count_nonzero(self.weight_codes == 0)) if self.has_weights else 0

    @property
    def out_pixels(self) -> int:
        """Matrix-vector products per sample: output pixels of a conv, 1 for a dense layer."""
        if self.op == Op.CONV2D:
            return int(self.out_shape[0] * self.out_shape[1])
        return 1

    # --- serialization ---
    def to_dict(self, weight_keys: dict[str, str] | None = None) -> dict:
        """JSON form; codes are referenced by their key in the weights npz (`weight_keys`: field -> key)."""
        out: dict[str, Any] = {"name": self.name, "op": self.op.value, "inputs": list(self.inputs),
                               "in_shapes": [list(s) for s in self.in_shapes], "out_shape": list(self.out_shape)}
        for name in _TYPE_FIELDS:
            t = getattr(self, name)
            out[name] = t.to_dict() if t is not None else None
        for name, key in (weight_keys or {}).items():
            out[name] = key
        out["attrs"] = self.attrs
        return out

    @staticmethod
    def from_dict(data: dict, arrays: dict[str, np.ndarray] | None = None) -> Layer:
        where = f"layer {data.get('name')!r}"
        try:
            types: dict[str, Any] = {n: FixedType.from_dict(data[n]) if data.get(n) is not None else None
                                     for n in _TYPE_FIELDS}
            codes: dict[str, Any] = {}
            for name in ("weight_codes", "bias_codes"):
                key = data.get(name)
                if key is None:
                    codes[name] = None
                    continue
                if arrays is None or key not in arrays:
                    raise GraphError(f"{where}: {name} refers to {key!r}, which the weights file does not hold")
                codes[name] = arrays[key]
            return Layer(name=data["name"], op=Op(data["op"]), inputs=tuple(data["inputs"]),
                         in_shapes=tuple(tuple(s) for s in data["in_shapes"]), out_shape=tuple(data["out_shape"]),
                         attrs=data.get("attrs") or {}, **types, **codes)
        except KeyError as exc:
            raise GraphError(f"{where}: missing field {exc}") from None
        except ValueError as exc:
            raise GraphError(f"{where}: {exc}") from None


@dataclass
class IOSpec:
    """One side of the accelerator's I/O contract, per sample (no batch axis).

    The words are integer codes of `type` (value = code * 2**-type.frac) in `layout` order:
    NHWC (channels-last; the host transposes its NCHW tensors), NCHW (a model without spatial
    layers that takes its input as trained, (C, H, W) flattened by the accelerator) or flat (a vector).
    """

    layer: str  # the INPUT layer, or the layer whose result is the output
    shape: tuple[int, ...]
    layout: str  # NHWC | NCHW | flat
    type: FixedType
    encoding: str = ENCODING

    def __post_init__(self) -> None:
        self.shape = tuple(int(d) for d in self.shape)
        if self.layout not in LAYOUTS:
            raise GraphError(f"I/O of {self.layer}: layout {self.layout!r}; accepted: {', '.join(LAYOUTS)}")
        if self.encoding != ENCODING:
            raise GraphError(f"I/O of {self.layer}: encoding {self.encoding!r}; accepted: {ENCODING!r}")

    @property
    def size(self) -> int:
        """Words per sample."""
        return int(math.prod(self.shape))

    def to_dict(self) -> dict:
        return {"layer": self.layer, "shape": list(self.shape), "layout": self.layout, "type": self.type.to_dict(),
                "encoding": self.encoding}

    @staticmethod
    def from_dict(data: dict) -> IOSpec:
        try:
            return IOSpec(data["layer"], tuple(data["shape"]), data["layout"], FixedType.from_dict(data["type"]),
                          data.get("encoding", ENCODING))
        except (KeyError, ValueError, TypeError) as exc:
            raise GraphError(f"I/O spec {data!r}: {exc}") from None


@dataclass
class Graph:
    """Layers in topological order (a DAG), with the accelerator's input and output contract.

    attrs holds facts about the source model that are not the accelerator's (e.g.
    input_shape_nchw: the model's own input shape, for hosts that hold NCHW tensors).
    """

    name: str
    layers: list[Layer]
    input: IOSpec
    output: IOSpec
    attrs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.attrs = _json_safe(self.attrs)

    # --- lookups ---
    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer {name!r} in graph {self.name}; layers: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def producers(self, name: str) -> list[Layer]:
        """The layers feeding `name`, in operand order."""
        return [self.layer(i) for i in self.layer(name).inputs]

    def consumers(self, name: str) -> list[Layer]:
        """The layers reading `name`'s result, in graph order (once each)."""
        return [layer for layer in self.layers if name in layer.inputs]

    @property
    def compute_layers(self) -> list[Layer]:
        """CONV2D and DENSE layers: those with weights."""
        return [layer for layer in self.layers if layer.has_weights]

    def ops(self) -> set[Op]:
        return {layer.op for layer in self.layers}

    def bypass(self, name: str, replacement: str) -> None:
        """Remove layer `name`; its consumers (and the output, if it was that) read `replacement` instead.

        For lowering passes that fold a layer into another: the caller keeps types consistent.
        """
        for layer in self.consumers(name):
            layer.inputs = tuple(replacement if i == name else i for i in layer.inputs)
        if self.output.layer == name:
            self.output.layer = replacement
        self.layers.remove(self.layer(name))

    def copy(self) -> Graph:
        """A copy whose layers and attrs can be changed without touching this graph (codes shared, read-only use)."""
        import copy

        layers = [Layer(**{**{f: getattr(layer, f) for f in _LAYER_FIELDS}, "attrs": copy.deepcopy(layer.attrs)})
                  for layer in self.layers]
        return Graph(self.name, layers, IOSpec(**vars(self.input)), IOSpec(**vars(self.output)),
                     copy.deepcopy(self.attrs))

    # --- checks ---
    def validate(self) -> Graph:
        """Check the IR's rules; raise GraphError naming the layer and the broken rule. Returns self."""
        seen: dict[str, Layer] = {}
        if not self.layers:
            raise GraphError(f"graph {self.name}: no layers")
        for index, layer in enumerate(self.layers):
            where = f"graph {self.name}, layer {layer.name!r} ({layer.op.value})"
            if layer.name in seen:
                raise GraphError(f"{where}: the name is used twice")
            if (layer.op == Op.INPUT) != (index == 0):
                raise GraphError(f"{where}: the first layer, and only it, is the INPUT layer")
            if layer.op != Op.INPUT and not layer.inputs:
                raise GraphError(f"{where}: no inputs")
            if len(layer.in_shapes) != len(layer.inputs):
                raise GraphError(f"{where}: {len(layer.inputs)} inputs but {len(layer.in_shapes)} input shapes")
            for producer, shape in zip(layer.inputs, layer.in_shapes):
                if producer not in seen:
                    raise GraphError(f"{where}: input {producer!r} is not an earlier layer (layers must be in "
                                     "topological order; the graph must be a DAG)")
                if seen[producer].out_shape != shape:
                    raise GraphError(f"{where}: input {producer!r} gives shape {list(seen[producer].out_shape)}, "
                                     f"the layer takes {list(shape)}")
            if layer.result_type is None:
                raise GraphError(f"{where}: no result_type")
            if layer.inputs and layer.input_type != seen[layer.inputs[0]].result_type:
                raise GraphError(f"{where}: input_type {layer.input_type} is not the result type of "
                                 f"{layer.inputs[0]!r} ({seen[layer.inputs[0]].result_type})")
            _check_op(layer, where)
            seen[layer.name] = layer
        first = self.layers[0]
        if self.input.layer != first.name or self.input.shape != first.out_shape or self.input.type != first.result_type:
            raise GraphError(f"graph {self.name}: the input spec ({self.input.layer}, {list(self.input.shape)}, "
                             f"{self.input.type}) does not describe the INPUT layer {first.name!r}")
        if self.output.layer not in seen:
            raise GraphError(f"graph {self.name}: output layer {self.output.layer!r} does not exist")
        out = seen[self.output.layer]
        if self.output.shape != out.out_shape or self.output.type != out.result_type:
            raise GraphError(f"graph {self.name}: the output spec ({list(self.output.shape)}, {self.output.type}) "
                             f"does not describe layer {out.name!r} ({list(out.out_shape)}, {out.result_type})")
        used = {name for layer in self.layers for name in layer.inputs} | {self.output.layer}
        dead = [layer.name for layer in self.layers if layer.name not in used]
        if dead:
            raise GraphError(f"graph {self.name}: layer(s) {', '.join(dead)} feed nothing and are not the output")
        return self

    # --- serialization ---
    def to_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-safe dict, {npz key: int64 codes})."""
        arrays: dict[str, np.ndarray] = {}
        layers = []
        for index, layer in enumerate(self.layers):
            keys = {}
            for name in ("weight_codes", "bias_codes"):
                codes = getattr(layer, name)
                if codes is not None:
                    key = f"layer{index}_{name}"
                    arrays[key] = codes
                    keys[name] = key
            layers.append(layer.to_dict(keys))
        return ({"name": self.name, "input": self.input.to_dict(), "output": self.output.to_dict(),
                 "attrs": self.attrs, "layers": layers}, arrays)

    @staticmethod
    def from_dict(data: dict, arrays: dict[str, np.ndarray] | None = None) -> Graph:
        try:
            return Graph(data["name"], [Layer.from_dict(d, arrays) for d in data["layers"]],
                         IOSpec.from_dict(data["input"]), IOSpec.from_dict(data["output"]), data.get("attrs") or {})
        except KeyError as exc:
            raise GraphError(f"graph: missing field {exc}") from None


_LAYER_FIELDS = ("name", "op", "inputs", "in_shapes", "out_shape", *_TYPE_FIELDS, "weight_codes", "bias_codes")


def conv_out_hw(in_hw: tuple[int, int], kernel, stride, pads) -> tuple[int, int]:
    """Output (H, W) of a window op: floor((H + top + bottom - KH) / SH) + 1 per axis."""
    return ((in_hw[0] + pads[0] + pads[2] - kernel[0]) // stride[0] + 1,
            (in_hw[1] + pads[1] + pads[3] - kernel[1]) // stride[1] + 1)


def _check_op(layer: Layer, where: str) -> None:
    """Shape and code rules of one op."""
    op, shape, out = layer.op, layer.in_shape, layer.out_shape
    if op in (Op.CONV2D, Op.MAXPOOL2D, Op.AVGPOOL2D):
        if len(shape) != 3 or len(out) != 3:
            raise GraphError(f"{where}: takes and gives (H, W, C) tensors, got {list(shape)} -> {list(out)}")
        kernel, stride, pads = layer.kernel, layer.stride, layer.pads
        if len(kernel) != 2 or len(stride) != 2 or len(pads) != 4 or min(*kernel, *stride) < 1 or min(pads) < 0:
            raise GraphError(f"{where}: attrs kernel (KH, KW) >= 1, stride (SH, SW) >= 1, pads (top, left, "
                             f"bottom, right) >= 0 expected, got {kernel}, {stride}, {pads}")
        hw = conv_out_hw(shape[:2], kernel, stride, pads)
        channels = layer.n_out if op == Op.CONV2D else shape[2]
        if op == Op.CONV2D:
            w = layer.weight_codes
            if w is None or w.ndim != 4 or tuple(w.shape[1:]) != (*kernel, shape[2]):
                raise GraphError(f"{where}: weight codes of shape (O, {kernel[0]}, {kernel[1]}, {shape[2]}) expected, "
                                 f"got {None if w is None else list(w.shape)}")
        if out != (*hw, channels):
            raise GraphError(f"{where}: output shape {list(out)}, expected {[*hw, channels]}")
    elif op == Op.DENSE:
        w = layer.weight_codes
        if len(shape) != 1 or w is None or w.ndim != 2 or w.shape[0] != shape[0] or out != (w.shape[1],):
            raise GraphError(f"{where}: (n_in,) -> (n_out,) with weight codes (n_in, n_out) expected, got "
                             f"{list(shape)} -> {list(out)}, weights {None if w is None else list(w.shape)}")
    elif op in (Op.QUANT, Op.RELU):
        if out != shape:
            raise GraphError(f"{where}: element-wise, output shape {list(out)} differs from input {list(shape)}")
    elif op == Op.GLOBAL_AVGPOOL:
        if len(shape) != 3 or out != (shape[2],):
            raise GraphError(f"{where}: (H, W, C) -> (C,) expected, got {list(shape)} -> {list(out)}")
    elif op == Op.ADD:
        if len(layer.in_shapes) < 2 or any(s != out for s in layer.in_shapes):
            raise GraphError(f"{where}: two or more inputs of the output's shape {list(out)} expected, got "
                             f"{[list(s) for s in layer.in_shapes]}")
    elif op == Op.CONCAT:
        shapes = layer.in_shapes
        if len(shapes) < 2 or any(s[:-1] != out[:-1] for s in shapes) or sum(s[-1] for s in shapes) != out[-1]:
            raise GraphError(f"{where}: inputs joined along the last axis must give {list(out)}, got "
                             f"{[list(s) for s in shapes]}")
    elif op == Op.FLATTEN and (out != (math.prod(shape),) or layer.attrs.get("order", "row-major") not in ("row-major", "CHW")):
        raise GraphError(f"{where}: flattens {list(shape)} to ({math.prod(shape)},) in order row-major or CHW, "
                         f"got {list(out)}, order {layer.attrs.get('order')!r}")
    if layer.has_weights:
        for name, ftype in (("weight_codes", layer.weight_type), ("bias_codes", layer.bias_type)):
            codes = getattr(layer, name)
            if codes is None:
                continue
            if ftype is None:
                raise GraphError(f"{where}: {name} without a type")
            if codes.size and (codes.min() < ftype.min_code or codes.max() > ftype.max_code):
                raise GraphError(f"{where}: {name} in [{codes.min()}, {codes.max()}] exceed {ftype} "
                                 f"[{ftype.min_code}, {ftype.max_code}]")
        if layer.bias_codes is not None and layer.bias_codes.shape != (layer.n_out,):
            raise GraphError(f"{where}: {layer.n_out} bias codes expected, got shape {list(layer.bias_codes.shape)}")
        if layer.weight_type is None or layer.accum_type is None:
            raise GraphError(f"{where}: weight_type and accum_type are required")
    elif layer.weight_codes is not None or layer.bias_codes is not None:
        raise GraphError(f"{where}: only conv2d and dense layers carry weight codes")


@dataclass
class Design:
    """A graph as one backend builds it on one board (what a generated project holds).

    layer_choices: IR layer name -> the backend's choice for it (reuse_factor, strategy, io_type,
    parallelization_factor, ...); fifo_depths: stream name -> depth in words; backend_info:
    anything else the backend records (free-form, JSON-safe).
    """

    graph: Graph
    backend: str
    board: str
    clock_mhz: float
    layer_choices: dict[str, dict] = field(default_factory=dict)
    fifo_depths: dict[str, int] = field(default_factory=dict)
    backend_info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.clock_mhz = float(self.clock_mhz)
        self.layer_choices = _json_safe(self.layer_choices)
        self.fifo_depths = {str(k): int(v) for k, v in self.fifo_depths.items()}
        self.backend_info = _json_safe(self.backend_info)

    def to_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        graph, arrays = self.graph.to_dict()
        return ({"format": DESIGN_FORMAT, "backend": self.backend, "board": self.board, "clock_mhz": self.clock_mhz,
                 "layer_choices": self.layer_choices, "fifo_depths": self.fifo_depths,
                 "backend_info": self.backend_info, "graph": graph, "weights_file": WEIGHTS_FILE}, arrays)


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file beside `path` and rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_design(design: Design, project_dir: str | os.PathLike) -> Path:
    """Write project_dir/design.json and project_dir/design_weights.npz; return the json's path.

    The graph is validated first: an invalid design is never written.
    """
    design.graph.validate()
    project_dir = Path(project_dir)
    doc, arrays = design.to_dict()

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.ascontiguousarray(v, dtype=np.int64) for k, v in arrays.items()})  # type: ignore[arg-type]

    _atomic_write(project_dir / WEIGHTS_FILE, write_npz)
    _atomic_write(project_dir / DESIGN_FILE, lambda tmp: tmp.write_text(json.dumps(doc, indent=1) + "\n"))
    return project_dir / DESIGN_FILE


def load_design(project_dir: str | os.PathLike) -> Design:
    """Read the Design in project_dir (design.json + design_weights.npz); errors name the file."""
    project_dir = Path(project_dir)
    path = project_dir / DESIGN_FILE
    if not path.is_file():
        raise DataError(f"{path}: no design.json (is {project_dir} a hwgen project directory?)")
    try:
        doc = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != DESIGN_FORMAT:
        raise DataError(f"{path}: not a potatura design (expected format {DESIGN_FORMAT})")
    weights = project_dir / doc.get("weights_file", WEIGHTS_FILE)
    arrays: dict[str, np.ndarray] = {}
    if weights.is_file():
        try:
            with np.load(weights, allow_pickle=False) as data:
                arrays = {k: np.asarray(data[k]) for k in data.files}
        except (OSError, ValueError) as exc:
            raise npz_read_error(weights, exc) from None
    try:
        graph = Graph.from_dict(doc["graph"], arrays)
        graph.validate()
        return Design(graph=graph, backend=doc["backend"], board=doc["board"], clock_mhz=doc["clock_mhz"],
                      layer_choices=doc.get("layer_choices") or {}, fifo_depths=doc.get("fifo_depths") or {},
                      backend_info=doc.get("backend_info") or {})
    except GraphError as exc:
        raise GraphError(f"{path}: {exc}") from None
    except KeyError as exc:
        raise DataError(f"{path}: missing field {exc}") from None
