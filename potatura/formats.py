"""Format tags of the artifacts stages exchange: one name per kind of file, used by the Stage
records (potatura.flow.Output) so a stage says what it writes and a later stage what it reads.

The tag names the reader that understands the file (docs/ARCHITECTURE.md, "Artifact formats and
safety"); every reader is data-only: no format here runs code from the file.
"""

from __future__ import annotations

MODEL = "potatura-model/2"          # torch.save of plain data: zoo spec + state_dict, or a graph description
BREVITAS = "potatura-brevitas/2"    # float model graph description + quant config + Brevitas state_dict
CHECKPOINT = "potatura-checkpoint"  # training resume state (weights_only torch file)
QONNX = "qonnx"                     # ONNX with QONNX Quant nodes (onnx protobuf)
GOLDEN = "golden-npz"               # npz (allow_pickle=False): x, y, labels, integer codes + exponents
DESIGN = "hw-design"                # design.json + design_weights.npz (potatura.hw.ir)
PROJECT_INDEX = "hwgen-index"       # hwgen/index.json: [{board, backend, path, fits, csim}]
JSON = "json"                       # a JSON document (summaries, metrics, reports)
PNG = "png"
DIRECTORY = "directory"             # a folder of files (hashed as a tree)

ALL = (MODEL, BREVITAS, CHECKPOINT, QONNX, GOLDEN, DESIGN, PROJECT_INDEX, JSON, PNG, DIRECTORY)
