"""pix2pix: conditional GAN for paired image-to-image translation (Isola et al. 2017).

G is a U-Net, D a PatchGAN that judges (input, output) pairs.  G minimises
the conditional GAN loss plus λ·L1 (Eq. 4, λ = 100):

    G* = arg min_G max_D  L_cGAN(G, D) + λ L_L1(G),   L_L1 = E‖y - G(x)‖_1

D's loss is halved, as in the official code, to slow D relative to G.
A step is a generator phase, then a discriminator phase on the same fakes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from img2img.config import MAX_SIDE, option
from img2img.data.paired import PairedImages, aligned_files, check_pairs, match_folders
from img2img.errors import UserError
from img2img.losses import LOSSES, get_loss
from img2img.models.base import IMAGE_DEFAULTS, GANModel, Logs, Phase, evaluating
from img2img.nn import init_weights
from img2img.nn.norm import NORMS
from img2img.nn.patchgan import PatchDiscriminator, PixelDiscriminator
from img2img.nn.unet import UNET_DEPTHS, UnetGenerator

DISCRIMINATORS = ("basic", "n_layers", "pixel")
GENERATORS = ("auto", *UNET_DEPTHS)
SAMPLE_PAIRS = 8


@dataclass(frozen=True)
class Pix2PixConfig:
    # data
    a: str | None = option(None, "Folder of input images (domain A).", path=True)
    b: str | None = option(None, "Folder of target images, paired with --a by name.", path=True)
    aligned: str | None = option(None, "Folder of side-by-side A|B images (official format).", path=True)
    direction: str = option("a2b", "Translate A to B, or B to A.", choices=("a2b", "b2a"))
    size: int = option(256, "Training crop side in pixels.", min=32, max=MAX_SIDE)
    load_size: int | None = option(None, "Side images are resized to before cropping.  [default: size × 286/256]",
                                   min=1, max=MAX_SIDE)  # None: the official 286 for 256
    channels_a: int | None = option(None, "Input channels.  [default: inferred from the files]",
                                    choices=("1", "3", "4"))
    channels_b: int | None = option(None, "Output channels.  [default: inferred from the files]",
                                    choices=("1", "3", "4"))
    bits_a: int | None = None  # bits per channel of the training files (8 or 16), found when resolving
    bits_b: int | None = None
    flip: bool = option(True, "Random horizontal flips.")
    # networks
    generator: str = option("auto", "U-Net depth: unet_256 (8 downsamplings), unet_128 (7), auto: what --size fits.",
                            choices=GENERATORS)
    num_downs: int | None = None  # resolved from generator and size
    base_channels: int = option(64, "Generator base width.", flag="--ngf", min=1, max=4096)  # ngf
    norm: str = option("batch", "Normalisation layers.", choices=tuple(NORMS))
    dropout: bool = option(True, "Dropout 0.5 in the innermost decoder blocks.")
    discriminator: str = option("basic", "basic: 70×70 PatchGAN; n_layers: PatchGAN of --n-layers; "
                                         "pixel: 1×1 PixelGAN.", choices=DISCRIMINATORS)
    n_layers: int = option(3, "Layers of the n_layers discriminator.", min=1, max=16)
    d_base_channels: int = option(64, "Discriminator base width.", flag="--ndf", min=1, max=4096)  # ndf
    # losses
    loss: str = option("non-saturating", "Adversarial loss.", choices=tuple(LOSSES))
    lambda_l1: float = option(100.0, "Weight λ of the L1 term.", min=0)


def unet_depth(generator: str, size: int) -> int:
    """Downsamplings of the U-Net: the named official depth, or for ``auto`` the most that ``size`` allows (≤ 8)."""
    if generator in UNET_DEPTHS:
        depth = UNET_DEPTHS[generator]
    elif generator == "auto":
        depth = min(8, int(math.log2(size))) if size >= 1 else 0
    else:
        raise UserError(f"--generator: unknown U-Net {generator!r}; choose one of {', '.join(GENERATORS)}")
    if depth < 5 or size % (2 ** depth):
        need = "at least 32 and a multiple of 32" if generator == "auto" else f"a multiple of {2 ** depth}"
        raise UserError(f"--size: {size} does not fit the U-Net {generator} (it must be {need})")
    return depth


class Pix2Pix(GANModel):
    """pix2pix (U-Net G, PatchGAN D, cGAN + λ·L1) on paired folders or side-by-side files."""

    name = "pix2pix"
    order = 10
    Config = Pix2PixConfig
    phases = (Phase("g", ("g",)), Phase("d", ("d",)))
    inference_networks = ("g",)
    translation_networks = {"a2b": "g"}
    train_defaults = IMAGE_DEFAULTS
    epoch_schedule = (200, 100)  # 100 epochs at the full rate, 100 decaying, as in the paper
    evaluation = "paired"
    default_metric = "psnr"

    def __init__(self, config: Pix2PixConfig) -> None:
        super().__init__(config)
        if config.channels_a is None or config.channels_b is None or config.num_downs is None:
            raise ValueError("resolve the configuration first (Pix2Pix.resolve)")
        self.adversarial = get_loss(config.loss)
        self.nets["g"] = init_weights(UnetGenerator(config.channels_a, config.channels_b, config.num_downs,
                                                    config.base_channels, config.norm, config.dropout))
        d_in = config.channels_a + config.channels_b  # D sees the input and the output together
        if config.discriminator == "pixel":
            d = PixelDiscriminator(d_in, config.d_base_channels, config.norm)
        else:
            layers = 3 if config.discriminator == "basic" else config.n_layers
            d = PatchDiscriminator(d_in, config.d_base_channels, layers, config.norm)
        self.nets["d"] = init_weights(d)

    # -- configuration and data -----------------------------------------------------------------------
    @classmethod
    def resolve(cls, config: Pix2PixConfig) -> Pix2PixConfig:
        """Check the options and the dataset once, and fill in what was left to inference."""
        if (config.aligned is None) == (config.a is None and config.b is None):
            raise UserError("give either --a DIR --b DIR (two folders paired by name) or --aligned DIR")
        if config.aligned is None and (config.a is None or config.b is None):
            raise UserError(f"{'--b' if config.b is None else '--a'} is missing: paired folders need both --a and --b")
        if config.direction not in ("a2b", "b2a"):
            raise UserError(f"--direction must be a2b or b2a, got {config.direction!r}")
        if config.norm not in NORMS:
            raise UserError(f"--norm must be one of {', '.join(NORMS)}, got {config.norm!r}")
        if config.discriminator not in DISCRIMINATORS:
            raise UserError(f"--discriminator must be one of {', '.join(DISCRIMINATORS)}")
        if config.discriminator != "n_layers" and config.n_layers != 3:
            raise UserError(f"--n-layers sets the depth of --discriminator n_layers; the {config.discriminator} "
                            "discriminator has a fixed depth (add --discriminator n_layers, or leave --n-layers out)")
        get_loss(config.loss)
        load_size = config.load_size if config.load_size is not None else round(config.size * 286 / 256)
        if load_size < config.size:
            raise UserError(f"--load-size ({load_size}) must be at least --size ({config.size})")
        num_downs = unet_depth(config.generator, config.size)
        summary = check_pairs(cls._pairs(config))
        channels_a, channels_b = summary.channels_a, summary.channels_b
        bits_a, bits_b = summary.bits_a, summary.bits_b
        if config.direction == "b2a":
            channels_a, channels_b, bits_a, bits_b = channels_b, channels_a, bits_b, bits_a
        return replace(config, load_size=load_size, num_downs=num_downs, bits_a=bits_a, bits_b=bits_b,
                       channels_a=config.channels_a or channels_a, channels_b=config.channels_b or channels_b)

    @classmethod
    def check_size(cls, size: int) -> None:
        unet_depth("auto", size)

    @classmethod
    def synthetic(cls, size: int, batch_size: int, generator: torch.Generator) -> tuple[Pix2PixConfig, Any]:
        config = Pix2PixConfig(size=size, load_size=size, channels_a=3, channels_b=3, bits_a=8, bits_b=8,
                               num_downs=unet_depth("auto", size))
        return config, {side: torch.rand(batch_size, 3, size, size, generator=generator) * 2 - 1 for side in "ab"}

    @staticmethod
    def _pairs(config: Pix2PixConfig):
        return aligned_files(config.aligned) if config.aligned else match_folders(config.a, config.b)

    @classmethod
    def dataset_size(cls, config: Pix2PixConfig) -> int:
        return len(cls._pairs(config))

    @classmethod
    def dataset(cls, config: Pix2PixConfig, train: bool = True) -> PairedImages:
        return PairedImages(cls._pairs(config), config.channels_a, config.channels_b, config.size,
                            config.load_size, flip=config.flip, train=train, b_to_a=config.direction == "b2a")

    # -- training -------------------------------------------------------------------------------------
    def phase_loss(self, phase: str, nets: Mapping[str, nn.Module], batch: dict[str, Tensor],
                   carry: dict[str, Any]) -> tuple[Tensor, Logs]:
        real_a, real_b = batch["a"], batch["b"]

        def critic(b_image: Tensor) -> Tensor:
            return nets["d"](torch.cat([real_a, b_image], 1))

        if phase == "g":
            fake_b = nets["g"](real_a)
            carry["fake_b"] = fake_b.detach()
            adversarial = self.adversarial.generator_loss(critic(fake_b))
            l1 = F.l1_loss(fake_b.float(), real_b.float())
            loss = adversarial + self.config.lambda_l1 * l1
            return loss, {"g_loss": loss.detach(), "g_gan": adversarial.detach(), "g_l1": l1.detach()}
        if phase == "d":
            fake_b = carry.get("fake_b")
            if fake_b is None:
                with torch.no_grad():
                    fake_b = nets["g"](real_a)
            loss, parts = self.adversarial.discriminator_loss(critic, real_b, fake_b)
            loss = 0.5 * loss
            return loss, {"d_loss": loss.detach(), **parts}
        raise KeyError(phase)

    # -- inference and monitoring ----------------------------------------------------------------------
    def sample_inputs(self, data: Any, seed: int, device: torch.device) -> dict[str, Tensor]:
        return spread_examples(self.dataset(self.config, train=False), SAMPLE_PAIRS, device)

    @torch.no_grad()
    def sample_grid(self, inputs: dict[str, Tensor]) -> tuple[Tensor, int]:
        with evaluating(self.nets["g"]):
            fake_b = self.nets["g"](inputs["a"]).float()
        rows = [as_rgb(x) for x in (inputs["a"], fake_b, inputs["b"])]
        return torch.stack(rows, 1).flatten(0, 1), 3  # each row: input | output | target


def spread_examples(dataset: Any, count: int, device: torch.device) -> dict[str, Tensor]:
    """``count`` examples spread evenly over ``dataset`` (folders are often sorted by class), batched."""
    count = min(count, len(dataset))
    items = [dataset[index * len(dataset) // count] for index in range(count)]
    return {key: torch.stack([item[key] for item in items]).to(device) for key in items[0]}


def as_rgb(images: Tensor) -> Tensor:
    """``(N, C, H, W)`` with C in {1, 3, 4} → three channels, for showing side by side."""
    if images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1)
    return images[:, :3]
