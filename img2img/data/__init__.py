"""Data: the embedded MNIST digits, step-indexed samplers and batch sources."""

import os

# albumentations asks PyPI for a newer release when imported; img2img works offline, so it never asks
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from img2img.data.batches import BatchSource, LoaderBatches, StepSampler, TensorBatches
from img2img.data.mnist import Digits, load_digits

__all__ = ["BatchSource", "LoaderBatches", "Digits", "StepSampler", "TensorBatches", "load_digits"]
