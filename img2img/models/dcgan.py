"""DCGAN (Radford et al. 2016): the MNIST GAN's data, losses, remedies, sampling and evaluation, with
strided-convolution networks (``img2img.nn.dcgan``) in place of the MLPs.

The paper's settings: weights ~ N(0, 0.02), Adam with learning rate 2e-4 and
β1 = 0.5, batch 128, batch norm in both networks (not on D's input layer nor
G's output), ReLU in G and LeakyReLU(0.2) in D.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from img2img.models.mnist_gan import ConvOptions, MnistGan, MnistGanConfig
from img2img.nn.dcgan import DCGANDiscriminator, DCGANGenerator


@dataclass(frozen=True)
class DcganConfig(ConvOptions, MnistGanConfig):
    pass


class Dcgan(MnistGan):
    """DCGAN: strided-convolution G and D with batch norm (Radford et al. 2016) on the embedded MNIST digits."""

    name = "dcgan"
    order = 1
    Config = DcganConfig
    fixed_size = None
    # the paper's batch and optimiser (the loop's defaults: Adam 2e-4, β1 0.5); no weight average, as the paper
    train_defaults = dict(MnistGan.train_defaults, steps=3000, ema_decay=0.0)

    def networks(self, config: DcganConfig) -> tuple[nn.Module, nn.Module]:
        return (DCGANGenerator(config.noise_dim, config.channels, config.size, config.base_channels),
                DCGANDiscriminator(config.channels * config.pac, config.size, config.d_base_channels,
                                   minibatch_std=config.minibatch_std))
