"""Fully connected generator and discriminator of the MNIST baseline GAN.

The architecture of the Keras GAN that the project was seeded with
(Goodfellow et al. 2014, as in eriklindernoren/Keras-GAN ``gan.py``):
G: z(100) → 256 → 512 → 1024 → 784, each hidden layer Linear → LeakyReLU(0.2)
→ BatchNorm, tanh output reshaped to an image; D: 784 → 512 → 256 → 1 with
LeakyReLU(0.2).  D returns the logit; ``sigmoid`` of it is the probability.

For a conditional GAN (Mirza & Osindero 2014) both take the label too, as a
one-hot vector joined to their input (``classes`` > 0): G sees z ⊕ y, D sees
the flattened image ⊕ y.  D may also append the minibatch standard deviation
to its last hidden layer (:class:`img2img.nn.gan_tricks.MinibatchStd`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from img2img.nn.gan_tricks import MinibatchStd

# Keras BatchNormalization(momentum=0.8) keeps 0.8 of the old running mean;
# PyTorch's momentum is the weight of the new batch, so 1 - 0.8.
KERAS_MOMENTUM_0_8 = 0.2


def join_label(inputs: Tensor, labels: Tensor | None, classes: int) -> Tensor:
    """``inputs`` ``(N, F)`` with the labels appended as one-hot vectors, ``(N, F + classes)``: ``labels`` are
    class indices ``(N,)`` or already one-hot ``(N, classes)`` (what an exported graph takes).  ``inputs`` are
    unchanged when the network takes no label (``classes`` 0)."""
    if not classes:
        return inputs
    if labels is None:
        raise ValueError("a conditional network needs the labels")
    one_hot = labels if labels.dim() == 2 else F.one_hot(labels, classes)
    return torch.cat([inputs, one_hot.to(inputs.dtype)], 1)


class MLPGenerator(nn.Module):
    """Maps noise ``(N, noise_dim)`` (and, with ``classes``, labels ``(N,)``) to images ``(N, C, H, W)`` in [-1, 1]."""

    def __init__(self, noise_dim: int = 100, hidden: Sequence[int] = (256, 512, 1024),
                 image_shape: Sequence[int] = (1, 28, 28), bn_momentum: float = KERAS_MOMENTUM_0_8,
                 classes: int = 0) -> None:
        super().__init__()
        self.noise_dim, self.classes = noise_dim, classes
        self.image_shape = tuple(image_shape)
        layers: list[nn.Module] = []
        width = noise_dim + classes
        for out in hidden:
            layers += [nn.Linear(width, out), nn.LeakyReLU(0.2), nn.BatchNorm1d(out, momentum=bn_momentum)]
            width = out
        layers += [nn.Linear(width, math.prod(self.image_shape)), nn.Tanh()]
        self.layers = nn.Sequential(*layers)

    def forward(self, noise: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.layers(join_label(noise, labels, self.classes)).view(noise.shape[0], *self.image_shape)


class MLPDiscriminator(nn.Module):
    """Maps images ``(N, C, H, W)`` (and, with ``classes``, labels ``(N,)``) to one logit each, ``(N, 1)``."""

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), hidden: Sequence[int] = (512, 256),
                 classes: int = 0, minibatch_std: bool = False) -> None:
        super().__init__()
        self.classes = classes
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(image_shape)
        first = True
        for out in hidden:
            layers += [nn.Linear(width + (classes if first else 0), out), nn.LeakyReLU(0.2)]
            width, first = out, False
        self.minibatch_std = MinibatchStd() if minibatch_std else None
        layers.append(nn.Linear(width + (1 if minibatch_std else 0), 1))
        self.layers = nn.Sequential(*layers)

    def features(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        """The last hidden layer's activations ``(N, hidden[-1])`` (what feature matching compares)."""
        hidden = join_label(self.layers[0](images), labels, self.classes)
        return self.layers[1:-1](hidden)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        features = self.features(images, labels)
        if self.minibatch_std is not None:
            features = self.minibatch_std(features)
        return self.layers[-1](features)

    def probability(self, images: Tensor) -> Tensor:
        """D(x) as a probability, ``(N, 1)``."""
        return torch.sigmoid(self.forward(images))


class GMMNGenerator(nn.Module):
    """The generative moment-matching network's generator (Li et al. 2015, MNIST): noise ``(N, noise_dim)`` →
    Linear + ReLU layers of ``hidden`` → images ``(N, C, H, W)``; tanh for [-1, 1] where the paper's sigmoid gives
    [0, 1].  No batch norm: the loss compares whole batches, and nothing else sees the network."""

    def __init__(self, noise_dim: int = 10, hidden: Sequence[int] = (64, 256, 256, 1024),
                 image_shape: Sequence[int] = (1, 28, 28)) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        layers: list[nn.Module] = []
        width = noise_dim
        for out in hidden:
            layers += [nn.Linear(width, out), nn.ReLU()]
            width = out
        layers += [nn.Linear(width, math.prod(self.image_shape)), nn.Tanh()]
        self.layers = nn.Sequential(*layers)

    def forward(self, noise: Tensor) -> Tensor:
        return self.layers(noise).view(noise.shape[0], *self.image_shape)
