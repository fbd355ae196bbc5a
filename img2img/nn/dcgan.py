"""DCGAN's networks (Radford et al. 2016): all-convolutional, strided, batch-normalised.

Generator: the noise as a 1×1 map, a transposed convolution to a 7×7 (for
28-pixel images) or 4×4 map, then stride-2 4×4 transposed convolutions that
double the side and halve the width, each followed by batch norm and ReLU;
the last one gives the image, through tanh.  Discriminator: the mirror, with
stride-2 4×4 convolutions, LeakyReLU(0.2), batch norm on every layer but the
first, and a last convolution over the whole map to one logit.  No pooling,
no fully connected hidden layers, as the paper prescribes.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

SIZES = (28, 32, 64)


def _layout(size: int) -> tuple[int, int]:
    """(side of the first map, stride-2 layers) for an image side: 28 = 7·2², 32 = 4·2³, 64 = 4·2⁴."""
    if size not in SIZES:
        raise ValueError(f"DCGAN networks take images of side {', '.join(map(str, SIZES))}, not {size}")
    start = 7 if size == 28 else 4
    return start, int(math.log2(size // start))


class DCGANGenerator(nn.Module):
    """Noise ``(N, noise_dim)`` → images ``(N, channels, size, size)`` in [-1, 1]."""

    def __init__(self, noise_dim: int = 100, channels: int = 1, size: int = 28, base_channels: int = 64) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        start, ups = _layout(size)
        width = base_channels * 2 ** (ups - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(noise_dim, width, start, 1, 0, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU(True)]
        for _ in range(ups - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2),
                       nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, noise: Tensor) -> Tensor:
        return self.main(noise.view(noise.shape[0], self.noise_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    """Images ``(N, channels, size, size)`` → one logit each, ``(N, 1)``."""

    def __init__(self, channels: int = 1, size: int = 28, base_channels: int = 64) -> None:
        super().__init__()
        start, downs = _layout(size)
        width = base_channels
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for _ in range(downs - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2),
                       nn.LeakyReLU(0.2, True)]
            width *= 2
        layers.append(nn.Conv2d(width, 1, start, 1, 0, bias=False))
        self.main = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.main(images).flatten(1)
