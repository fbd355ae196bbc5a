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

SIGHUP (the terminal or the ssh session went away) is taken as SIGTERM.  A
SIGHUP or SIGINT that the process was started ignoring stays ignored: ``nohup``
ignores SIGHUP, and a shell script starts its background jobs ignoring SIGINT
(the terminal's Ctrl-C is the script's); Python leaves them ignored, and so does
the command while it starts and checks its data.  Elsewhere (folder translation)
SIGTERM and SIGHUP are Ctrl-C: :func:`terminate_as_interrupt` raises
:class:`Interrupted` where the program is, as Python's Ctrl-C raises
``KeyboardInterrupt``, so that the work under way ends and is said; by default
they end the process on the spot, without a word.  Work inside a library that an
exception raised wherever it is could break (torch's ONNX exporter) holds them
until it ends (:func:`held`).
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType

log = logging.getLogger("img2img.train")

HANGUP = getattr(signal, "SIGHUP", None)  # the terminal went away (POSIX)
BROKEN_PIPE = getattr(signal, "SIGPIPE", None)  # the reader of what the process prints went away (POSIX)


def _kept_ignored(number: int) -> bool:
    """Whether ``number`` is a SIGHUP (``nohup``) or SIGINT (a background job of a shell script, which the shell
    starts ignoring Ctrl-C) that this process was started ignoring: it stays ignored, as Python leaves it."""
    return number in (signal.SIGINT, HANGUP) and signal.getsignal(number) == signal.SIG_IGN


class Interrupted(KeyboardInterrupt):
    """Training stopped on a signal (``signal_number``): between two steps, with a checkpoint, or at once."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


def _interrupt_main_soon(number: int) -> None:
    time.sleep(0.01)  # the main thread has long left the hook that started this thread
    _thread.interrupt_main(number)


@contextlib.contextmanager
def delivered_again() -> Iterator[None]:
    """While entered, an interruption that Python could not raise is delivered again rather than lost.  A signal's
    handler runs wherever the main thread is, and may land in a weak reference's callback, a ``__del__`` or a
    garbage collector's callback, whose exceptions Python only prints ("Exception ignored in ...") and drops: a
    SIGTERM lost there left a command running until the SIGKILL that followed (seen on a GPU machine, where
    torch's compiler was at work).  Here the signal is raised again in the main thread, whose handler then runs
    at the next point where an exception can be raised (should it land in such a place again, it comes back
    once more).  It is raised from another thread a moment later: raised at once, its handler would run inside
    this hook, whose own exceptions Python drops too."""
    previous = sys.unraisablehook

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        error = unraisable.exc_value
        if isinstance(error, KeyboardInterrupt):  # Interrupted, or Python's own Ctrl-C
            number = getattr(error, "signal_number", signal.SIGINT)
            if callable(signal.getsignal(number)):  # a handler of Python's (else interrupt_main does nothing)
                threading.Thread(target=_interrupt_main_soon, args=(number,), daemon=True,
                                 name="img2img-interrupt-again").start()
                return
        previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        if sys.unraisablehook is hook:  # (unless someone set their own since)
            sys.unraisablehook = previous


class StopRequests:
    """While entered, SIGINT, SIGTERM and SIGHUP (the terminal or ssh session went away, which ended a run on
    the spot) set :attr:`signal` rather than stop the program, and a second one raises :class:`Interrupted` if a
    step is under way (:attr:`in_step`).  A SIGHUP or SIGINT that the process was started ignoring (``nohup``, a
    script's background job) stays ignored.  Entered outside the main thread (where Python sets no handlers) it
    does nothing.  A process forked while it is entered (a data-loading worker) ignores SIGINT and SIGHUP, which
    a terminal sends it too (the training process ends its workers when it stops), and ends on SIGTERM."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, *((HANGUP,) if HANGUP else ()))
    _active: StopRequests | None = None  # the one entered in the main thread, which reader_gone asks

    def __init__(self, notice: str = "stopping when this step ends, with a checkpoint (another {again} stops at "
                                      "once, without one)") -> None:
        self._notice_text = notice  # said on the first signal; {again}: what a second one is (Ctrl-C, SIGTERM, ...)
        self._again = contextlib.ExitStack()  # an interruption Python dropped is delivered again (delivered_again)
        self._signal: int | None = None
        self._notice: threading.Thread | None = None  # says that the run stops (see _handle)
        self._previous: dict[int, object] = {}
        self._pid = os.getpid()
        self.in_step = False  # set by the loop while a step is under way: only that is cut short
        self._outer: StopRequests | None = None  # the one entered before this one, if any

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            self._again.enter_context(delivered_again())
            for number in self.SIGNALS:
                if not _kept_ignored(number):
                    self._previous[number] = signal.signal(number, self._handle)
            self._outer, StopRequests._active = StopRequests._active, self
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, signal.SIG_DFL if previous is None else previous)  # None: set outside Python
        self._previous.clear()
        self._again.close()
        if StopRequests._active is self:
            StopRequests._active = self._outer

    @classmethod
    def reader_gone(cls) -> bool:
        """The reader of what this process prints went away (a broken pipe: ``img2img train ... 2>&1 | less``,
        then q).  Where a StopRequests is entered, the loop stops as on a signal, SIGPIPE: when the step ends,
        with a checkpoint (the run trained on to its end unseen, and the shell waited for it); True then.  False
        where none is (the command ends there, as a shell's pipeline ends its writers)."""
        requests = cls._active
        if requests is None or BROKEN_PIPE is None or os.getpid() != requests._pid:
            return False
        if requests._signal is None:
            requests._handle(BROKEN_PIPE, None)
        return True

    @property
    def signal(self) -> int | None:
        """The signal that asked the loop to stop, once it was said (None: none came)."""
        if self._notice is not None:  # (read by the loop, which holds no lock of the log's)
            self._notice.join()
            self._notice = None
        return self._signal

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:  # a forked worker (Ctrl-C reaches it too): the training process decides
            if number == signal.SIGTERM:  # when it stops its workers, or when someone else does
                signal.signal(number, signal.SIG_DFL)
                os.kill(os.getpid(), number)
            return
        name = signal.Signals(number).name
        if self._signal is not None:
            if self.in_step:
                raise Interrupted(number)
            return  # between steps the loop is stopping already (writing its checkpoint, ending its workers)
        self._signal = number
        # said by another thread: this handler runs wherever the main thread was, perhaps halfway through writing
        # a log line, where a line of its own met the file's writer busy ("reentrant call") and printed a
        # traceback instead; the thread waits for that line to end
        self._notice = threading.Thread(
            target=log.warning, daemon=True, name="img2img-stop-notice",
            args=("%s: %s", name, self._notice_text.format(
                again={signal.SIGINT: "Ctrl-C", BROKEN_PIPE: "signal"}.get(number, name))))
        self._notice.start()


@contextlib.contextmanager
def held(what: str) -> Iterator[Callable[[], None]]:
    """While entered (in the main thread; elsewhere it does nothing), SIGINT, SIGTERM and SIGHUP do not stop the
    work where it is, however many come: the first is said at once (``SIGINT: stopping when WHAT ends``) and
    raised as :class:`Interrupted` where the block calls the function it yields, or else where it ends.  For
    seconds of work inside a library that an exception raised wherever it happens to be can break beyond repair:
    torch's ONNX exporter, whose dispatch modes abort the process (``terminate called after throwing an instance
    of 'c10::Error' ... trying to set the current UNKNOWN_MODE, but one already exists``, and a page of C++
    frames) or crash it when a second Ctrl-C's KeyboardInterrupt lands while the first one's unwinds through
    them (3 of some 75 double Ctrl-Cs at random moments of ``img2img export``; none of 40 single ones).
    SIGKILL still ends the process."""
    with StopRequests(f"stopping when {what} ends") as stops:

        def check() -> None:
            if stops.signal is not None:
                raise Interrupted(stops.signal)

        yield check
    check()


def said(error: BaseException) -> BaseException:
    """``error`` (an interruption), marked as said: what the stopped work kept was logged, so the command line
    adds no line of its own."""
    error.said = True  # type: ignore[attr-defined]
    return error


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While entered (in the main thread; elsewhere it does nothing), SIGTERM and SIGHUP (unless ``nohup``
    ignores it) raise :class:`Interrupted` where this process is, as Ctrl-C raises ``KeyboardInterrupt``.  A
    process forked meanwhile (a loading worker) still ends on them, as by default."""
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

    numbers = [n for n in (signal.SIGTERM, HANGUP) if n is not None and not _kept_ignored(n)]
    previous = {number: signal.signal(number, handle) for number in numbers}
    try:
        with delivered_again():
            yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)


__all__ = ["HANGUP", "Interrupted", "StopRequests", "delivered_again", "held", "said", "terminate_as_interrupt"]
