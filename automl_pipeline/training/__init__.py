"""Training: device and tensors, batch augmentation, losses, metrics, the deadline-aware loop.

Imports no other project module: it trains any nn.Module on TensorData.
"""
from .device import autocast_context, configure_threads, resolve_device, usable_cores, warm_up
from .losses import FocalLoss, LogitAdjustedLoss, class_prior, class_weights, make_loss
from .metrics import classification_metrics
from .tensors import TensorData, augment_batch, channel_stats, to_tensor_data
from .trainer import TrainConfig, TrainResult, predict, predict_proba, surrogate_beta, train_model

__all__ = [
    "FocalLoss", "LogitAdjustedLoss", "TensorData", "TrainConfig", "TrainResult", "augment_batch",
    "autocast_context", "channel_stats", "class_prior", "class_weights", "classification_metrics",
    "configure_threads", "make_loss", "predict", "predict_proba", "resolve_device", "surrogate_beta",
    "to_tensor_data", "train_model", "usable_cores", "warm_up",
]
