"""ResNet generator of CycleGAN (Zhu et al. 2017, Appendix 7.2; after Johnson et al. 2016).

c7s1-64, d128, d256, R256 × n_blocks, u128, u64, c7s1-3: reflection padding,
a 7×7 convolution, two stride-2 downsamplings, residual blocks, two
transposed-convolution upsamplings, a 7×7 convolution and tanh.  Layers and
parameter names follow the official ``ResnetGenerator``/``ResnetBlock``
(``model.10.conv_block.1.weight`` ...), so official weights load unchanged.
"""

from __future__ import annotations

from torch import Tensor, nn

from img2img.nn.norm import conv_bias, norm_layer

RESNET_BLOCKS = {"resnet_6blocks": 6, "resnet_9blocks": 9}


class ResnetBlock(nn.Module):
    """x + F(x), F = pad-conv3-norm-ReLU[-dropout]-pad-conv3-norm with reflection padding; ``(N, C, H, W)``."""

    def __init__(self, channels: int, norm: str = "instance", dropout: bool = False) -> None:
        super().__init__()
        bias = conv_bias(norm)
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias),
                                   norm_layer(norm, channels), nn.ReLU(True)]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """``(N, in_channels, H, W)`` → ``(N, out_channels, H, W)`` in [-1, 1]; H and W multiples of 4."""

    size_multiple = 4
    min_size = 8  # the residual blocks reflect-pad by one pixel, so a quarter-size input needs 2×2

    def __init__(self, in_channels: int, out_channels: int, base_channels: int = 64, n_blocks: int = 9,
                 norm: str = "instance", dropout: bool = False) -> None:
        super().__init__()
        bias = conv_bias(norm)
        width = base_channels  # ngf
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, width, 7, bias=bias),
                                   norm_layer(norm, width), nn.ReLU(True)]
        for i in range(2):  # downsampling
            multiple = 2 ** i
            layers += [nn.Conv2d(width * multiple, width * multiple * 2, 3, stride=2, padding=1, bias=bias),
                       norm_layer(norm, width * multiple * 2), nn.ReLU(True)]
        layers += [ResnetBlock(width * 4, norm, dropout) for _ in range(n_blocks)]
        for i in range(2):  # upsampling
            multiple = 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(width * multiple, width * multiple // 2, 3, stride=2, padding=1,
                                          output_padding=1, bias=bias),
                       norm_layer(norm, width * multiple // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)
