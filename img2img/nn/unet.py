"""U-Net generator of pix2pix (Isola et al. 2017, Sec. 3.2.1 and Appendix 6.1.1).

An encoder of stride-2 4×4 convolutions (C64-C128-C256-C512-C512-...) and a
mirrored decoder of transposed convolutions, with a skip connection
concatenating each encoder level to its decoder level.  ``num_downs``
downsamplings take a 2**num_downs image to 1×1 at the bottleneck: the
official ``unet_256`` has 8, ``unet_128`` 7.  Dropout 0.5 follows the
``num_downs - 5`` innermost non-bottleneck decoder blocks (three for
unet_256, as in the paper).

Layers are nested exactly as in the official pytorch-CycleGAN-and-pix2pix
``UnetGenerator``/``UnetSkipConnectionBlock``, so parameter names match
(``model.model.1.model.3.weight`` ...) and official weights load unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from img2img.nn.norm import conv_bias, norm_layer

UNET_DEPTHS = {"unet_128": 7, "unet_256": 8}


class UnetSkipBlock(nn.Module):
    """One U-Net level: down, the inner levels, up; its input concatenated to its output (except outermost).

    Input ``(N, outer, H, W)`` (``in_channels`` for the outermost level);
    output ``(N, 2*outer, H, W)``, or ``(N, outer, H, W)`` at the outermost level.
    """

    def __init__(self, outer_channels: int, inner_channels: int, in_channels: int | None = None,
                 inner: nn.Module | None = None, outermost: bool = False, innermost: bool = False,
                 norm: str = "batch", dropout: bool = False) -> None:
        super().__init__()
        self.outermost = outermost
        bias = conv_bias(norm)
        in_channels = outer_channels if in_channels is None else in_channels
        down = nn.Conv2d(in_channels, inner_channels, kernel_size=4, stride=2, padding=1, bias=bias)
        if outermost:
            up = nn.ConvTranspose2d(inner_channels * 2, outer_channels, kernel_size=4, stride=2, padding=1)
            layers = [down, inner, nn.ReLU(True), up, nn.Tanh()]
        elif innermost:
            up = nn.ConvTranspose2d(inner_channels, outer_channels, kernel_size=4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), up, norm_layer(norm, outer_channels)]
        else:
            up = nn.ConvTranspose2d(inner_channels * 2, outer_channels, kernel_size=4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2, True), down, norm_layer(norm, inner_channels), inner,
                      nn.ReLU(True), up, norm_layer(norm, outer_channels)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """``(N, in_channels, H, W)`` → ``(N, out_channels, H, W)`` in [-1, 1]; H and W multiples of 2**num_downs."""

    def __init__(self, in_channels: int, out_channels: int, num_downs: int = 8, base_channels: int = 64,
                 norm: str = "batch", dropout: bool = True) -> None:
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"a U-Net needs at least 5 downsamplings, got {num_downs}")
        self.num_downs = num_downs
        width = base_channels  # ngf
        block = UnetSkipBlock(width * 8, width * 8, innermost=True, norm=norm)
        for _ in range(num_downs - 5):
            block = UnetSkipBlock(width * 8, width * 8, inner=block, norm=norm, dropout=dropout)
        block = UnetSkipBlock(width * 4, width * 8, inner=block, norm=norm)
        block = UnetSkipBlock(width * 2, width * 4, inner=block, norm=norm)
        block = UnetSkipBlock(width, width * 2, inner=block, norm=norm)
        self.model = UnetSkipBlock(out_channels, width, in_channels=in_channels, inner=block, outermost=True,
                                   norm=norm)

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this."""
        return 2 ** self.num_downs

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)
