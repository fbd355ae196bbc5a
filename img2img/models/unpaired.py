"""What CycleGAN and DiscoGAN share: unpaired data options, two generators, sample grids, translation."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from img2img.config import MAX_SIDE, option
from img2img.data.unpaired import UnpairedImages, check_folder, folder_images, gpu_augment
from img2img.errors import UserError
from img2img.losses import get_loss
from img2img.models.base import IMAGE_DEFAULTS, GANModel, evaluating
from img2img.models.pix2pix import as_rgb, spread_examples

SAMPLE_PAIRS = 4


@dataclass(frozen=True)
class UnpairedData:
    """Data options of the unpaired models."""

    a: str | None = option(None, "Folder of domain-A images.", path=True)
    b: str | None = option(None, "Folder of domain-B images (unpaired).", path=True)
    size: int = option(256, "Training crop side in pixels.", min=8, max=MAX_SIDE)
    load_size: int | None = option(None, "Side images are resized to before cropping.  [default: size × 286/256]",
                                   min=1, max=MAX_SIDE)
    channels_a: int | None = option(None, "Channels of domain A.  [default: inferred from the files]",
                                    choices=("1", "3", "4"))
    channels_b: int | None = option(None, "Channels of domain B.  [default: inferred from the files]",
                                    choices=("1", "3", "4"))
    bits_a: int | None = None  # bits per channel of the training files (8 or 16), found when resolving
    bits_b: int | None = None
    flip: bool = option(True, "Random horizontal flips.")
    gpu_augment: bool = option(False, "Crop and flip on the training device with kornia.", switch=True)


class UnpairedModel(GANModel):
    """Base of the two-generator models: ``g_ab`` maps a to b, ``g_ba`` b to a; ``d_a`` judges a, ``d_b`` b."""

    inference_networks = ("g_ab", "g_ba")
    translation_networks = {"a2b": "g_ab", "b2a": "g_ba"}
    train_defaults = IMAGE_DEFAULTS
    epoch_schedule = (200, 100)  # of max(|A|, |B|) images, as in the papers' code
    evaluation = "unpaired"
    default_metric = "fid_a2b"

    @classmethod
    def synthetic(cls, size: int, batch_size: int, generator: torch.Generator) -> tuple[Any, Any]:
        config = cls.Config(size=size, load_size=size, channels_a=3, channels_b=3, bits_a=8, bits_b=8)
        return config, {side: torch.rand(batch_size, 3, size, size, generator=generator) * 2 - 1 for side in "ab"}

    @classmethod
    def resolve_data(cls, config: Any) -> Any:
        if config.a is None or config.b is None:
            raise UserError(f"{'--a' if config.a is None else '--b'} is missing: give both --a DIR and --b DIR")
        get_loss(config.loss)
        load_size = config.load_size if config.load_size is not None else round(config.size * 286 / 256)
        if load_size < config.size:
            raise UserError(f"--load-size ({load_size}) must be at least --size ({config.size})")
        channels_a, bits_a = check_folder(folder_images(config.a, "--a"), "--a")
        channels_b, bits_b = check_folder(folder_images(config.b, "--b"), "--b")
        return replace(config, load_size=load_size, channels_a=config.channels_a or channels_a,
                       channels_b=config.channels_b or channels_b, bits_a=bits_a, bits_b=bits_b)

    @classmethod
    def dataset_size(cls, config: Any) -> int:
        return max(len(folder_images(config.a, "--a")), len(folder_images(config.b, "--b")))

    @classmethod
    def dataset(cls, config: Any, train: bool = True) -> UnpairedImages:
        return UnpairedImages(folder_images(config.a, "--a"), folder_images(config.b, "--b"), config.channels_a,
                              config.channels_b, config.size, config.load_size, flip=config.flip, train=train,
                              cpu_crop=not config.gpu_augment)

    def prepare_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if not self.config.gpu_augment:
            return batch
        return {key: gpu_augment(images, self.config.size, self.config.flip) for key, images in batch.items()}

    def sample_inputs(self, data: Any, seed: int, device: torch.device) -> dict[str, Tensor]:
        return spread_examples(self.dataset(self.config, train=False), SAMPLE_PAIRS, device)

    @torch.no_grad()
    def sample_grid(self, inputs: dict[str, Tensor]) -> tuple[Tensor, int]:
        """Each row: real_a | fake_b | rec_a | real_b | fake_a | rec_b."""
        g_ab, g_ba = self.nets["g_ab"], self.nets["g_ba"]
        with evaluating(g_ab, g_ba):
            fake_b, fake_a = g_ab(inputs["a"]).float(), g_ba(inputs["b"]).float()
            rec_a, rec_b = g_ba(fake_b).float(), g_ab(fake_a).float()
        columns = [inputs["a"], fake_b, rec_a, inputs["b"], fake_a, rec_b]
        return torch.stack([as_rgb(c) for c in columns], 1).flatten(0, 1), len(columns)
