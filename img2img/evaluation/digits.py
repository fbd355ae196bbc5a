"""The offline digit feature extractor: a small CNN trained on the 4,000 embedded training digits.

It never sees the 1,000 held-out digits, which are what generated digits are
compared with.  Its penultimate layer (128 features) serves for the
classifier-FID and KID of digit images, its logits for class coverage and
label agreement.  The weights ship as package data with their SHA-256; the
script ``datasets/mnist/train_digit_classifier.py`` rebuilds them
(:func:`train_classifier`: 12 epochs of Adam with random shifts of up to 2
pixels and, for half of the batches, a 3×3 dilation, so that bold strokes, as
in the CycleGAN demo's domain b, are read too).
"""

from __future__ import annotations

import hashlib
import io
from importlib import resources

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from img2img.data.mnist import load_embedded
from img2img.errors import UserError

WEIGHTS_NAME = "digit_cnn.pt"
WEIGHTS_SHA256 = "e772c010e7238e69c695a7b95af5505fd80681994ba69c89082c88f1fb59fc7b"
LUMA = (0.299, 0.587, 0.114)
# features are divided by this, their RMS over the training digits, so that ‖f‖²/d ≈ 1 as with Inception
# features: KID's cubic kernel (f·g/d + 1)³ then stays on the scale it was designed for
FEATURE_RMS = 4.48


class DigitClassifier(nn.Module):
    """``(N, C, H, W)`` images in [-1, 1] (any C; 28×28, or larger and centre-cropped) → 128 features.

    ``classify`` gives the 10 logits.  ``num_features`` tells torchmetrics the
    feature size.
    """

    num_features = 128

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.hidden = nn.Linear(128 * 3 * 3, 128)
        self.logits = nn.Linear(128, 10)

    @staticmethod
    def prepare(images: Tensor) -> Tensor:
        """Grey ``(N, 1, 28, 28)``: colour images by luminance, larger ones centre-cropped (the demos pad by 2)."""
        images = images.float()
        if images.shape[1] >= 3:
            weights = images.new_tensor(LUMA).view(1, 3, 1, 1)
            images = (images[:, :3] * weights).sum(1, keepdim=True)
        elif images.shape[1] != 1:
            images = images[:, :1]
        height, width = images.shape[-2:]
        if (height, width) != (28, 28):
            if height < 28 or width < 28:
                images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
            else:
                top, left = (height - 28) // 2, (width - 28) // 2
                images = images[..., top:top + 28, left:left + 28]
        return images

    def _hidden(self, images: Tensor) -> Tensor:
        x = self.prepare(images)
        for conv in (self.conv1, self.conv2, self.conv3):
            x = F.max_pool2d(F.relu(conv(x)), 2)
        return F.relu(self.hidden(x.flatten(1)))

    def forward(self, images: Tensor) -> Tensor:
        return self._hidden(images) / FEATURE_RMS

    def classify(self, images: Tensor) -> Tensor:
        return self.logits(self._hidden(images))


def train_classifier(seed: int = 0, epochs: int = 12, batch_size: int = 64) -> DigitClassifier:
    """Train the classifier on the 4,000 embedded training digits only (the held-out 1,000 stay unseen)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    digits = load_embedded("train")
    images, labels = digits.as_float(), digits.labels
    net = DigitClassifier()
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), batch_size):
            index = order[start:start + batch_size]
            batch = images[index]
            shift = torch.randint(-2, 3, (2,), generator=generator).tolist()
            batch = torch.roll(batch, shifts=shift, dims=(2, 3))
            if torch.rand((), generator=generator) < 0.5:
                batch = F.max_pool2d(batch, 3, 1, 1)  # bolder strokes
            loss = F.cross_entropy(net.classify(batch), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


def held_out_accuracy(net: DigitClassifier) -> float:
    digits = load_embedded("test")
    with torch.no_grad():
        return (net.classify(digits.as_float()).argmax(1) == digits.labels).float().mean().item()


def load_classifier(device: torch.device | str = "cpu") -> DigitClassifier:
    """The shipped classifier, its file checked against the recorded SHA-256."""
    data = resources.files("img2img.evaluation").joinpath("assets", WEIGHTS_NAME).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise UserError(f"the packaged digit classifier ({WEIGHTS_NAME}) has SHA-256 {digest[:16]}..., expected "
                        f"{WEIGHTS_SHA256[:16]}...; reinstall img2img")
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    net = DigitClassifier()
    net.load_state_dict(state)
    return net.to(device).eval()
