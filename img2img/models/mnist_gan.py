"""The MNIST baseline GAN (Goodfellow et al. 2014) with the seeds' MLP networks.

G: noise 100 → 256 → 512 → 1024 → 784 (LeakyReLU 0.2 + BatchNorm, tanh);
D: 784 → 512 → 256 → 1 (LeakyReLU 0.2, logit output).  One step is a
generator phase then a discriminator phase that judges the same fakes,
detached, as in the PyTorch reference implementations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from img2img.config import TrainConfig, option
from img2img.data.batches import StepSampler, TensorBatches
from img2img.data.mnist import load_digits
from img2img.losses import LOSSES, get_loss
from img2img.models.base import GANModel, Logs, Phase, evaluating
from img2img.nn import MLPDiscriminator, MLPGenerator, init_weights, recompute_batch_norm

SAMPLE_GRID_SIDE = 10
STATISTICS_BATCHES = 8  # of 512 noise vectors: batch-norm statistics for averaged weights


@dataclass(frozen=True)
class MnistGanConfig:
    loss: str = option("non-saturating", "Adversarial loss.", choices=tuple(LOSSES))
    noise_dim: int = 100
    mnist_root: str | None = option(None, "Use full MNIST from this folder (downloaded there if missing; falls back to "
                                          "the embedded digits when that fails).  [default: the embedded 4,000 "
                                          "training digits]", path=True)


class MnistGan(GANModel):
    """The MNIST baseline GAN (MLP G and D) on the embedded digits; no download needed."""

    name = "mnist-gan"
    order = 0
    Config = MnistGanConfig
    phases = (Phase("g", ("g",)), Phase("d", ("d",)))
    inference_networks = ("g",)
    # Measured on 2 CPU cores: 10,000 steps of batch 128 take about 3.5 minutes; the weight average (EMA) and
    # the larger batch gave the best digits for that time (see the closing note of the foundation issue).
    train_defaults = dict(steps=10_000, batch_size=128, save_every_steps=2000, sample_every_steps=1000,
                          log_every_steps=100, num_workers=0, ema_decay=0.999)
    evaluation = "samples"
    default_metric = "fid"
    bench_batch_size = 64

    def __init__(self, config: MnistGanConfig) -> None:
        super().__init__(config)
        self.adversarial = get_loss(config.loss)
        generator, discriminator = self.networks(config)
        self.nets["g"] = init_weights(generator)  # N(0, 0.02), as the GAN papers
        self.nets["d"] = init_weights(discriminator)

    def networks(self, config: MnistGanConfig) -> tuple[nn.Module, nn.Module]:
        """G (noise ``(N, noise_dim)`` → digits ``(N, 1, 28, 28)``) and D (digits → one logit each); a model on
        the same digits with other networks (DCGAN) overrides only this."""
        return MLPGenerator(noise_dim=config.noise_dim), MLPDiscriminator()

    @classmethod
    def resolve(cls, config: MnistGanConfig) -> MnistGanConfig:
        get_loss(config.loss)
        return config

    @classmethod
    def synthetic(cls, size: int, batch_size: int, generator: torch.Generator) -> tuple[MnistGanConfig, Tensor]:
        """Always 28×28 digits, whatever ``size``."""
        return MnistGanConfig(), torch.rand(batch_size, 1, 28, 28, generator=generator) * 2 - 1

    @classmethod
    def dry_batch(cls, config: MnistGanConfig, batch_size: int) -> Tensor:
        return torch.zeros(1, 1, 28, 28).expand(batch_size, -1, -1, -1)  # shapes only: no memory

    @classmethod
    def build_data(cls, config: MnistGanConfig, train: TrainConfig, device: torch.device,
                   rank: int = 0, world_size: int = 1) -> TensorBatches:
        digits = load_digits(config.mnist_root, split="train")
        sampler = StepSampler(len(digits.labels), train.batch_size, train.seed, rank, world_size)
        return TensorBatches(digits.as_float(device), sampler)

    def noise(self, count: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """Noise vectors ``(count, noise_dim)`` ~ N(0, I); drawn on the CPU when a generator is given."""
        if generator is not None:
            return torch.randn(count, self.config.noise_dim, generator=generator).to(device)
        return torch.randn(count, self.config.noise_dim, device=device)

    def phase_loss(self, phase: str, nets: Mapping[str, nn.Module], batch: Tensor,
                   carry: dict[str, Any]) -> tuple[Tensor, Logs]:
        real = batch
        if phase == "g":
            fake = nets["g"](self.noise(real.shape[0], real.device))
            carry["fake"] = fake.detach()
            loss = self.adversarial.generator_loss(nets["d"](fake))
            return loss, {"g_loss": loss.detach()}
        if phase == "d":
            fake = carry.get("fake")
            if fake is None:  # a discriminator-only step draws its own fakes
                with torch.no_grad():
                    fake = nets["g"](self.noise(real.shape[0], real.device))
            loss, parts = self.adversarial.discriminator_loss(nets["d"], real, fake)
            return loss, {"d_loss": loss.detach(), **parts}
        raise KeyError(phase)

    def refresh_statistics(self, nets: Mapping[str, nn.Module], generator: torch.Generator) -> None:
        for net in nets.values():
            device = next(net.parameters()).device
            recompute_batch_norm(net, (self.noise(512, device, generator) for _ in range(STATISTICS_BATCHES)))

    @torch.no_grad()
    def generate(self, count: int, generator: torch.Generator | None = None, batch_size: int = 1000) -> Tensor:
        """``count`` images ``(count, 1, 28, 28)`` in [-1, 1], with G in evaluation mode."""
        g = self.nets["g"]
        device = next(g.parameters()).device
        with evaluating(g):
            chunks = [g(self.noise(min(batch_size, count - start), device, generator))
                      for start in range(0, count, batch_size)]
        return torch.cat(chunks).float() if chunks else torch.empty(0, 1, 28, 28)

    def sample_inputs(self, data: Any, seed: int, device: torch.device) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def sample_grid(self, inputs: torch.Generator) -> tuple[Tensor, int]:
        # A fresh generator from the same seed each time: every grid shows the same noise.
        generator = torch.Generator().manual_seed(inputs.initial_seed())
        return self.generate(SAMPLE_GRID_SIDE ** 2, generator), SAMPLE_GRID_SIDE
