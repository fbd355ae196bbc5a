"""The host's pace at folder translation's own CPU work, for .ci/gpu.sh's machine.log.

Per image the folder pipeline decodes a JPEG (read_image_levels) and encodes a PNG (encode_image); this times
both on a 256² image, in one process and in as many side by side as the host says it has CPUs.  Hosts of one
GPU kind ran the pipeline 4-5x apart (BENCHMARKS.md); these lines say whether the host's CPUs were the cause.
"""
from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from img2img.data.images import encode_image, read_image_levels
from img2img.resources import available_cpus

SECONDS = 1.5


def _image(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    low = rng.integers(0, 256, (18, 18, 3), dtype=np.uint8)
    path = folder / "photo.jpg"
    Image.fromarray(low).resize((256, 256), Image.BICUBIC).save(path, quality=90)
    return path


def _pace(path: str) -> float:
    """Images per second, decoding ``path`` and encoding the result as PNG, for SECONDS."""
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < SECONDS:
        levels, _ = read_image_levels(path)
        encode_image(levels, ".png")
        count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = str(_image(Path(folder)))
        alone = _pace(path)
        processes = available_cpus()
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            together = sum(pool.map(_pace, [path] * processes))
    print(f"host pace (256² JPEG decoded + PNG encoded): {alone:.0f} images/s in one process, {together:.0f} in "
          f"{processes} side by side (x{together / alone:.1f}); os.cpu_count {os.cpu_count()}")


if __name__ == "__main__":
    main()
