"""DCGAN (Radford et al. 2016) on the MNIST digits: the MNIST GAN's data, losses, sampling and evaluation, with
strided-convolution networks (``img2img.nn.dcgan``) in place of the MLPs.

The paper's settings: weights ~ N(0, 0.02), Adam with learning rate 2e-4 and
β1 = 0.5, batch 128, batch norm in both networks (not on D's input layer nor
G's output), ReLU in G and LeakyReLU(0.2) in D.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from img2img.config import option
from img2img.models.mnist_gan import MnistGan, MnistGanConfig
from img2img.nn.dcgan import DCGANDiscriminator, DCGANGenerator


@dataclass(frozen=True)
class DcganConfig(MnistGanConfig):
    base_channels: int = option(64, "Generator base width (the last hidden layer's channels).", flag="--ngf", min=1,
                                max=4096)
    d_base_channels: int = option(64, "Discriminator base width (the first layer's channels).", flag="--ndf", min=1,
                                  max=4096)


class Dcgan(MnistGan):
    """DCGAN: strided-convolution G and D with batch norm (Radford et al. 2016) on the embedded MNIST digits."""

    name = "dcgan"
    order = 1
    Config = DcganConfig
    # the paper's batch and optimiser (the loop's defaults: Adam 2e-4, β1 0.5); no weight average, as the paper
    train_defaults = dict(MnistGan.train_defaults, steps=3000, ema_decay=0.0)

    def networks(self, config: DcganConfig) -> tuple[nn.Module, nn.Module]:
        return (DCGANGenerator(config.noise_dim, 1, 28, config.base_channels),
                DCGANDiscriminator(1, 28, config.d_base_channels))

    @classmethod
    def synthetic(cls, size: int, batch_size: int, generator: torch.Generator) -> tuple[DcganConfig, Tensor]:
        """Always 28×28 digits, whatever ``size``."""
        return DcganConfig(), super().synthetic(size, batch_size, generator)[1]
