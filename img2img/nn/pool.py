"""The image history buffer of CycleGAN (Shrivastava et al. 2017; Zhu et al. 2017, Sec. 4).

The discriminator is shown generated images drawn from a history of the
generator's past outputs, not only the newest ones, which damps oscillation.
Each image passed in is returned as is while the pool fills; afterwards, with
probability 1/2 a random stored image is returned in its place (and the new
one stored instead), else the new image itself.  The pool stays per process
in distributed training, as in the official code.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ImagePool(nn.Module):
    """A history of up to ``size`` generated images, ``(C, H, W)`` each; ``size=0`` passes images through."""

    def __init__(self, size: int = 50) -> None:
        super().__init__()
        self.size = size
        self.images: list[Tensor] = []

    @torch.no_grad()
    def query(self, images: Tensor) -> Tensor:
        """``(N, C, H, W)`` in → ``(N, C, H, W)`` out: a mix of these and past images (draws on torch's generator)."""
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(()) < 0.5:
                slot = int(torch.randint(len(self.images), ()))
                out.append(self.images[slot])
                self.images[slot] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state(self) -> Tensor:
        """The stored images as one tensor ``(K, C, H, W)`` (``(0,)`` when empty), for checkpoints."""
        return torch.stack(self.images).cpu() if self.images else torch.zeros(0)

    def load(self, stored: Tensor, device: torch.device | None = None) -> None:
        self.images = [image.to(device) if device is not None else image for image in stored] if stored.numel() else []
