"""Type stub: the names this package resolves lazily (lazy_loader.attach_stub reads it)."""

__all__ = ["predict_patches", "load_model", "list_models", "default_model_name", "Localizer", "detect_frame",
           "load_detector"]

from .detector import detect_frame, load_detector
from .files import Localizer, default_model_name, list_models, load_model
from .inference import predict_patches
