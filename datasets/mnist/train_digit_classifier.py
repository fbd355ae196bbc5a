"""Rebuild img2img's digit classifier (img2img/evaluation/assets/digit_cnn.pt) from the embedded digits.

    python datasets/mnist/train_digit_classifier.py [--seed 0]

Trains on the 4,000 embedded training digits only, prints the accuracy on
the 1,000 held-out digits and the SHA-256 to record in
img2img/evaluation/digits.py (WEIGHTS_SHA256).
"""

import argparse
import hashlib
import io
from pathlib import Path

import torch

from img2img.evaluation.digits import WEIGHTS_NAME, held_out_accuracy, train_classifier

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
net = train_classifier(args.seed)
buffer = io.BytesIO()
torch.save({key: value.clone() for key, value in net.state_dict().items()}, buffer)
target = Path(__file__).resolve().parents[2] / "img2img" / "evaluation" / "assets" / WEIGHTS_NAME
target.write_bytes(buffer.getvalue())
print(f"held-out accuracy {held_out_accuracy(net):.4f}")
print(f"wrote {target}\nsha256 {hashlib.sha256(buffer.getvalue()).hexdigest()}")
