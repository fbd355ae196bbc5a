"""The generative moment-matching network (Li et al. 2015): a generator trained by the maximum mean discrepancy
between its samples and the data, with no discriminator.

Each step draws a batch of uniform noise, generates as many images and
minimises √MMD² between them and a batch of real images (``img2img.losses.
mmd2``), with a sum of Gaussian kernels over pixel values in [0, 1] at the
paper's MNIST bandwidths σ ∈ {2, 5, 10, 20, 40, 80}.  The network is the
paper's MNIST generator: 10 uniform inputs, ReLU layers of 64, 256, 256 and
1024 units (``img2img.nn.mlp.GMMNGenerator``); batch 1000 as the paper.
(Li et al. also train a GMMN on an auto-encoder's codes, GMMN+AE; not here.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from img2img.losses import mmd2
from img2img.models.base import Logs, Phase
from img2img.models.mnist_gan import DigitsConfig, NoiseModel
from img2img.nn import init_weights
from img2img.nn.mlp import GMMNGenerator

BANDWIDTHS = (2.0, 5.0, 10.0, 20.0, 40.0, 80.0)  # of the Gaussian kernels, in units of [0, 1] pixel values


@dataclass(frozen=True)
class GmmnConfig(DigitsConfig):
    noise_dim: int = 10
    bandwidths: tuple[float, ...] = BANDWIDTHS


class Gmmn(NoiseModel):
    """GMMN: an MLP generator trained by the MMD to the data, no discriminator (Li et al. 2015)."""

    name = "gmmn"
    order = 5
    Config = GmmnConfig
    phases = (Phase("g", ("g",)),)
    train_defaults = dict(NoiseModel.train_defaults, batch_size=1000, lr=1e-3, beta1=0.9, ema_decay=0.0)

    def __init__(self, config: GmmnConfig) -> None:
        super().__init__(config)
        self.nets["g"] = init_weights(GMMNGenerator(config.noise_dim, image_shape=(config.channels, config.size,
                                                                                   config.size)))

    def noise(self, count: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """Noise ``(count, noise_dim)`` ~ U[-1, 1], as the paper's uniform prior."""
        if generator is not None:
            return (torch.rand(count, self.config.noise_dim, generator=generator) * 2 - 1).to(device)
        return torch.rand(count, self.config.noise_dim, device=device) * 2 - 1

    def noise_law(self) -> str:
        return f"U[-1, 1], {self.config.noise_dim} values"

    def phase_loss(self, phase: str, nets: Mapping[str, nn.Module], batch: tuple[Tensor, Tensor],
                   carry: dict[str, Any]) -> tuple[Tensor, Logs]:
        if phase != "g":
            raise KeyError(phase)
        real = batch[0]
        fake = nets["g"](self.noise(real.shape[0], real.device))
        squared = mmd2(fake.add(1).div(2), real.add(1).div(2), self.config.bandwidths)
        loss = squared.clamp_min(1e-12).sqrt()
        return loss, {"mmd": loss.detach()}
