"""PatchGAN discriminators of pix2pix and CycleGAN (Isola et al. 2017, Sec. 3.2.2; Zhu et al. 2017, Sec. 4).

:class:`PatchDiscriminator` classifies overlapping patches as real or fake:
with ``n_layers=3`` (the official ``basic``) each output logit sees a 70×70
input patch.  :class:`PixelDiscriminator` is the 1×1 ("PixelGAN") variant.
Layers and parameter names follow the official ``NLayerDiscriminator`` and
``PixelDiscriminator``.
"""

from __future__ import annotations

from torch import Tensor, nn

from img2img.nn.norm import conv_bias, norm_layer


class PatchDiscriminator(nn.Module):
    """``(N, in_channels, H, W)`` → patch logits ``(N, 1, H', W')``; H' = W' = 30 for 256×256 with 3 layers."""

    def __init__(self, in_channels: int, base_channels: int = 64, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        bias = conv_bias(norm)
        width = base_channels  # ndf
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, kernel_size=4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2, True)]
        multiple = 1
        for n in range(1, n_layers):
            previous, multiple = multiple, min(2 ** n, 8)
            layers += [nn.Conv2d(width * previous, width * multiple, kernel_size=4, stride=2, padding=1, bias=bias),
                       norm_layer(norm, width * multiple), nn.LeakyReLU(0.2, True)]
        previous, multiple = multiple, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(width * previous, width * multiple, kernel_size=4, stride=1, padding=1, bias=bias),
                   norm_layer(norm, width * multiple), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(width * multiple, 1, kernel_size=4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """``(N, in_channels, H, W)`` → one logit per pixel, ``(N, 1, H, W)``."""

    def __init__(self, in_channels: int, base_channels: int = 64, norm: str = "batch") -> None:
        super().__init__()
        bias = conv_bias(norm)
        width = base_channels
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=1, stride=1, padding=0), nn.LeakyReLU(0.2, True),
            nn.Conv2d(width, width * 2, kernel_size=1, stride=1, padding=0, bias=bias),
            norm_layer(norm, width * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(width * 2, 1, kernel_size=1, stride=1, padding=0, bias=bias))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def receptive_field(n_layers: int) -> int:
    """The input patch each logit of a :class:`PatchDiscriminator` sees (70 for 3 layers)."""
    field = 1
    for stride in [1, 1] + [2] * n_layers:  # walk back from the output: two stride-1 convs, then the stride-2 ones
        field = field * stride + (4 - stride)
    return field
