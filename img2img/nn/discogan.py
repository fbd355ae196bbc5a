"""DiscoGAN networks (Kim et al. 2017), as in the paper's official code (SKTBrain/DiscoGAN ``model.py``).

Generator: an encoder of stride-2 4×4 convolutions with LeakyReLU(0.2) and
batch norm (none after the first) down to a bottleneck, and a decoder of
stride-2 4×4 transposed convolutions with batch norm and ReLU back up; tanh
output (the official code ends in a sigmoid on [0, 1] images; img2img's
images are in [-1, 1]).  Discriminator: the same encoder and a final 4×4
convolution to one logit per image, also returning the activations after
each normalised layer for the feature-matching loss.
"""

from __future__ import annotations

import math

from torch import Tensor, nn


def _downsamplings(size: int) -> int:
    """Stride-2 layers that take ``size`` to the 4×4 bottleneck (4 at the paper's 64×64)."""
    depth = int(math.log2(size)) - 2
    if size < 16 or 2 ** (depth + 2) != size:
        raise ValueError(f"DiscoGAN networks need a power-of-two size of at least 16, got {size}")
    return depth


class DiscoGenerator(nn.Module):
    """``(N, in_channels, S, S)`` → ``(N, out_channels, S, S)`` in [-1, 1]."""

    def __init__(self, in_channels: int, out_channels: int, size: int = 64, base_channels: int = 64) -> None:
        super().__init__()
        depth = _downsamplings(size)
        widths = [base_channels * min(2 ** i, 8) for i in range(depth)]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for previous, width in zip(widths, widths[1:]):
            layers += [nn.Conv2d(previous, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.LeakyReLU(0.2, True)]
        for width, following in zip(widths[::-1], widths[::-1][1:]):
            layers += [nn.ConvTranspose2d(width, following, 4, 2, 1, bias=False), nn.BatchNorm2d(following),
                       nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[0], out_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (one halving per encoder layer)."""
        return 2 ** sum(isinstance(m, nn.Conv2d) for m in self.main)


class DiscoDiscriminator(nn.Module):
    """``(N, in_channels, S, S)`` → (logits ``(N, 1, 1, 1)``, [features after each normalised layer])."""

    def __init__(self, in_channels: int, size: int = 64, base_channels: int = 64) -> None:
        super().__init__()
        depth = _downsamplings(size)
        widths = [base_channels * min(2 ** i, 8) for i in range(depth)]
        self.first = nn.Sequential(nn.Conv2d(in_channels, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(previous, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width),
                          nn.LeakyReLU(0.2, True))
            for previous, width in zip(widths, widths[1:]))
        self.last = nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False)

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        features = []
        x = self.first(x)
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return self.last(x), features

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_features(x)[0]
