"""The model zoo: every model is built from (input_shape, num_classes) and traces with torch.fx."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from potatura.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

# name -> (module, class, fixed keyword options). Classes are imported when a model is built:
# the flow-file schema checks names here and must not pay for torch.
_ZOO: dict[str, tuple[str, str, dict]] = {
    "lenet300": ("potatura.models.lenet", "LeNet300", {}),
    "lenet5": ("potatura.models.lenet", "LeNet5", {}),
    "vgg-small": ("potatura.models.vgg", "VGG", {"layout": "vgg-small"}),
    "vgg11": ("potatura.models.vgg", "VGG", {"layout": "vgg11"}),
    "vgg16": ("potatura.models.vgg", "VGG", {"layout": "vgg16"}),
    "resnet8": ("potatura.models.resnet", "ResNetCifar", {"depth": 8}),
    "resnet20": ("potatura.models.resnet", "ResNetCifar", {"depth": 20}),
    "resnet32": ("potatura.models.resnet", "ResNetCifar", {"depth": 32}),
    "densenet-small": ("potatura.models.densenet", "SmallDenseNet", {}),
}


def available_models() -> list[str]:
    return list(_ZOO)


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int, **options: Any) -> nn.Module:
    """Build a zoo model for inputs of shape (C, H, W) and `num_classes` outputs."""
    if name not in _ZOO:
        raise ConfigError(f"model.name: unknown model {name!r}; accepted: {', '.join(_ZOO)}")
    module, cls, fixed = _ZOO[name]
    factory = getattr(importlib.import_module(module), cls)
    try:
        return factory(tuple(input_shape), int(num_classes), **{**fixed, **options})
    except TypeError as exc:
        raise ConfigError(f"model.options for {name!r}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None


# -- model files shared by every stage ---------------------------------------------------------
# A zoo model is stored as its spec + state_dict (rebuildable); any other model (after simplify)
# as a description of its torch.fx graph and modules (potatura.module_codec). Both are plain data
# read with torch.load(weights_only=True): loading a model file never runs code from it.

MODEL_FORMAT = "potatura-model/2"
# potatura-model/1 files hold the same spec + state_dict; the /1 files that held a pickled module
# are refused when read (the pickle names code), with a message saying to re-run their stage.
_READABLE_FORMATS = (MODEL_FORMAT, "potatura-model/1")


def save_model_file(path, model: nn.Module, spec: dict | None = None, extra: dict | None = None):
    """Write a model file atomically. `spec` = {name, options, input_shape, num_classes}."""
    from potatura.artifacts import save_torch

    payload: dict = {"format": MODEL_FORMAT, "extra": extra or {}}
    if spec is not None:
        payload["spec"] = spec
        payload["state_dict"] = model.state_dict()
    else:
        from potatura.module_codec import encode_module

        payload["graph"] = encode_module(model)
    return save_torch(path, payload)


def model_from_payload(payload: dict, source: str = "model file") -> nn.Module:
    """The module a model-file payload describes (spec + state_dict, or a graph description)."""
    from potatura.errors import DataError

    if "graph" in payload:
        from potatura.module_codec import decode_module

        return decode_module(payload["graph"], source)
    spec = payload.get("spec")
    if not isinstance(spec, dict) or not isinstance(payload.get("state_dict"), dict):
        raise DataError(f"{source}: the model file holds neither a zoo spec with weights nor a graph")
    model = build_model(spec["name"], tuple(spec["input_shape"]), spec["num_classes"], **spec.get("options", {}))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise DataError(f"{source}: weights do not fit model {spec['name']!r}: {str(exc).splitlines()[0]}") from None
    return model


def load_model_file(path) -> tuple[nn.Module, dict]:
    """Read a model file written by save_model_file; return (model in eval mode, payload)."""
    from potatura.artifacts import load_payload

    payload = load_payload(path, _READABLE_FORMATS, "model file")
    model = model_from_payload(payload, str(path))
    check_finite_weights(model, str(path))
    model.eval()
    return model, payload


def check_finite_weights(model: nn.Module, source: str) -> None:
    """DataError naming the first parameter or buffer holding NaN or infinity (a diverged
    training): no later stage can give exact results from it."""
    import torch

    from potatura.errors import DataError

    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            count = int((~torch.isfinite(t)).sum())
            raise DataError(f"{source}: {name} holds {count} non-finite value{'s' if count > 1 else ''} "
                            f"(NaN or infinity); the model cannot be used (did training diverge?)")
