"""Data: the embedded MNIST digits, step-indexed samplers and batch sources."""

from img2img.data.batches import BatchSource, StepSampler, TensorBatches
from img2img.data.mnist import Digits, load_digits

__all__ = ["BatchSource", "Digits", "StepSampler", "TensorBatches", "load_digits"]
