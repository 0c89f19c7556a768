"""Runs inside the NNC environment (numpy<2 + nncodec), never imported by potatura itself.

    python nnc_worker.py params.npz model.nnc decoded.npz report.json

Encodes every float32 array of params.npz with NNCodec's nnc.compress at its defaults
(qp -38, qp_density 2, nonweight_qp -75, dependent quantization, DeepCABAC), writes the
bitstream, decodes it and writes the decoded arrays and a JSON report of the settings.
"""

import inspect
import json
import sys
from importlib import metadata

import numpy as np


def _import_nnc():
    """nncodec imports torchvision at import time, for the dataset loaders of its own use cases
    (ImageNet, CIFAR, VOC), which coding a parameter dict never touches. PyPI's torchvision wheels
    are CUDA builds that cannot load beside the CPU torch this environment holds; when the real
    import fails, empty placeholder modules stand in for those unused loaders."""
    try:
        from nncodec import nnc
        return nnc, "torchvision"
    except (ImportError, OSError, RuntimeError):
        import types

        for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")
                    or m == "nncodec" or m.startswith("nncodec.")]:
            del sys.modules[mod]
        class Unused:
            """Stands for any torchvision object nncodec builds at import time and never uses here."""

            def __init__(self, *args, **kwargs): ...

            def __call__(self, *args, **kwargs):
                return Unused()

            def __getattr__(self, name):
                return Unused()

        class PlaceholderModule(types.ModuleType):
            def __getattr__(self, name):
                if name.startswith("__"):
                    raise AttributeError(name)
                return type(name, (Unused,), {})  # a class: nncodec subclasses some of them

        placeholder = PlaceholderModule("torchvision")
        for sub in ("datasets", "transforms", "models", "ops", "io", "utils"):
            child = PlaceholderModule(f"torchvision.{sub}")
            setattr(placeholder, sub, child)
            sys.modules[f"torchvision.{sub}"] = child
        sys.modules["torchvision"] = placeholder
        from nncodec import nnc
        return nnc, "placeholder (dataset loaders unused)"


def main(src: str, bitstream_path: str, decoded_path: str, report_path: str) -> None:
    nnc, torchvision_state = _import_nnc()

    arrays = np.load(src)
    params = {name: np.ascontiguousarray(arrays[name], dtype=np.float32) for name in arrays.files}
    bitstream = nnc.compress(params, bitstream_path=bitstream_path, return_bitstream=True, verbose=False)
    with open(bitstream_path, "wb") as f:
        f.write(bytes(bitstream))
    decoded = nnc.decompress(bitstream_path, verbose=False)
    np.savez(decoded_path, **{name: np.asarray(decoded[name], dtype=np.float32) for name in params})
    defaults = {k: v.default for k, v in inspect.signature(nnc.compress).parameters.items()
                if k in ("qp", "qp_density", "nonweight_qp", "use_dq", "codebook_mode", "param_opt")}
    with open(report_path, "w") as f:
        json.dump({"nncodec": metadata.version("nncodec"), "settings": defaults, "tensors": len(params),
                   "torchvision": torchvision_state}, f)


if __name__ == "__main__":
    main(*sys.argv[1:5])
