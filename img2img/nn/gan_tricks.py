"""Remedies for mode collapse that change what the discriminator sees.

- :class:`MinibatchStd`: the minibatch standard-deviation layer (Karras et al.
  2018, §3), the parameter-free form of minibatch discrimination (Salimans et
  al. 2016, §3.2).  D sees how much its batch varies, so a generator that
  gives every noise vector the same image is caught.
- :func:`pack`: PacGAN (Lin et al. 2018): D judges ``pac`` samples at once,
  joined along the channels, all real or all fake.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MinibatchStd(nn.Module):
    """Appends one feature: the standard deviation of each feature over the batch, averaged over the features
    (and positions).  ``(N, F)`` → ``(N, F + 1)``; ``(N, C, H, W)`` → ``(N, C + 1, H, W)``."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        std = (x.float().var(dim=0, unbiased=False) + self.eps).sqrt().mean().to(x.dtype)
        return torch.cat([x, std.expand(x.shape[0], 1, *x.shape[2:])], 1)


def pack(images: Tensor, pac: int) -> Tensor:
    """PacGAN's packing: ``(N, C, H, W)`` → ``(N / pac, pac · C, H, W)``, samples ``i·pac … i·pac + pac − 1`` joined
    along the channels.  ``N`` must be a multiple of ``pac``."""
    if pac == 1:
        return images
    if images.shape[0] % pac:
        raise ValueError(f"a batch of {images.shape[0]} does not pack into groups of {pac}")
    return images.reshape(images.shape[0] // pac, pac * images.shape[1], *images.shape[2:])
