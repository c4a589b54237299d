"""Options of the locate stage (section ``locate`` of the pipeline configuration)."""

from __future__ import annotations

import re
import warnings
from typing import Literal

from pydantic import Field, field_validator

from braggflow.options import OptionSection

__all__ = ["LocateConfig"]


class LocateConfig(OptionSection):
    """Sub-pixel localization (:mod:`braggflow.locate`)."""

    method: Literal["com", "gauss", "pvoigt", "nn"] = Field(
        "com", description="centre of mass, 2D Gaussian fit, 2D pseudo-Voigt fit, or a localizer network ('nn', "
        "see model); 'braggnn' is a deprecated name of 'nn'"
    )
    patch_size: int = Field(11, ge=3, description="patch side in px (odd)")
    model: str | None = Field(
        None, description="nn: shipped model name (locnet-sim-sym4, braggnn-sim, ...; 'braggflow models' lists them) "
        "or model file; null: the default shipped model")
    backend: Literal["auto", "onnx", "torch"] = Field(
        "auto", description="nn: inference engine; 'auto': ONNX Runtime on the CPU (shipped models, no torch "
        "needed), torch on a GPU or for a .pt model file")
    device: str = Field(
        "cpu", description="nn with the torch backend: 'cpu', 'cuda', 'cuda:N' (GPU N), 'mps' (Apple GPU) or 'auto' "
        "(a CUDA GPU when torch sees one, else mps, else the CPU; chosen when a run starts); a GPU needs the "
        "train extra")
    batch_size: int = Field(1024, ge=1, description="nn: patches per inference batch")
    saturated: Literal["fit", "method"] = Field(
        "fit",
        description="peaks with saturated pixels: 'fit' = 2D Gaussian fit without those pixels (com and a network "
        "cannot extrapolate a clipped core); 'method' = the method above",
    )
    extended: Literal["region", "patch"] = Field(
        "region",
        description="peaks whose region does not fit in the patch (streaks, large spots): "
        "'region' = intensity-weighted centroid of the whole region (method 'region'); "
        "'patch' = the method above on the truncated patch",
    )
    deblend: bool = Field(
        False, description="try each peak with one and with two profile components and split blends (flag "
        "BLENDED; braggflow.locate.deblend; ~0.3 ms of CPU a peak with numba); not on frames thresholded upstream "
        "(frames table: thresholded), where the test does not hold")


    @field_validator("method", mode="before")
    @classmethod
    def _deprecated_method_name(cls, value):
        if value == "braggnn":
            warnings.warn("locate.method 'braggnn' is deprecated: it runs the default localizer network, which is "
                          "not BraggNN; use 'nn' (same default model) and choose a network with locate.model",
                          DeprecationWarning, stacklevel=2)
            return "nn"
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps|auto", value):
            raise ValueError(f"{value!r} is not a device: give cpu, cuda, cuda:N (N = 0, 1, ...), mps or auto")
        return value

    @field_validator("patch_size")
    @classmethod
    def _odd_patch(cls, value: int) -> int:
        if value % 2 != 1:
            raise ValueError(f"must be odd (a patch centred on a pixel), got {value}")
        return value
