"""Images from a noise-to-image generator (the MNIST GAN, DCGAN, ...; one class of a conditional one), written as
PNG files."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from img2img.checkpoint import check_writable, replace_file
from img2img.data.images import CHANNEL_NAMES, WRITABLE_EXTENSIONS, can_write, encode_image, holds, quantize, same_format
from img2img.errors import UserError
from img2img.loading import load_model, resolve_device

CHUNK = 1000  # images made at once


def sample_to_folder(checkpoint: str | Path, count: int, out: str | Path, seed: int = 0, grid: str | Path | None = None,
                     device: str = "auto", overwrite: bool = False, label: str | None = None) -> Sequence[Path]:
    """Write ``count`` images from the checkpoint's generator to ``out/000000.png`` ...; same seed, same images.

    A conditional model draws class ``label`` (by name: ``"7"`` for a digit, a sub-folder's name for ``--data``),
    or, without one, every class in turn; its grid then has one row per class."""
    model, run, _ = load_model(checkpoint, resolve_device(device), option="CHECKPOINT")
    if not hasattr(model, "generate"):
        from img2img.models import MODELS  # noqa: PLC0415

        makers = ", ".join(name for name, model_class in MODELS.items() if hasattr(model_class, "generate"))
        raise UserError(f"CHECKPOINT: {run.model} translates images; sample draws from the models that make images "
                        f"from noise ({makers}); use `img2img translate CHECKPOINT INPUT OUTPUT` with this one")
    # one label for every image: a view of one value, whose chunks are made as they are drawn
    labels = None if label is None else torch.tensor(model.class_index(label)).expand(count)
    if grid is not None and not can_write(Path(grid).suffix):
        raise UserError(f"--grid: {grid} needs the extension of an image format: "
                        f"{', '.join(sorted(WRITABLE_EXTENSIONS))}")
    channels = model.config.channels
    if grid is not None and not holds(Path(grid).suffix, channels):
        raise UserError(f"--grid: a {Path(grid).suffix} file cannot hold this model's {CHANNEL_NAMES[channels]} "
                        f"images; name it {Path(grid).with_suffix(same_format(Path(grid).suffix, channels)).name}")
    if grid is not None:
        _check_grid(model, count, labels is not None, grid)
    out = Path(out)
    width = max(6, len(str(count - 1)))
    # the paths are made as the images are written: --n may be 2**31 - 1
    written = Written(out, range(count), f"{{:0{width}d}}.png".format)
    if grid is not None:
        check_writable(grid, "--grid")  # before --out is made, and before any image is
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--out: cannot create {out} ({error.strerror or error})") from None
    check_writable(out, "--out")  # a folder that exists and cannot be written
    if not overwrite:
        existing = _existing(out, count, width)
        if existing:
            raise UserError(f"--out: {out / existing[0]} exists ({len(existing)} file{'s' * (len(existing) > 1)} "
                            "would be replaced); "
                            "pass --overwrite or choose another folder")
        if grid is not None and Path(grid).exists():
            raise UserError(f"--grid: {grid} exists; pass --overwrite to replace it")
    generator = torch.Generator().manual_seed(seed)
    tiles = []  # for the grid: its images as levels
    # made and written a chunk at a time: memory stays bounded however many are asked for
    for start, images in zip(range(0, count, CHUNK), model.generate_chunks(count, generator, CHUNK, labels)):
        levels = quantize(images.add(1).div(2).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy())
        for index, image in enumerate(levels, start):
            replace_file(written[index], encode_image(image, ".png"))
        if grid is not None:
            tiles.append(torch.from_numpy(levels).permute(0, 3, 1, 2))
    if grid is not None:
        from torchvision.utils import make_grid  # noqa: PLC0415 - torchvision's import takes 1.4 s (torch._dynamo)

        sheet = make_grid(torch.cat(tiles), nrow=_grid_columns(model, count, labels is not None), padding=PADDING)
        sheet = sheet[:channels]  # grey images stay grey (make_grid repeats one channel three times)
        replace_file(Path(grid), encode_image(sheet.permute(1, 2, 0).numpy(), Path(grid).suffix))
    return written


class Written(Sequence):
    """The files :func:`sample_to_folder` wrote, in order, each path made when it is asked for: the list of them
    all, made at the end, would not fit in memory for ``--n 2147483647``, and the command died there, unsaid."""

    def __init__(self, out: Path, indices: range, name: Callable[[int], str]) -> None:
        self.out, self.indices, self.name = out, indices, name

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: Any) -> Any:  # an index, or a slice (another Written)
        chosen = self.indices[index]
        return Written(self.out, chosen, self.name) if isinstance(chosen, range) else self.out / self.name(chosen)


def _existing(out: Path, count: int, width: int) -> list[str]:
    """The names of the files among ``out``'s first ``count`` samples (``000000.png`` ...) that exist, in order:
    read from the folder's listing, however many samples there are."""
    names = []
    with os.scandir(out) as entries:
        for entry in entries:
            stem, _, extension = entry.name.partition(".")
            if (extension == "png" and len(stem) == width and stem.isascii() and stem.isdigit()
                    and int(stem) < count and os.path.exists(entry.path)):  # (a dangling link is no file)
                names.append(entry.name)
    return sorted(names)


PADDING = 2  # pixels between a grid's images (and around them)


def _grid_columns(model: Any, count: int, one_class: bool) -> int:
    """Images per row of the grid: a square, or one row per class when a conditional model draws them all."""
    if one_class or not model.conditional:
        return max(1, int(count ** 0.5))
    return math.ceil(count / len(model.config.classes))  # the images of one class (sample_labels)


def _check_grid(model: Any, count: int, one_class: bool, grid: str | Path) -> None:
    """Refuse, before any image is made, a grid larger than an image reader takes (Pillow's pixel limit, which
    img2img reads with too): ``--n 1000000 --grid`` held every image for a grid of 66,000² pixels."""
    side = model.config.size + PADDING
    columns = min(_grid_columns(model, count, one_class), count)
    width, height = columns * side + PADDING, math.ceil(count / columns) * side + PADDING
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        most = limit // (side * side)
        raise UserError(f"--grid: {count:,} images make a grid of {width:,}×{height:,} pixels, more than image "
                        f"readers take ({limit:,}); draw at most about {most:,} with --n, or leave out --grid")
