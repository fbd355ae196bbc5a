"""The official pytorch-CycleGAN-and-pix2pix generators and test-time pipeline, restated for the tests.

Written independently of img2img's own networks, in the official layer
order (``models/networks.py``: ``ResnetGenerator``, ``ResnetBlock``,
``UnetGenerator``, ``UnetSkipConnectionBlock``, ``get_norm_layer``), so that a
state dict saved from these has the official names and shapes.
:func:`official_test_output` follows the official ``test.py`` for one image
(``--preprocess none --no_flip``, ``Image.open().convert('RGB')``,
``ToTensor``, ``Normalize(0.5, 0.5)``, the network, ``util.tensor2im``, which
truncates to uint8).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import functional as TF


def official_norm(kind):
    if kind == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if kind == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    return lambda channels: nn.Identity()


def _uses_bias(norm_layer):
    return isinstance(norm_layer, functools.partial) and norm_layer.func == nn.InstanceNorm2d


class OfficialResnetBlock(nn.Module):
    def __init__(self, dim, norm_layer, use_dropout, use_bias):
        super().__init__()
        block = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias), norm_layer(dim),
                 nn.ReLU(True)]
        if use_dropout:
            block += [nn.Dropout(0.5)]
        block += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias), norm_layer(dim)]
        self.conv_block = nn.Sequential(*block)

    def forward(self, x):
        return x + self.conv_block(x)


class OfficialResnetGenerator(nn.Module):
    def __init__(self, input_nc, output_nc, ngf=64, norm="instance", use_dropout=False, n_blocks=9):
        super().__init__()
        norm_layer = official_norm(norm)
        use_bias = _uses_bias(norm_layer)
        model = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
                 norm_layer(ngf), nn.ReLU(True)]
        for i in range(2):
            mult = 2 ** i
            model += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=use_bias),
                      norm_layer(ngf * mult * 2), nn.ReLU(True)]
        for _ in range(n_blocks):
            model += [OfficialResnetBlock(ngf * 4, norm_layer, use_dropout, use_bias)]
        for i in range(2):
            mult = 2 ** (2 - i)
            model += [nn.ConvTranspose2d(ngf * mult, int(ngf * mult / 2), kernel_size=3, stride=2, padding=1,
                                         output_padding=1, bias=use_bias),
                      norm_layer(int(ngf * mult / 2)), nn.ReLU(True)]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x)


class OfficialUnetBlock(nn.Module):
    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False, innermost=False,
                 norm_layer=nn.BatchNorm2d, use_dropout=False):
        super().__init__()
        self.outermost = outermost
        use_bias = _uses_bias(norm_layer)
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu, downnorm = nn.LeakyReLU(0.2, True), norm_layer(inner_nc)
        uprelu, upnorm = nn.ReLU(True), norm_layer(outer_nc)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
            if use_dropout:
                model += [nn.Dropout(0.5)]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class OfficialUnetGenerator(nn.Module):
    def __init__(self, input_nc, output_nc, num_downs, ngf=64, norm="batch", use_dropout=True):
        super().__init__()
        norm_layer = official_norm(norm)
        block = OfficialUnetBlock(ngf * 8, ngf * 8, norm_layer=norm_layer, innermost=True)
        for _ in range(num_downs - 5):
            block = OfficialUnetBlock(ngf * 8, ngf * 8, submodule=block, norm_layer=norm_layer, use_dropout=use_dropout)
        block = OfficialUnetBlock(ngf * 4, ngf * 8, submodule=block, norm_layer=norm_layer)
        block = OfficialUnetBlock(ngf * 2, ngf * 4, submodule=block, norm_layer=norm_layer)
        block = OfficialUnetBlock(ngf, ngf * 2, submodule=block, norm_layer=norm_layer)
        self.model = OfficialUnetBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True,
                                       norm_layer=norm_layer)

    def forward(self, x):
        return self.model(x)


def settle_batch_norm(net, channels, steps=3, size=64, seed=0):
    """Give batch-norm layers non-trivial running statistics (as training would), then switch to eval."""
    generator = torch.Generator().manual_seed(seed)
    net.train()
    with torch.no_grad():
        for _ in range(steps):
            net(torch.rand(4, channels, size, size, generator=generator) * 2 - 1)
    return net.eval()


@torch.no_grad()
def official_test_output(net, path, input_nc=3):
    """What the official test.py writes for ``path`` (``--preprocess none --no_flip``, eval mode): uint8 HWC."""
    image = Image.open(path).convert("RGB")
    if input_nc == 1:
        image = image.convert("L")  # transforms.Grayscale(1)
    tensor = TF.normalize(TF.to_tensor(image), [0.5] * input_nc, [0.5] * input_nc)
    output = net.eval()(tensor[None])[0].cpu().float().numpy()
    if output.shape[0] == 1:
        output = np.tile(output, (3, 1, 1))
    return ((np.transpose(output, (1, 2, 0)) + 1) / 2.0 * 255.0).astype(np.uint8)
