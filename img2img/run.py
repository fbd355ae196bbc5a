"""The run folder: what one training run writes, and where.

::

    RUN/config.json          the resolved run configuration
    RUN/train.log            the log
    RUN/metrics.jsonl        losses, learning rate and speed every --log-every steps
    RUN/samples/step-N.png   sample grids; RUN/samples/last.png is the newest
    RUN/checkpoints/step-N.ckpt
    RUN/last.ckpt            the newest checkpoint (same file as its step-N.ckpt)
    RUN/best.ckpt            with --eval-every: the checkpoint that scored best on held-out data
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from img2img.checkpoint import LAST_NAME
from img2img.config import RunConfig
from img2img.errors import UserError


class RunDir:
    """Paths inside one run folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    config = property(lambda self: self.root / "config.json")
    log = property(lambda self: self.root / "train.log")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    samples = property(lambda self: self.root / "samples")
    checkpoints = property(lambda self: self.root / "checkpoints")
    last = property(lambda self: self.root / LAST_NAME)
    best = property(lambda self: self.root / "best.ckpt")

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:08d}.ckpt"

    def sample(self, step: int) -> Path:
        return self.samples / f"step-{step:08d}.png"

    def create(self, option: str = "--out", fresh: bool = True) -> None:
        """Create the folders, refusing to write a new run over an existing one."""
        if fresh and self.last.exists():
            raise UserError(f"{option}: {self.root} already holds a run; "
                            f"continue it with --resume {self.root} or choose another {option}")
        try:
            for folder in (self.root, self.samples, self.checkpoints):
                folder.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise UserError(f"{option}: cannot write to {self.root} ({error.strerror or error})") from None
        for stale in self.checkpoints.glob(".*.tmp-*"):  # left by a crash mid-save
            stale.unlink(missing_ok=True)

    def write_config(self, run: RunConfig) -> None:
        self.config.write_text(run.to_json() + "\n")

    def prune_checkpoints(self, keep: int) -> None:
        """Delete all but the newest ``keep`` step checkpoints (last.ckpt stays reachable: it is its own link)."""
        for old in sorted(self.checkpoints.glob("step-*.ckpt"))[:-keep or None]:
            old.unlink(missing_ok=True)

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics, "a") as handle:
            handle.write(json.dumps(record) + "\n")
