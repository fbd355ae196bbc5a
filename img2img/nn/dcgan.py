"""DCGAN's networks (Radford et al. 2016): all-convolutional, strided, batch-normalised.

Generator: the noise as a 1×1 map, a transposed convolution to a 7×7 (for
28-pixel images) or 4×4 map, then stride-2 4×4 transposed convolutions that
double the side and halve the width, each followed by batch norm and ReLU;
the last one gives the image, through tanh.  Discriminator: the mirror, with
stride-2 4×4 convolutions, LeakyReLU(0.2), batch norm on every layer but the
first, and a last convolution over the whole map to one logit.  No pooling,
no fully connected hidden layers, as the paper prescribes.

The conditional models use them too: with ``classes`` > 0, G takes the
label as a one-hot vector joined to its noise, and D gains a second head,
a convolution over the same last map to the class logits (AC-GAN, Odena et
al. 2017).  D may append the minibatch standard deviation before its heads.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from img2img.nn.gan_tricks import MinibatchStd
from img2img.nn.mlp import join_label

SIZES = (28, 32, 64)


def _layout(size: int) -> tuple[int, int]:
    """(side of the first map, stride-2 layers) for an image side: 28 = 7·2², 32 = 4·2³, 64 = 4·2⁴."""
    if size not in SIZES:
        raise ValueError(f"DCGAN networks take images of side {', '.join(map(str, SIZES))}, not {size}")
    start = 7 if size == 28 else 4
    return start, int(math.log2(size // start))


class DCGANGenerator(nn.Module):
    """Noise ``(N, noise_dim)`` (and, with ``classes``, labels ``(N,)``) → images ``(N, channels, size, size)`` in
    [-1, 1]."""

    def __init__(self, noise_dim: int = 100, channels: int = 1, size: int = 28, base_channels: int = 64,
                 classes: int = 0) -> None:
        super().__init__()
        self.noise_dim, self.classes = noise_dim, classes
        start, ups = _layout(size)
        width = base_channels * 2 ** (ups - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(noise_dim + classes, width, start, 1, 0, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU(True)]
        for _ in range(ups - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2),
                       nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, noise: Tensor, labels: Tensor | None = None) -> Tensor:
        joined = join_label(noise, labels, self.classes)
        return self.main(joined.view(*joined.shape, 1, 1))


class DCGANDiscriminator(nn.Module):
    """Images ``(N, channels, size, size)`` → one logit each, ``(N, 1)``; with ``classes``, a second head gives the
    class logits ``(N, classes)`` of the same features."""

    def __init__(self, channels: int = 1, size: int = 28, base_channels: int = 64, classes: int = 0,
                 minibatch_std: bool = False) -> None:
        super().__init__()
        start, downs = _layout(size)
        width = base_channels
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for _ in range(downs - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2),
                       nn.LeakyReLU(0.2, True)]
            width *= 2
        self.main = nn.Sequential(*layers)
        self.minibatch_std = MinibatchStd() if minibatch_std else None
        width += 1 if minibatch_std else 0
        self.out = nn.Conv2d(width, 1, start, 1, 0, bias=False)
        self.class_head = nn.Conv2d(width, classes, start, 1, 0) if classes else None

    def features(self, images: Tensor) -> Tensor:
        """The last hidden map ``(N, width, start, start)`` (what feature matching compares)."""
        return self.main(images)

    def _joined(self, features: Tensor) -> Tensor:
        return features if self.minibatch_std is None else self.minibatch_std(features)

    def forward(self, images: Tensor, classes: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """The logits ``(N, 1)``; with ``classes``, also the class logits ``(N, classes)`` of the same features
        (AC-GAN's auxiliary classifier)."""
        features = self._joined(self.features(images))
        logits = self.out(features).flatten(1)
        if not classes:
            return logits
        if self.class_head is None:
            raise ValueError("this discriminator has no class head (classes=0)")
        return logits, self.class_head(features).flatten(1)
