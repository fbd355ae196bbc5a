"""TensorBoard event files for a run (``--tensorboard``; ``pip install -e ".[tensorboard]"``).

``RUN/tensorboard`` gets the losses, learning rate and speed every
``--log-every`` steps, each sample grid, each held-out evaluation's metrics,
and the resolved configuration as text; ``tensorboard --logdir RUN`` shows
them.  Writing them never stops training: the first failure is logged as a
warning and the board falls silent.  A missing package is a one-line error
before the run starts (:func:`check_available`).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from torch import Tensor

from img2img.errors import UserError

log = logging.getLogger(__name__)

FOLDER = "tensorboard"


def check_available() -> None:
    """A one-line error when the tensorboard package is not installed."""
    if importlib.util.find_spec("tensorboard") is None:
        raise UserError("--tensorboard needs the tensorboard package: pip install 'img2img[tensorboard]' "
                        "(or leave --tensorboard off)")


def _tag(key: str) -> str:
    """Where a logged value goes: losses under loss/, learning rate and speed under train/."""
    if key == "lr":
        return "train/learning_rate"
    if key == "steps_per_s":
        return "train/steps_per_second"
    return f"loss/{key}"


class Board:
    """One run's TensorBoard writer; a no-op when off, and after the first failure."""

    def __init__(self, run_root: Path | None, start_step: int = 0) -> None:
        self.writer: Any = None
        if run_root is None:
            return
        check_available()
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415

        # purge_step: events that a crashed run wrote after its newest checkpoint (at start_step) are dropped
        self._guard(lambda: setattr(self, "writer", SummaryWriter(str(run_root / FOLDER),
                                                                  purge_step=start_step + 1 if start_step else None)))

    def _guard(self, write) -> None:
        try:
            write()
        except Exception as error:  # noqa: BLE001 - monitoring never stops training
            log.warning("TensorBoard: %s; no more events are written for this run", str(error).splitlines()[0]
                        if str(error) else type(error).__name__)
            self.writer = None

    def config(self, text: str, step: int) -> None:
        if self.writer is not None:
            self._guard(lambda: self.writer.add_text("config", "```\n" + text + "\n```", step))

    def record(self, record: dict[str, Any]) -> None:
        """One log record: ``{"step", losses..., "lr", "steps_per_s"}``."""
        if self.writer is None:
            return
        step = record["step"]

        def write() -> None:
            for key, value in record.items():
                if key != "step" and isinstance(value, float):
                    self.writer.add_scalar(_tag(key), value, step)
            self.writer.flush()

        self._guard(write)

    def evaluation(self, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return

        def write() -> None:
            for key, value in values.items():
                self.writer.add_scalar(f"eval/{key}", float(value), step)
            self.writer.flush()

        self._guard(write)

    def image(self, grid: Tensor, step: int) -> None:
        """A sample grid ``(3, H, W)`` in [0, 1]."""
        if self.writer is not None:
            self._guard(lambda: (self.writer.add_image("samples", grid, step), self.writer.flush()))

    def close(self) -> None:
        if self.writer is not None:
            self._guard(self.writer.close)
            self.writer = None
