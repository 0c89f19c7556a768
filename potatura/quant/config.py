"""The `quant` section of the flow file: bit widths, scale rules, calibration and QAT."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from potatura._schema import StrictModel


class LayerQuant(StrictModel):
    """Bit widths for one layer (keyed by its module name in the float model, e.g. `conv1`)."""

    weight_bits: Optional[int] = Field(None, ge=2, le=16, description="weight bit width of a conv/linear")
    act_bits: Optional[int] = Field(None, ge=2, le=16, description="output bit width of a ReLU or requantizer")
    bias_bits: Optional[int] = Field(None, ge=8, le=32, description="bias bit width of a conv/linear")


class QuantConfig(StrictModel):
    weight_bits: int = Field(8, ge=2, le=16, description="weight bit width (signed, narrow range)")
    act_bits: int = Field(8, ge=2, le=16, description="activation bit width (ReLU outputs unsigned, others signed)")
    input_bits: Optional[int] = Field(None, ge=2, le=16, description="bit width of the model input; default act_bits")
    bias_bits: Optional[int] = Field(
        32, ge=8, le=32,
        description="bias bit width; its scale is input scale x weight scale (the accumulator's). "
        "null keeps float biases: never exact in hardware, so the model is not hardware-ready",
    )
    scale: Literal["power-of-two", "float"] = Field(
        "power-of-two",
        description="power-of-two scales (fixed point, what hardware backends compute exactly) or "
        "float scales (not hardware-ready)",
    )
    weight_granularity: Literal["per-tensor", "per-channel"] = "per-tensor"
    layers: dict[str, LayerQuant] = Field(
        default_factory=dict,
        description="per-layer bit widths by module name of the float model (inserted requantizers: "
        "input_quant, <node>_quant)",
    )
    calibration_samples: int = Field(512, ge=1, description="training samples used to calibrate activation scales")
    calibration_batch_size: int = Field(256, ge=1)
    bias_correction: bool = Field(False, description="correct biases for the mean quantization error after calibration")
    qat_epochs: int = Field(0, ge=0, description="quantization-aware fine-tuning epochs after calibration (0: PTQ only)")
    qat_lr: float = Field(0.005, gt=0, description="learning rate of quantization-aware fine-tuning")
    qat_batch_size: Optional[int] = Field(None, ge=1, description="default: train.batch_size")
    check_samples: Optional[int] = Field(
        None, ge=1, description="validation samples checked QONNX vs Brevitas and stored as golden IO; default all"
    )
    reference_batch_size: int = Field(256, ge=1, description="batch size of the QONNX reference execution")

