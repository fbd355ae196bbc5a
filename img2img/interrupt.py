"""Stopping a training run by a signal: when the step under way ends, with a checkpoint.

SIGINT (Ctrl-C) and SIGTERM (``kill``, a job scheduler's time limit, ``docker
stop``) ask the training loop to stop.  It finishes the step under way, saves a
checkpoint and raises :class:`Interrupted`, so no step's work is lost and the
checkpoint resumes exactly.  A Python ``KeyboardInterrupt`` raised wherever the
main thread happens to be could land between two networks' updates or inside an
optimiser's loop over its parameters, where no consistent checkpoint can be
written.  A second signal during the step under way stops at once, without a
checkpoint of it; the newest checkpoint on disk stays as it was.  Between steps,
where the loop is stopping already, a second signal changes nothing: the checkpoint
being written is finished.

Elsewhere (folder translation) SIGTERM is Ctrl-C: :func:`terminate_as_interrupt`
raises :class:`Interrupted` where the program is, as Python's Ctrl-C raises
``KeyboardInterrupt``, so that the work under way ends and is said; Python's
default for SIGTERM ends the process on the spot, without a word.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType, TracebackType

log = logging.getLogger("img2img.train")


class Interrupted(KeyboardInterrupt):
    """Training stopped on a signal (``signal_number``): between two steps, with a checkpoint, or at once."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


class StopRequests:
    """While entered, SIGINT and SIGTERM set :attr:`signal` rather than stop the program, and a second one
    raises :class:`Interrupted` if a step is under way (:attr:`in_step`).  Entered outside the main thread
    (where Python sets no handlers) it does nothing.  A process forked while it is entered (a data-loading
    worker) ignores SIGINT, which a terminal's Ctrl-C sends it too (the training process ends its workers when
    it stops), and ends on SIGTERM."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}
        self._pid = os.getpid()
        self.in_step = False  # set by the loop while a step is under way: only that is cut short

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, signal.SIG_DFL if previous is None else previous)  # None: set outside Python
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:  # a forked worker (Ctrl-C reaches it too): the training process decides
            if number == signal.SIGTERM:  # when it stops its workers, or when someone else does
                signal.signal(number, signal.SIG_DFL)
                os.kill(os.getpid(), number)
            return
        name = signal.Signals(number).name
        if self.signal is not None:
            if self.in_step:
                raise Interrupted(number)
            return  # between steps the loop is stopping already (writing its checkpoint, ending its workers)
        self.signal = number
        log.warning("%s: stopping when this step ends, with a checkpoint (another %s stops at once, without one)",
                    name, "Ctrl-C" if number == signal.SIGINT else name)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While entered (in the main thread; elsewhere it does nothing), SIGTERM raises :class:`Interrupted` where
    this process is, as Ctrl-C raises ``KeyboardInterrupt``.  A process forked meanwhile (a loading worker) still
    ends on it, as by default."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pid = os.getpid()

    def handle(number: int, frame: FrameType | None) -> None:
        if os.getpid() != pid:
            signal.signal(number, signal.SIG_DFL)
            os.kill(os.getpid(), number)
            return
        raise Interrupted(number)

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


__all__ = ["Interrupted", "StopRequests", "terminate_as_interrupt"]
