"""Feature extractors for FID and KID: the digit classifier, the standard Inception, a random one for tests.

The standard FID features are those of the TF-ported Inception-v3
(``pt_inception-2015-12-05``, 2048-d pool features), through torchmetrics and
torch-fidelity.  Its weights are never downloaded here: they are used when
given (``--inception-weights FILE``), named by ``IMG2IMG_INCEPTION_WEIGHTS``,
or already in torch's hub cache; otherwise a one-line error says where to put
them.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from img2img.errors import NOT_A_FILE, UserError

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
INCEPTION_ENV = "IMG2IMG_INCEPTION_WEIGHTS"
EXTRACTORS = ("digits", "inception", "random")


class RandomFeatures(nn.Module):
    """A fixed, randomly initialised conv net (seeded): cheap features that test the FID/KID plumbing."""

    def __init__(self, in_channels: int = 3, num_features: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.num_features = num_features
        generator = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(in_channels, num_features, 3, stride=2, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator) * 0.3)
            self.conv.bias.zero_()
        self.in_channels = in_channels

    def forward(self, images: Tensor) -> Tensor:
        images = images.float()
        if images.shape[1] != self.in_channels:
            images = images.mean(1, keepdim=True).expand(-1, self.in_channels, -1, -1)
        return torch.tanh(self.conv(images)).mean((2, 3))


class InceptionFeatures(nn.Module):
    """torchmetrics' Inception-v3 (FID weights) on ``(N, C, H, W)`` images in [-1, 1] (grey repeated to RGB)."""

    num_features = 2048

    def __init__(self, weights: Path) -> None:
        super().__init__()
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3  # noqa: PLC0415
        except (ImportError, ModuleNotFoundError):
            raise UserError("Inception features need torchmetrics and torch-fidelity: "
                            'pip install "img2img[inception]"') from None
        try:
            self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                          feature_extractor_weights_path=str(weights))
        except ModuleNotFoundError:
            raise UserError("Inception features need torch-fidelity: pip install \"img2img[inception]\"") from None

    def forward(self, images: Tensor) -> Tensor:
        images = images.float()
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        as_bytes = images[:, :3].add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)
        return self.net(as_bytes).reshape(len(images), -1)


def find_inception_weights(given: str | None = None, needed_by: str = "--features inception") -> Path:
    """The Inception weights file: ``given`` (``--inception-weights``), else ``$IMG2IMG_INCEPTION_WEIGHTS``, else
    torch's hub cache; a :class:`UserError` naming ``needed_by`` (what needs them) when there is none."""
    candidates = [("--inception-weights", given), (INCEPTION_ENV, os.environ.get(INCEPTION_ENV))]
    for source, value in candidates:
        if value:
            path = Path(value).expanduser()
            if not path.is_file():  # never a named pipe, whose reader would wait for a writer
                what = "does not exist" if not path.exists() else "is a folder" if path.is_dir() else f"is {NOT_A_FILE}"
                raise UserError(f"{source}: {path} {what}")
            return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if cached.is_file():
        return cached
    given_how = "pass --inception-weights FILE, " if needed_by.startswith("--features") else ""
    raise UserError(f"{needed_by}: no Inception weights here (nothing is downloaded); get {INCEPTION_URL} "
                    f"and {given_how}set {INCEPTION_ENV}, or put it at {cached}")


def check_inception(needed_by: str) -> None:
    """That Inception features can be built (their weights found, torch-fidelity installed), without loading them:
    a :class:`UserError` naming ``needed_by`` otherwise."""
    find_inception_weights(needed_by=needed_by)
    if importlib.util.find_spec("torch_fidelity") is None:
        raise UserError(f'{needed_by}: Inception features need torch-fidelity: pip install "img2img[inception]"')


def build_extractor(name: str, inception_weights: str | None = None, channels: int = 3) -> nn.Module:
    """A feature extractor by name: ``digits`` (shipped), ``inception`` (local weights) or ``random``."""
    if name == "digits":
        from img2img.evaluation.digits import load_classifier  # noqa: PLC0415

        return load_classifier()
    if name == "inception":
        return InceptionFeatures(find_inception_weights(inception_weights))
    if name == "random":
        return RandomFeatures(channels)
    raise UserError(f"--features must be one of {', '.join(EXTRACTORS)}, got {name!r}")
