"""Paired image datasets for pix2pix: two folders matched by name, or the official side-by-side files.

``--a DIR --b DIR``: files are paired by their path relative to the folder,
without the extension (``a/x/1.png`` with ``b/x/1.jpg``).  ``--aligned DIR``:
each file holds A and B side by side (A left), as the official pix2pix
datasets do; ``--direction b2a`` swaps them.  Every file's header is read
once at the start, so a missing partner, an unreadable file or an aligned
file of odd width is reported before training, naming the file.

Augmentation (albumentations): resize to ``load_size``, random crop to
``size``, random horizontal flip: one draw applied to A and B alike
(``additional_targets``), seeded per example so runs and resumes repeat it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from img2img.data.guard import verify_images
from img2img.data.images import convert_channels, list_images, read_image, to_tensor
from img2img.errors import UserError

if TYPE_CHECKING:
    import albumentations as albu

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairFiles:
    """One example: the A file and the B file, or one side-by-side file (``b is None``)."""

    a: Path
    b: Path | None = None


def match_folders(a_dir: str | Path, b_dir: str | Path) -> list[PairFiles]:
    """Pair the images of two folders by relative path without extension; every file must have a partner."""
    a_dir, b_dir = Path(a_dir), Path(b_dir)
    a_index = _index_by_stem(list_images(a_dir, "--a"), a_dir, "--a")
    b_index = _index_by_stem(list_images(b_dir, "--b"), b_dir, "--b")
    lonely_a = sorted(set(a_index) - set(b_index))
    lonely_b = sorted(set(b_index) - set(a_index))
    if lonely_a or lonely_b:
        examples = [f"{a_dir / a_index[k]} has no partner in {b_dir}" for k in lonely_a[:2]]
        examples += [f"{b_dir / b_index[k]} has no partner in {a_dir}" for k in lonely_b[:2]]
        raise UserError(f"--a/--b: {len(lonely_a) + len(lonely_b)} files are unpaired "
                        f"({'; '.join(examples)}{'; ...' if len(lonely_a) + len(lonely_b) > len(examples) else ''})")
    return [PairFiles(a_dir / a_index[key], b_dir / b_index[key]) for key in sorted(a_index)]


def _index_by_stem(files: Sequence[Path], folder: Path, option: str) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for relative in files:
        key = relative.with_suffix("").as_posix()
        if key in index:
            raise UserError(f"{option}: {folder / index[key]} and {folder / relative} have the same name; "
                            "pairs are matched by name, so keep one")
        index[key] = relative
    return index


def aligned_files(folder: str | Path) -> list[PairFiles]:
    folder = Path(folder)
    return [PairFiles(folder / relative) for relative in list_images(folder, "--aligned")]


def infer_channels(channel_counts: Sequence[int]) -> int:
    """One channel if every file is grey, four if every file has alpha, else three."""
    kinds = set(channel_counts)
    if kinds == {1}:
        return 1
    if kinds == {4}:
        return 4
    return 3


@dataclass(frozen=True)
class PairSummary:
    channels_a: int
    channels_b: int
    bits_a: int  # 16 when any A file stores 16 bits per channel, else 8
    bits_b: int


_DOUBTED: set[Path] = set()  # the first file of each folder of square aligned files already warned about


def check_pairs(pairs: Sequence[PairFiles], prefix: str = "--", before: str = "training") -> PairSummary:
    """Decode every file once (:func:`~img2img.data.guard.verify_images`): broken files and aligned files of odd
    width are errors naming the file, before training or evaluation starts; a folder of only square aligned files
    is doubted in a warning.  ``prefix``: how the folder options are named where they were given (``--eval-``
    for a training run's held-out data)."""
    a_channels, b_channels, bits_a, bits_b = [], [], 8, 8
    files = [path for pair in pairs for path in (pair.a, pair.b) if path is not None]
    infos = dict(zip(files, verify_images(files, f"{prefix}aligned" if pairs and pairs[0].b is None else
                                              f"{prefix}a/{prefix}b", before=before)))
    aligned = [pair.a for pair in pairs if pair.b is None]
    if aligned and all(infos[path].width == infos[path].height for path in aligned) and aligned[0] not in _DOUBTED:
        # halves twice as tall as wide are possible (portraits side by side), but a folder of only square files is
        # far likelier a folder of single images, whose halves would be trained on or scored as pairs
        _DOUBTED.add(aligned[0])  # said once (a run's evaluations check their data each time)
        info = infos[aligned[0]]
        log.warning("--aligned: every file is square (%s is %d×%d), so each splits into halves twice as tall as "
                    "wide; an aligned file holds A and B side by side, each half usually square: for two folders of "
                    "single images paired by name, give --a DIR --b DIR", aligned[0], info.width, info.height)
    for pair in pairs:
        info_a = infos[pair.a]
        bits_a = max(bits_a, info_a.bits)
        if pair.b is None:
            bits_b = bits_a
            if info_a.width % 2:
                raise UserError(f"{pair.a}: an aligned file holds A and B side by side, so its width must be even "
                                f"(it is {info_a.width}×{info_a.height}: the halves would differ in size)")
            a_channels.append(info_a.channels)
            b_channels.append(info_a.channels)
        else:
            info_b = infos[pair.b]
            bits_b = max(bits_b, info_b.bits)
            a_channels.append(info_a.channels)
            b_channels.append(info_b.channels)
    return PairSummary(infer_channels(a_channels), infer_channels(b_channels), bits_a, bits_b)


def paired_transform(size: int, load_size: int, flip: bool, train: bool) -> albu.Compose:
    """Resize to ``load_size`` then random crop ``size`` and flip (training), or resize to ``size`` (evaluation)."""
    import albumentations as albu  # noqa: PLC0415 - 0.5 s to import: not for every command line (--help)

    if train:
        steps = [albu.Resize(load_size, load_size, interpolation=cv2.INTER_CUBIC),
                 albu.RandomCrop(size, size)]
        if flip:
            steps.append(albu.HorizontalFlip(p=0.5))
    else:
        steps = [albu.Resize(size, size, interpolation=cv2.INTER_CUBIC)]
    return albu.Compose(steps, additional_targets={"b": "image"}, is_check_shapes=False)


class PairedImages(Dataset):
    """Map-style dataset of ``{"a": (C_a, S, S), "b": (C_b, S, S)}`` float tensors in [-1, 1].

    Items are looked up by ``(index, example_seed)`` (what :class:`StepSampler`
    yields) or by a plain index (no augmentation randomness: seed 0).
    """

    def __init__(self, pairs: Sequence[PairFiles], channels_a: int, channels_b: int, size: int, load_size: int,
                 flip: bool = True, train: bool = True, b_to_a: bool = False) -> None:
        self.pairs = list(pairs)
        self.channels_a, self.channels_b = channels_a, channels_b
        self.b_to_a = b_to_a
        self.transform = paired_transform(size, load_size, flip, train)

    def __len__(self) -> int:
        return len(self.pairs)

    def files_for(self, key: Any) -> list[Path]:
        """The files that item ``key`` reads."""
        pair = self.pairs[key[0] if isinstance(key, tuple) else int(key)]
        return [pair.a] if pair.b is None else [pair.a, pair.b]

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The A and B images of example ``index`` as ``(H, W, C)`` in [0, 1], before augmentation."""
        pair = self.pairs[index]
        if pair.b is None:
            both = read_image(pair.a)
            half = both.shape[1] // 2
            a, b = both[:, :half], both[:, half:]
        else:
            a, b = read_image(pair.a), read_image(pair.b)
        if self.b_to_a:
            a, b = b, a
        return convert_channels(a, self.channels_a), convert_channels(b, self.channels_b)

    def __getitem__(self, key: Any) -> dict[str, torch.Tensor]:
        index, seed = key if isinstance(key, tuple) else (int(key), 0)
        a, b = self.load_pair(index)
        self.transform.set_random_seed(seed % 2**32)
        out = self.transform(image=a, b=b)
        return {"a": to_tensor(_channels_last(out["image"])), "b": to_tensor(_channels_last(out["b"]))}


def _channels_last(array: np.ndarray) -> np.ndarray:
    return array[:, :, None] if array.ndim == 2 else array
