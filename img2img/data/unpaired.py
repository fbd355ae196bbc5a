"""Unpaired image datasets for CycleGAN and DiscoGAN: two folders sampled independently.

An epoch is max(|A|, |B|) draws: example ``i`` is A's image ``i mod |A|``
with a B image drawn at random (seeded by the example's seed), as the
official ``unaligned`` dataset does.  Each image is augmented on its own:
resize to ``load_size``, random crop ``size``, random flip (albumentations on
the CPU), or, with GPU augmentation, only resized here and cropped and
flipped on the device with kornia (see :func:`gpu_augment`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from img2img.data.guard import verify_images
from img2img.data.images import convert_channels, list_images, read_image, to_tensor
from img2img.data.paired import infer_channels
from img2img.errors import UserError

if TYPE_CHECKING:
    import albumentations as albu


def folder_images(folder: str | Path, option: str) -> list[Path]:
    """Every image under ``folder`` (absolute paths); a missing or empty folder is an error naming ``option``."""
    folder = Path(folder)
    return [folder / relative for relative in list_images(folder, option)]


def check_folder(files: Sequence[Path], option: str) -> tuple[int, int]:
    """Decode every file once (:func:`~img2img.data.guard.verify_images`); return the channel count to use and
    the bits (16 if any file has 16 per channel).  Broken files are named in one error before training starts."""
    infos = verify_images(files, option)
    if not infos:
        raise UserError(f"{option}: no readable images")
    return infer_channels([info.channels for info in infos]), max(info.bits for info in infos)


def single_transform(size: int, load_size: int, flip: bool, train: bool, crop: bool = True) -> albu.Compose:
    import albumentations as albu  # noqa: PLC0415 - 0.5 s to import: not for every command line (--help)

    steps: list[Any] = [albu.Resize(load_size if train else size, load_size if train else size,
                                    interpolation=cv2.INTER_CUBIC)]
    if train and crop:
        steps.append(albu.RandomCrop(size, size))
        if flip:
            steps.append(albu.HorizontalFlip(p=0.5))
    return albu.Compose(steps)


def load_augmented(path: Path, channels: int, transform: albu.Compose, seed: int) -> Tensor:
    """One image file with ``channels`` channels, through ``transform`` with the example's ``seed``: ``(C, S, S)``
    in [-1, 1]."""
    image = convert_channels(read_image(path), channels)
    transform.set_random_seed(seed % 2**32)
    out = transform(image=image)["image"]
    return to_tensor(out[:, :, None] if out.ndim == 2 else out)


class UnpairedImages(Dataset):
    """``{"a": (C_a, S, S), "b": (C_b, S, S)}`` float tensors in [-1, 1], A and B drawn independently."""

    def __init__(self, a_files: Sequence[Path], b_files: Sequence[Path], channels_a: int, channels_b: int,
                 size: int, load_size: int, flip: bool = True, train: bool = True, cpu_crop: bool = True) -> None:
        self.a_files, self.b_files = list(a_files), list(b_files)
        self.channels_a, self.channels_b = channels_a, channels_b
        self.train = train
        self.transform = single_transform(size, load_size, flip, train, crop=cpu_crop)

    def __len__(self) -> int:
        return max(len(self.a_files), len(self.b_files))

    def _load(self, path: Path, channels: int, seed: int) -> Tensor:
        return load_augmented(path, channels, self.transform, seed)

    def side_image(self, side: str, index: int) -> Tensor:
        """Image ``index`` of domain ``side`` (``"a"`` or ``"b"``) alone, transformed as for evaluation."""
        files, channels = (self.a_files, self.channels_a) if side == "a" else (self.b_files, self.channels_b)
        return self._load(files[index], channels, 0)

    def _draw(self, key: Any) -> tuple[Path, Path, int, int]:
        """The A file, its B partner and their augmentation seeds for ``key``."""
        index, seed = key if isinstance(key, tuple) else (int(key), 0)
        a_path = self.a_files[index % len(self.a_files)]
        if not self.train:  # evaluation: deterministic partners
            return a_path, self.b_files[index % len(self.b_files)], 0, 0
        generator = np.random.default_rng(seed)
        b_path = self.b_files[int(generator.integers(len(self.b_files)))]
        seed_a, seed_b = (int(s) for s in generator.integers(2**32, size=2))
        return a_path, b_path, seed_a, seed_b

    def files_for(self, key: Any) -> list[Path]:
        """The files that item ``key`` reads."""
        return list(self._draw(key)[:2])

    def __getitem__(self, key: Any) -> dict[str, Tensor]:
        a_path, b_path, seed_a, seed_b = self._draw(key)
        return {"a": self._load(a_path, self.channels_a, seed_a), "b": self._load(b_path, self.channels_b, seed_b)}


def gpu_augment(images: Tensor, size: int, flip: bool) -> Tensor:
    """Random crop to ``size`` and random horizontal flip of a batch ``(N, C, L, L)`` on its own device (kornia).

    Draws on torch's generator of that device, whose state checkpoints keep.
    """
    import kornia.augmentation as augment  # noqa: PLC0415

    steps: list[Any] = [augment.RandomCrop((size, size))]
    if flip:
        steps.append(augment.RandomHorizontalFlip(p=0.5))
    return augment.AugmentationSequential(*steps)(images)
