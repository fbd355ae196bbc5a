"""StarGAN's networks (Choi et al. 2018; the official yunjey/stargan ``model.py``).

Generator: the image with the target domain's one-hot label tiled over it as
extra channels; a 7×7 convolution, two stride-2 downsamplings, residual
blocks, two transposed-convolution upsamplings, a 7×7 convolution and tanh;
instance norm with affine parameters and no bias before it.  (The official
code keeps running statistics in its instance norms but never switches them
on: its test runs the networks in training mode, on each image's own
statistics, as these norms always do.)

Discriminator: a PatchGAN of stride-2 4×4 convolutions with LeakyReLU(0.01)
and no normalisation, and two heads on its last map: a 3×3 convolution that
scores real/fake per patch, and a convolution over the whole map that
classifies the image into the N domains.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class StarResidualBlock(nn.Module):
    """x + F(x), F = conv3-IN-ReLU-conv3-IN (zero padding, as in the official code)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.InstanceNorm2d(channels, affine=True),
            nn.ReLU(True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.InstanceNorm2d(channels, affine=True))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.main(x)


def tile_labels(images: Tensor, labels: Tensor) -> Tensor:
    """``(N, C, H, W)`` images and ``(N, D)`` labels → ``(N, C + D, H, W)``: each label value a constant channel."""
    planes = labels.to(images.dtype)[:, :, None, None].expand(-1, -1, *images.shape[2:])
    return torch.cat([images, planes], dim=1)


class StarGenerator(nn.Module):
    """``(N, channels, H, W)`` in [-1, 1] and the target's one-hot ``(N, domains)`` → ``(N, channels, H, W)``."""

    size_multiple = 4
    min_size = 8  # instance norm needs two values a channel: a quarter-size map of at least 2×2

    def __init__(self, channels: int, domains: int, base_channels: int = 64, n_blocks: int = 6) -> None:
        super().__init__()
        self.domains = domains
        width = base_channels
        layers: list[nn.Module] = [nn.Conv2d(channels + domains, width, 7, padding=3, bias=False),
                                   nn.InstanceNorm2d(width, affine=True), nn.ReLU(True)]
        for _ in range(2):
            layers += [nn.Conv2d(width, width * 2, 4, stride=2, padding=1, bias=False),
                       nn.InstanceNorm2d(width * 2, affine=True), nn.ReLU(True)]
            width *= 2
        layers += [StarResidualBlock(width) for _ in range(n_blocks)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1, bias=False),
                       nn.InstanceNorm2d(width // 2, affine=True), nn.ReLU(True)]
            width //= 2
        layers += [nn.Conv2d(width, channels, 7, padding=3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        return self.main(tile_labels(images, labels))


def discriminator_depth(size: int) -> int:
    """Stride-2 layers of the discriminator for ``size``-pixel images: the official 6 (at 128 pixels, a 2×2 map),
    fewer for smaller images, so that the last map is at least 2×2."""
    return max(1, min(6, int(math.log2(size)) - 1))


class StarDiscriminator(nn.Module):
    """``(N, channels, S, S)`` → (real/fake scores ``(N, 1, S/2^depth, S/2^depth)``, domain logits ``(N, D)``)."""

    def __init__(self, channels: int, size: int, domains: int, base_channels: int = 64,
                 depth: int | None = None) -> None:
        super().__init__()
        depth = discriminator_depth(size) if depth is None else depth
        if size % 2**depth:
            raise ValueError(f"the discriminator's {depth} halvings need a side divisible by {2**depth}, got {size}")
        width = base_channels
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.01)]
        for _ in range(1, depth):
            layers += [nn.Conv2d(width, width * 2, 4, stride=2, padding=1), nn.LeakyReLU(0.01)]
            width *= 2
        self.main = nn.Sequential(*layers)
        self.conv1 = nn.Conv2d(width, 1, 3, padding=1, bias=False)  # real/fake per patch
        self.conv2 = nn.Conv2d(width, domains, size // 2**depth, bias=False)  # the domain, from the whole map

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.main(images)
        return self.conv1(features), self.conv2(features).flatten(1)
