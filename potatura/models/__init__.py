"""The model zoo: every model is built from (input_shape, num_classes) and traces with torch.fx."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from torch import nn

from potatura.errors import ConfigError
from potatura.models.densenet import SmallDenseNet
from potatura.models.lenet import LeNet5, LeNet300
from potatura.models.resnet import ResNetCifar
from potatura.models.vgg import VGG

_ZOO: dict[str, Callable[..., nn.Module]] = {
    "lenet300": LeNet300,
    "lenet5": LeNet5,
    "vgg-small": partial(VGG, layout="vgg-small"),
    "vgg11": partial(VGG, layout="vgg11"),
    "vgg16": partial(VGG, layout="vgg16"),
    "resnet8": partial(ResNetCifar, depth=8),
    "resnet20": partial(ResNetCifar, depth=20),
    "resnet32": partial(ResNetCifar, depth=32),
    "densenet-small": SmallDenseNet,
}


def available_models() -> list[str]:
    return list(_ZOO)


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int, **options: Any) -> nn.Module:
    """Build a zoo model for inputs of shape (C, H, W) and `num_classes` outputs."""
    if name not in _ZOO:
        raise ConfigError(f"model.name: unknown model {name!r}; accepted: {', '.join(_ZOO)}")
    try:
        return _ZOO[name](tuple(input_shape), int(num_classes), **options)
    except TypeError as exc:
        raise ConfigError(f"model.options for {name!r}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None


# -- model files shared by every stage ---------------------------------------------------------
# A zoo model is stored as its spec + state_dict (rebuildable, no pickled code); a model whose
# architecture changed (after simplify) is stored as the pickled module.


def save_model_file(path, model: nn.Module, spec: dict | None = None, extra: dict | None = None):
    """Write a model file atomically. `spec` = {name, options, input_shape, num_classes}."""
    from potatura.artifacts import save_torch

    payload: dict = {"format": "potatura-model/1", "extra": extra or {}}
    if spec is not None:
        payload["spec"] = spec
        payload["state_dict"] = model.state_dict()
    else:
        payload["module"] = model
    return save_torch(path, payload)


def load_model_file(path) -> tuple[nn.Module, dict]:
    """Read a model file written by save_model_file; return (model in eval mode, payload)."""
    from potatura.artifacts import load_payload

    payload = load_payload(path, "potatura-model/1", "model file")
    if "module" in payload:
        model = payload["module"]
    else:
        spec = payload["spec"]
        model = build_model(spec["name"], tuple(spec["input_shape"]), spec["num_classes"], **spec.get("options", {}))
        model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload
