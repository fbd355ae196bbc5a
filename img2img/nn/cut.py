"""The networks of CUT and FastCUT (Park et al. 2020), as in the official code
(taesungp/contrastive-unpaired-translation, ``models/networks.py``).

- :class:`BlurDownsample` / :class:`BlurUpsample`: anti-aliased resampling
  (Zhang 2019): a fixed binomial filter, [1, 2, 1]² down (reflection padded)
  and [1, 3, 3, 1]² up (replication padded), applied per channel.
- :class:`CutResnetGenerator`: CycleGAN's ResNet generator with those in
  place of strided and transposed convolutions (the official default,
  ``--no_antialias`` off).  Called with ``layers`` it returns the features
  after those modules of its ``model`` sequence instead of the image: the
  encoder features PatchNCE compares (0: the padded input, 4 and 8: the two
  downsampling convolutions, 12 and 16: the first and fifth residual blocks).
- :class:`CutPatchDiscriminator`: the 70×70 PatchGAN, anti-aliased likewise.
- :class:`PatchSampleMLP`: ``netF`` (``mlp_sample``): samples the same
  patch locations from each feature map of the input and the output, and
  maps them through a two-layer MLP per layer (256 wide) onto the unit sphere.
- :func:`patch_nce_loss`: the InfoNCE loss over patches (Eq. 2/3 of the
  paper): each output patch must pick its own input patch among the other
  patches of the same image (τ = 0.07).
- :func:`xavier_init`: the official code's ``--init_type xavier`` with gain 0.02.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from img2img.nn.norm import conv_bias, norm_layer
from img2img.nn.resnet import ResnetBlock


def _binomial(taps: int) -> Tensor:
    """The normalised 2-D binomial filter of ``taps`` × ``taps`` (3: [1, 2, 1]², 4: [1, 3, 3, 1]²)."""
    row = torch.tensor([1.0, 2.0, 1.0] if taps == 3 else [1.0, 3.0, 3.0, 1.0])
    kernel = row[:, None] * row[None, :]
    return kernel / kernel.sum()


class BlurDownsample(nn.Module):
    """Blur with [1, 2, 1]² and keep every second pixel: ``(N, C, H, W)`` → ``(N, C, ⌈H/2⌉, ⌈W/2⌉)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.register_buffer("filt", _binomial(3)[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(self.pad(x), self.filt.to(x.dtype), stride=2, groups=x.shape[1])


def replicate_edges(x: Tensor) -> Tensor:
    """``nn.ReplicationPad2d(1)``: each side extended by a copy of its edge pixels, ``(…, H, W)`` → ``(…, H + 2,
    W + 2)``, made of slices and concatenation.  The values and gradients are the same; torch's compiler,
    though, mislays the strides of ``replication_pad2d_backward``'s result (an AssertionError from its own code,
    see :func:`img2img.speed.compile_errors`), which CUT's generator met on the CPU even without channels_last."""
    x = torch.cat([x[..., :1, :], x, x[..., -1:, :]], dim=-2)
    return torch.cat([x[..., :1], x, x[..., -1:]], dim=-1)


class BlurUpsample(nn.Module):
    """Double the sides with a transposed [1, 3, 3, 1]² blur (× 4): ``(N, C, H, W)`` → ``(N, C, 2H, 2W)``."""

    upsamples = True  # what translation looks for (img2img.translate.full_resolution_layers)

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("filt", (_binomial(4) * 4)[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        # filter size 4 (even): replication padding 1 + 1, then drop the first and last row and column, as the
        # official code
        out = F.conv_transpose2d(replicate_edges(x), self.filt.to(x.dtype), stride=2, padding=2, groups=x.shape[1])
        return out[:, :, 1:-1, 1:-1]


class CutResnetGenerator(nn.Module):
    """``(N, in_channels, H, W)`` → ``(N, out_channels, H, W)`` in [-1, 1]; H and W multiples of 4.

    c7s1-64, [conv3-norm-ReLU-blurdown] × 2, R256 × n_blocks,
    [blurup-conv3-norm-ReLU] × 2, c7s1-3, tanh; module indices as in the
    official ``model`` sequence, which ``layers`` refers to.
    """

    size_multiple = 4
    min_size = 8  # the residual blocks reflect-pad a quarter-size map by one pixel

    def __init__(self, in_channels: int, out_channels: int, base_channels: int = 64, n_blocks: int = 9,
                 norm: str = "instance") -> None:
        super().__init__()
        bias = conv_bias(norm)
        width = base_channels  # ngf
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, width, 7, bias=bias),
                                   norm_layer(norm, width), nn.ReLU(True)]
        for i in range(2):  # downsampling: stride-1 convolution, then the blur pool
            channels = width * 2 ** i
            layers += [nn.Conv2d(channels, channels * 2, 3, padding=1, bias=bias), norm_layer(norm, channels * 2),
                       nn.ReLU(True), BlurDownsample(channels * 2)]
        layers += [ResnetBlock(width * 4, norm) for _ in range(n_blocks)]
        for i in range(2):  # upsampling: the blur up, then a stride-1 convolution
            channels = width * 2 ** (2 - i)
            layers += [BlurUpsample(channels), nn.Conv2d(channels, channels // 2, 3, padding=1, bias=bias),
                       norm_layer(norm, channels // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.in_channels = in_channels

    def layer_channels(self, layers: Sequence[int]) -> list[int]:
        """The channels of the features after each of ``layers``."""
        channels, found = self.in_channels, {}
        for index, module in enumerate(self.model):
            channels = getattr(module, "out_channels", channels)
            if isinstance(module, ResnetBlock):
                channels = module.conv_block[1].out_channels
            found[index] = channels
        return [found[index] for index in layers]

    def forward(self, x: Tensor, layers: Sequence[int] = ()) -> Tensor | list[Tensor]:
        """The translated image; with ``layers``, the features after those modules (the encoder stops at the
        last of them)."""
        if not layers:
            return self.model(x)
        features, last = [], max(layers)
        for index, module in enumerate(self.model):
            x = module(x)
            if index in layers:
                features.append(x)
            if index == last:
                break
        return features


class CutPatchDiscriminator(nn.Module):
    """The 70×70 PatchGAN with blur pools instead of strided convolutions: ``(N, C, H, W)`` → patch logits."""

    def __init__(self, in_channels: int, base_channels: int = 64, n_layers: int = 3, norm: str = "instance") -> None:
        super().__init__()
        bias = conv_bias(norm)
        width = base_channels  # ndf
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, padding=1), nn.LeakyReLU(0.2, True),
                                   BlurDownsample(width)]
        multiple = 1
        for n in range(1, n_layers):
            previous, multiple = multiple, min(2 ** n, 8)
            layers += [nn.Conv2d(width * previous, width * multiple, 4, padding=1, bias=bias),
                       norm_layer(norm, width * multiple), nn.LeakyReLU(0.2, True), BlurDownsample(width * multiple)]
        previous, multiple = multiple, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(width * previous, width * multiple, 4, padding=1, bias=bias),
                   norm_layer(norm, width * multiple), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(width * multiple, 1, 4, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class PatchSampleMLP(nn.Module):
    """``netF``: the same random patch locations from each feature map, a two-layer MLP per layer, L2-normalised."""

    def __init__(self, in_channels: Sequence[int], width: int = 256) -> None:
        super().__init__()
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(channels, width), nn.ReLU(), nn.Linear(width, width))
                                  for channels in in_channels)

    def forward(self, features: Sequence[Tensor], patches: int,
                locations: Sequence[Tensor] | None = None) -> tuple[list[Tensor], list[Tensor]]:
        """``features[l]`` ``(N, C_l, H_l, W_l)`` → ``(N · P, width)`` unit vectors from ``P = min(patches, H_l·W_l)``
        locations per image (the same for every image; drawn when ``locations`` is None), and the locations."""
        samples, drawn = [], []
        for index, (feature, mlp) in enumerate(zip(features, self.mlps)):
            flat = feature.permute(0, 2, 3, 1).flatten(1, 2)  # (N, H·W, C)
            if locations is None:  # drawn on the features' device (as the official code): no copy, no choice in Python
                where = torch.randperm(flat.shape[1], device=flat.device)[:min(patches, flat.shape[1])]
            else:
                where = locations[index]
            sample = mlp(flat[:, where, :].flatten(0, 1))
            samples.append(sample / (sample.float().norm(dim=1, keepdim=True).to(sample.dtype) + 1e-7))
            drawn.append(where)
        return samples, drawn


def patch_nce_loss(query: Tensor, key: Tensor, batch_size: int, temperature: float = 0.07) -> Tensor:
    """PatchNCE, one value per query patch ``(N · P,)``.

    ℓ(v, v⁺, v⁻) = −log exp(v·v⁺/τ) / (exp(v·v⁺/τ) + Σ_n exp(v·v⁻_n/τ))   (Park et al. 2020, Eq. 2)

    ``query`` ``(N · P, C)``: output patches; ``key``: the input patches at
    the same locations (detached: only the query side learns).  The negatives
    of a patch are the other P − 1 patches of its own image (the official
    default, ``nce_includes_all_negatives_from_minibatch`` off); the
    similarity of a patch with itself among them is masked to −10, as there.
    Computed in float32.
    """
    query, key = query.float(), key.detach().float()
    dim = query.shape[1]
    positive = (query * key).sum(1, keepdim=True)
    query, key = query.view(batch_size, -1, dim), key.view(batch_size, -1, dim)
    patches = query.shape[1]
    negative = torch.bmm(query, key.transpose(2, 1))
    diagonal = torch.eye(patches, device=query.device, dtype=torch.bool)[None]
    negative = negative.masked_fill(diagonal, -10.0).view(-1, patches)
    logits = torch.cat([positive, negative], 1) / temperature
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=query.device),
                           reduction="none")


def xavier_init(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """The official ``init_type='xavier'``: convolution and linear weights Xavier-normal with ``gain``, biases 0,
    batch-norm scales N(1, gain)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_normal_(layer.weight, gain=gain)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d) and layer.weight is not None:
            nn.init.normal_(layer.weight, 1.0, gain)
            nn.init.zeros_(layer.bias)
    return module
