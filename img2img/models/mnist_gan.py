"""The MNIST baseline GAN (Goodfellow et al. 2014) with the seeds' MLP networks, and what every model that makes
images from noise shares (:class:`NoiseModel`: DCGAN, WGAN, the conditional GANs, GMMN).

G: noise 100 → 256 → 512 → 1024 → 784 (LeakyReLU 0.2 + BatchNorm, tanh);
D: 784 → 512 → 256 → 1 (LeakyReLU 0.2, logit output).  One step is a
generator phase then a discriminator phase that judges the same fakes,
detached, as in the PyTorch reference implementations.

The remedies for mode collapse are options of this model and of DCGAN, which
inherits it: ``--minibatch-std``, ``--feature-matching`` and ``--pac``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from img2img.config import TrainConfig, option
from img2img.data.batches import StepSampler, TensorBatches
from img2img.data.mnist import (DIGIT_CLASSES, Digits, check_folder_memory, folder_channels, image_folder, load_digits,
                                load_image_folder)
from img2img.errors import UserError
from img2img.losses import LOSSES, feature_matching, get_loss
from img2img.models.base import GANModel, Logs, Phase, evaluating
from img2img.nn import MLPDiscriminator, MLPGenerator, init_weights, recompute_batch_norm
from img2img.nn.dcgan import SIZES as CONV_SIZES
from img2img.nn.gan_tricks import pack

SAMPLE_GRID_SIDE = 10
STATISTICS_BATCHES = 8  # of 512 noise vectors: batch-norm statistics for averaged weights


@dataclass(frozen=True)
class DigitsConfig:
    """The data of every noise-to-image model: the embedded digits, full MNIST, or a folder of images."""

    noise_dim: int = 100
    mnist_root: str | None = option(None, "Use full MNIST from this folder (downloaded there if missing; falls back to "
                                          "the embedded digits when that fails).  [default: the embedded 4,000 "
                                          "training digits]", path=True, images=False)
    data: str | None = option(None, "Train on this folder of images instead of the digits, each resized to the "
                                    "model's side and all held in memory; with one sub-folder per class (two or "
                                    "more), the sub-folders' names are the labels.", path=True)
    size: int = 28  # the images' side (the convolutional models take --size)
    channels: int = 1  # of the images: 1 for the digits, read off --data's files
    classes: tuple[str, ...] = DIGIT_CLASSES  # the labels' names in label order; () for unlabelled --data


@dataclass(frozen=True)
class ConvOptions:
    """The options of the models with DCGAN's networks.  A config lists it before :class:`DigitsConfig` among its
    bases (``class DcganConfig(ConvOptions, MnistGanConfig)``), so that its ``size`` option replaces the plain
    field."""

    size: int = option(28, "Image side: 28, 32 or 64 (the 28-pixel digits are padded to 32, then resized).", min=28,
                       max=64)
    base_channels: int = option(64, "Generator base width (the last hidden layer's channels).", flag="--ngf", min=1,
                                max=4096)
    d_base_channels: int = option(64, "Discriminator base width (the first layer's channels).", flag="--ndf", min=1,
                                  max=4096)


@dataclass(frozen=True)
class MnistGanConfig(DigitsConfig):
    loss: str = option("non-saturating", "Adversarial loss.", choices=tuple(LOSSES))
    minibatch_std: bool = option(False, "Minibatch standard deviation before D's output (Karras et al. 2018, the "
                                        "parameter-free form of minibatch discrimination, Salimans et al. 2016).",
                                 switch=True)
    feature_matching: bool = option(False, "G matches the mean of D's last hidden features on real and generated "
                                           "batches instead of fooling D (Salimans et al. 2016).", switch=True)
    pac: int = option(1, "PacGAN packing: D judges this many samples at once, joined along the channels (Lin et "
                         "al. 2018; 2 to 4; --batch-size must be a multiple).", min=1, max=4)


class NoiseModel(GANModel):
    """What the models that turn noise (and, when conditional, a label) into images share: the data (digits or
    ``--data``, with labels), noise, generation, sample grids, batch-norm statistics and evaluation.  Not a
    model itself (it has no ``name``); a subclass adds its networks, phases and losses."""

    Config = DigitsConfig
    # a conditional model's G (and, for a cGAN, D) takes the label; sample --class asks for one
    conditional: ClassVar[bool] = False
    # the one image side of the MLP models (28); None: --size chooses (the convolutional models)
    fixed_size: ClassVar[int | None] = 28
    inference_networks = ("g",)
    # Measured on 2 CPU cores: 10,000 steps of batch 128 take about 3.5 minutes; the weight average (EMA) and
    # the larger batch gave the best digits for that time (see the closing note of the foundation issue).
    train_defaults = dict(steps=10_000, batch_size=128, save_every_steps=2000, sample_every_steps=1000,
                          log_every_steps=100, num_workers=0, ema_decay=0.999)
    evaluation = "samples"
    default_metric = "fid"
    bench_batch_size = 64

    # -- data ------------------------------------------------------------------------------------------------
    @classmethod
    def check_size(cls, size: int) -> None:
        if cls.fixed_size is None and size not in CONV_SIZES:
            raise UserError(f"--size: {cls.name} networks take images of side {', '.join(map(str, CONV_SIZES))}, "
                            f"not {size}")

    @classmethod
    def resolve(cls, config: DigitsConfig) -> DigitsConfig:
        cls.check_size(config.size)
        if config.data is None:
            config = dataclasses.replace(config, channels=1, classes=DIGIT_CLASSES)
        else:
            if config.mnist_root is not None:
                raise UserError("--data and --mnist-root both name training data; give one")
            files, _, classes = image_folder(config.data)
            check_folder_memory(config.data, len(files), config.size, 1)  # the least they need: before decoding
            config = dataclasses.replace(config, channels=folder_channels(files), classes=classes)
            check_folder_memory(config.data, len(files), config.size, config.channels)  # before the run's folder
        if cls.conditional and not config.classes:
            raise UserError(f"--data: a {cls.name} model learns from labels; put the images of {config.data} in one "
                            "sub-folder per class (two or more)")
        return config

    @classmethod
    def load_data(cls, config: DigitsConfig) -> Digits:
        """The training images ``(N, C, size, size)`` uint8 with their labels."""
        if config.data is not None:
            data = load_image_folder(config.data, config.size, config.channels)
            if data.classes != tuple(config.classes):  # the folder changed since the run began (--resume)
                raise UserError(f"--data: {config.data} now holds the classes {', '.join(data.classes) or 'none'}; "
                                f"this run learnt {', '.join(config.classes) or 'none'}")
            return data
        digits = load_digits(config.mnist_root, split="train")
        if config.size != 28:  # padded to 32, as DCGAN implementations take MNIST, then resized
            images = F.pad(digits.images, (2, 2, 2, 2))
            if config.size != 32:
                images = F.interpolate(images.float(), size=config.size, mode="bilinear", align_corners=False)
                images = images.round().clamp(0, 255).to(torch.uint8)
            digits = dataclasses.replace(digits, images=images)
        return digits

    @classmethod
    def dataset_size(cls, config: DigitsConfig) -> int:
        return len(image_folder(config.data)[0]) if config.data is not None else \
            len(load_digits(config.mnist_root, split="train").labels)

    @classmethod
    def synthetic(cls, size: int, batch_size: int, generator: torch.Generator) -> tuple[Any, tuple[Tensor, Tensor]]:
        """The default configuration at ``size`` (the MLP models always take 28×28 digits) and random digits."""
        config = dataclasses.replace(cls.Config(), size=cls.fixed_size or size)
        images = torch.rand(batch_size, config.channels, config.size, config.size, generator=generator) * 2 - 1
        return config, (images, torch.randint(0, 10, (batch_size,), generator=generator))

    @classmethod
    def dry_batch(cls, config: DigitsConfig, batch_size: int) -> tuple[Tensor, Tensor]:
        images = torch.zeros(1, config.channels, config.size, config.size).expand(batch_size, -1, -1, -1)
        return images, torch.zeros(1, dtype=torch.int64).expand(batch_size)  # shapes only: no memory

    @classmethod
    def build_data(cls, config: DigitsConfig, train: TrainConfig, device: torch.device,
                   rank: int = 0, world_size: int = 1) -> TensorBatches:
        data = cls.load_data(config)
        sampler = StepSampler(len(data.labels), train.batch_size, train.seed, rank, world_size)
        return TensorBatches((data.as_float(device), data.labels.to(device)), sampler)

    # -- generation ------------------------------------------------------------------------------------------
    def noise(self, count: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """Noise vectors ``(count, noise_dim)`` ~ N(0, I); drawn on the CPU when a generator is given."""
        if generator is not None:
            return torch.randn(count, self.config.noise_dim, generator=generator).to(device)
        return torch.randn(count, self.config.noise_dim, device=device)

    def noise_law(self) -> str:
        """The noise :meth:`noise` draws, in words (an exported generator's metadata)."""
        return f"N(0, I), {self.config.noise_dim} values"

    def random_labels(self, count: int, device: torch.device) -> Tensor:
        """Labels drawn uniformly over the classes, for the generated half of a conditional step."""
        return torch.randint(0, len(self.config.classes), (count,), device=device)

    def generator_inputs(self, noise: Tensor, labels: Tensor | None) -> tuple[Tensor, ...]:
        """What G is called with: the noise, and the labels when the model is conditional."""
        return (noise, labels) if self.conditional else (noise,)

    def class_index(self, name: str) -> int:
        """The label of the class called ``name`` (``sample --class``); one line naming the classes otherwise."""
        if not self.conditional:
            raise UserError(f"--class: a {self.name} model does not take a class (the conditional models do: "
                            "cgan, acgan)")
        if name not in self.config.classes:
            raise UserError(f"--class: {name!r} is not a class of this model; choose one of "
                            f"{', '.join(self.config.classes)}")
        return self.config.classes.index(name)

    def sample_labels(self, count: int, start: int = 0, stop: int | None = None) -> Tensor | None:
        """Labels for ``count`` images of every class in turn, ``ceil(count / classes)`` of each (a grid with
        that many per row shows one class per row), or for those of them from ``start`` up to ``stop``; None for
        an unconditional model."""
        if not self.conditional:
            return None
        per_class = math.ceil(count / len(self.config.classes))
        return torch.arange(start, count if stop is None else stop) // per_class

    def generate(self, count: int, generator: torch.Generator | None = None, batch_size: int = 1000,
                 labels: Tensor | None = None) -> Tensor:
        """``count`` images ``(count, C, S, S)`` in [-1, 1], with G in evaluation mode; a conditional model draws
        ``labels`` (by default :meth:`sample_labels`)."""
        chunks = list(self.generate_chunks(count, generator, batch_size, labels))
        shape = (self.config.channels, self.config.size, self.config.size)
        return torch.cat(chunks) if chunks else torch.empty(0, *shape)

    @torch.no_grad()
    def generate_chunks(self, count: int, generator: torch.Generator | None = None, batch_size: int = 1000,
                        labels: Tensor | None = None) -> Iterator[Tensor]:
        """:meth:`generate`'s images, ``batch_size`` at a time (as it draws their noise), so that a caller that
        writes each chunk away holds one chunk at a time however many are asked for."""
        g = self.nets["g"]
        device = next(g.parameters()).device
        with evaluating(g):
            for start in range(0, count, batch_size):
                size = min(batch_size, count - start)  # by default every class in turn, made a chunk at a time
                part = self.sample_labels(count, start, start + size) if labels is None else \
                    labels[start:start + size]
                part = part.to(device) if part is not None else None
                yield g(*self.generator_inputs(self.noise(size, device, generator), part)).float()

    def refresh_statistics(self, nets: Mapping[str, nn.Module], generator: torch.Generator) -> None:
        for net in nets.values():
            device = next(net.parameters()).device

            def inputs() -> Iterator[tuple[Tensor, ...]]:
                for _ in range(STATISTICS_BATCHES):
                    labels = self.sample_labels(512)
                    yield self.generator_inputs(self.noise(512, device, generator),
                                                None if labels is None else labels.to(device))

            recompute_batch_norm(net, inputs())

    def sample_inputs(self, data: Any, seed: int, device: torch.device) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def sample_grid(self, inputs: torch.Generator) -> tuple[Tensor, int]:
        """10 × 10 images; a conditional model's grid has one row per class."""
        # A fresh generator from the same seed each time: every grid shows the same noise.
        generator = torch.Generator().manual_seed(inputs.initial_seed())
        rows = len(self.config.classes) if self.conditional else SAMPLE_GRID_SIDE
        return self.generate(rows * SAMPLE_GRID_SIDE, generator), SAMPLE_GRID_SIDE


class MnistGan(NoiseModel):
    """The MNIST baseline GAN (MLP G and D) on the embedded digits; no download needed."""

    name = "mnist-gan"
    order = 0
    Config = MnistGanConfig
    phases = (Phase("g", ("g",)), Phase("d", ("d",)))

    def __init__(self, config: MnistGanConfig) -> None:
        super().__init__(config)
        self.adversarial = get_loss(config.loss)
        generator, discriminator = self.networks(config)
        self.nets["g"] = init_weights(generator)  # N(0, 0.02), as the GAN papers
        self.nets["d"] = init_weights(discriminator)

    def networks(self, config: MnistGanConfig) -> tuple[nn.Module, nn.Module]:
        """G (noise ``(N, noise_dim)`` → images ``(N, C, S, S)``) and D (``pac`` images joined along the channels →
        one logit each); a model on the same data with other networks (DCGAN) overrides only this."""
        shape = (config.channels, config.size, config.size)
        return (MLPGenerator(noise_dim=config.noise_dim, image_shape=shape),
                MLPDiscriminator((config.channels * config.pac, config.size, config.size),
                                 minibatch_std=config.minibatch_std))

    @classmethod
    def resolve(cls, config: MnistGanConfig) -> MnistGanConfig:
        get_loss(config.loss)
        return super().resolve(config)

    def _packed(self, images: Tensor) -> Tensor:
        """``images`` packed for D (PacGAN); the batch must be a multiple of --pac."""
        if images.shape[0] % self.config.pac:
            raise UserError(f"--pac {self.config.pac}: --batch-size {images.shape[0]} is not a multiple of it")
        return pack(images, self.config.pac)

    def phase_loss(self, phase: str, nets: Mapping[str, nn.Module], batch: tuple[Tensor, Tensor],
                   carry: dict[str, Any]) -> tuple[Tensor, Logs]:
        real = batch[0]
        d = nets["d"]

        def critic(images: Tensor) -> Tensor:
            return d(self._packed(images))

        if phase == "g":
            fake = nets["g"](self.noise(real.shape[0], real.device))
            carry["fake"] = fake.detach()
            if self.config.feature_matching:  # D is frozen (and bare, not DDP-wrapped) in this phase
                loss = feature_matching(d.features(self._packed(real)), d.features(self._packed(fake)))
            else:
                loss = self.adversarial.generator_loss(critic(fake))
            return loss, {"g_loss": loss.detach()}
        if phase == "d":
            fake = carry.get("fake")
            if fake is None:  # a discriminator-only step draws its own fakes
                with torch.no_grad():
                    fake = nets["g"](self.noise(real.shape[0], real.device))
            loss, parts = self.adversarial.discriminator_loss(critic, real, fake)
            return loss, {"d_loss": loss.detach(), **parts}
        raise KeyError(phase)

