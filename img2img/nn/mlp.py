"""Fully connected generator and discriminator of the MNIST baseline GAN.

The architecture of the Keras GAN that the project was seeded with
(Goodfellow et al. 2014, as in eriklindernoren/Keras-GAN ``gan.py``):
G: z(100) → 256 → 512 → 1024 → 784, each hidden layer Linear → LeakyReLU(0.2)
→ BatchNorm, tanh output reshaped to an image; D: 784 → 512 → 256 → 1 with
LeakyReLU(0.2).  D returns the logit; ``sigmoid`` of it is the probability.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

# Keras BatchNormalization(momentum=0.8) keeps 0.8 of the old running mean;
# PyTorch's momentum is the weight of the new batch, so 1 - 0.8.
KERAS_MOMENTUM_0_8 = 0.2


class MLPGenerator(nn.Module):
    """Maps noise ``(N, noise_dim)`` to images ``(N, C, H, W)`` in [-1, 1]."""

    def __init__(self, noise_dim: int = 100, hidden: Sequence[int] = (256, 512, 1024),
                 image_shape: Sequence[int] = (1, 28, 28), bn_momentum: float = KERAS_MOMENTUM_0_8) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        self.image_shape = tuple(image_shape)
        layers: list[nn.Module] = []
        width = noise_dim
        for out in hidden:
            layers += [nn.Linear(width, out), nn.LeakyReLU(0.2), nn.BatchNorm1d(out, momentum=bn_momentum)]
            width = out
        layers += [nn.Linear(width, math.prod(self.image_shape)), nn.Tanh()]
        self.layers = nn.Sequential(*layers)

    def forward(self, noise: Tensor) -> Tensor:
        return self.layers(noise).view(noise.shape[0], *self.image_shape)


class MLPDiscriminator(nn.Module):
    """Maps images ``(N, C, H, W)`` to one logit each, ``(N, 1)``."""

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), hidden: Sequence[int] = (512, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(image_shape)
        for out in hidden:
            layers += [nn.Linear(width, out), nn.LeakyReLU(0.2)]
            width = out
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images)

    def probability(self, images: Tensor) -> Tensor:
        """D(x) as a probability, ``(N, 1)``."""
        return torch.sigmoid(self.forward(images))
