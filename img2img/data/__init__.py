"""Data: the embedded MNIST digits, step-indexed samplers and batch sources."""

from img2img.data.batches import BatchSource, LoaderBatches, StepSampler, TensorBatches
from img2img.data.mnist import Digits, load_digits

__all__ = ["BatchSource", "LoaderBatches", "Digits", "StepSampler", "TensorBatches", "load_digits"]
