"""Type stub: the names this package resolves lazily (lazy_loader.attach_stub reads it)."""

__all__ = ["train_model", "TrainConfig", "save_model", "convert_weights", "ship_model", "train_detector",
           "DetectorTrainConfig"]

from .config import TrainConfig
from .detector import DetectorTrainConfig, train_detector
from .files import convert_weights, save_model, ship_model
from .loop import train_model
