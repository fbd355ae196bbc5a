"""The image history buffer of CycleGAN (Shrivastava et al. 2017; Zhu et al. 2017, Sec. 4).

The discriminator is shown generated images drawn from a history of the
generator's past outputs, not only the newest ones, which damps oscillation.
Each image passed in is returned as is while the pool fills; afterwards, with
probability 1/2 a random stored image is returned in its place (and the new
one stored instead), else the new image itself.  The pool stays per process
in distributed training, as in the official code.

The history lives on the images' device in one buffer, and each choice is
made there (by ``torch.where`` on draws of that device's generator), never in
Python: a query neither waits for the device nor depends on anything but
device memory, so a training step that queries the pool can be captured and
replayed as one CUDA graph (``--cuda-graph``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ImagePool(nn.Module):
    """A history of up to ``size`` generated images, ``(C, H, W)`` each; ``size=0`` passes images through."""

    def __init__(self, size: int = 50) -> None:
        super().__init__()
        self.size = size
        self.images: Tensor | None = None  # (size, C, H, W), made at the first query; the first `count` are filled
        self.count: Tensor | None = None  # how many are stored: an int64 scalar beside the images

    def _buffer_for(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The buffer, made (or moved, or made anew for images of another shape) to take ``images``."""
        shape = (self.size, *images.shape[1:])
        if self.images is None or self.count is None or self.images.shape != shape:
            self.images = torch.zeros(shape, dtype=images.dtype, device=images.device)
            self.count = torch.zeros((), dtype=torch.long, device=images.device)
        elif self.images.device != images.device or self.images.dtype != images.dtype:
            self.images = self.images.to(images.device, images.dtype)
            self.count = self.count.to(images.device)
        return self.images, self.count

    @torch.no_grad()
    def query(self, images: Tensor) -> Tensor:
        """``(N, C, H, W)`` in → ``(N, C, H, W)`` out: a mix of these and past images (draws on the generator of
        the images' device)."""
        if self.size == 0:
            return images
        stored, count = self._buffer_for(images)
        device = images.device
        out = []
        for image in images.detach():
            full = count >= self.size
            swap = full & (torch.rand((), device=device) < 0.5)
            # filling: the next free slot; full: a random one, given back and replaced by the new image half the time
            slot = torch.where(full, torch.randint(self.size, (), device=device), count.clamp(max=self.size - 1))
            slot = slot.reshape(1)
            old = stored.index_select(0, slot)[0]
            out.append(torch.where(swap, old, image))
            stored.index_copy_(0, slot, torch.where(full & ~swap, old, image).unsqueeze(0))
            count.add_(1).clamp_(max=self.size)
        return torch.stack(out)

    def state(self) -> Tensor:
        """The stored images as one tensor ``(K, C, H, W)`` (``(0,)`` when empty), for checkpoints."""
        if self.images is None or self.count is None:
            return torch.zeros(0)
        filled = int(self.count)
        return self.images[:filled].cpu() if filled else torch.zeros(0)

    def load(self, stored: Tensor, device: torch.device | None = None) -> None:
        if not stored.numel():
            self.images = self.count = None
            return
        stored = stored.to(device) if device is not None else stored
        self.images = self.count = None
        buffer, count = self._buffer_for(stored)
        buffer[:len(stored)] = stored[:self.size]
        count.fill_(min(len(stored), self.size))
