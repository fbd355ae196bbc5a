"""The run folder: what one training run writes, and where.

::

    RUN/config.json          the resolved run configuration
    RUN/train.log            the log
    RUN/metrics.jsonl        losses, learning rate and speed every --log-every steps
    RUN/samples/step-N.png   sample grids; RUN/samples/last.png is the newest
    RUN/checkpoints/step-N.ckpt
    RUN/last.ckpt            the newest checkpoint (same file as its step-N.ckpt)
    RUN/best.ckpt            with --eval-every: the checkpoint that scored best on held-out data
    RUN/.lock                held by the process training the run, for its life (see RunDir.lock)
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from img2img.checkpoint import LAST_NAME, NO_FOLDER, replace_file, unwritable
from img2img.config import RunConfig
from img2img.errors import UserError

log = logging.getLogger(__name__)


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

    def saved_steps(self) -> list[int]:
        """The steps of the checkpoints kept in ``checkpoints/`` (``step-N.ckpt``), in order."""
        steps = []
        for path in self.checkpoints.glob("step-*.ckpt"):
            with contextlib.suppress(ValueError):
                steps.append(int(path.stem.removeprefix("step-")))
        return sorted(steps)

    def create(self, option: str = "--out", fresh: bool = True) -> None:
        """Create the folders, refusing to write a new run over an existing one, or over files that are not a
        run's (a new run replaces config.json and the sample grids, and starts metrics.jsonl afresh)."""
        if fresh:
            self._refuse_replacing(option)
        try:
            for folder in (self.root, self.samples, self.checkpoints):
                folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError as error:  # a file in a folder's place (it said "cannot write to RUN (File exists)")
            raise UserError(f"{option}: {error.filename} {NO_FOLDER}") from None
        except OSError as error:
            raise UserError(f"{option}: cannot write to {error.filename or self.root} ({error.strerror or error})") \
                from None
        refusal = unwritable(self.root)  # a folder that exists, on a read-only file system
        if refusal is not None:
            raise UserError(f"{option}: cannot write to {self.root} ({refusal[1]})")
        for stale in self.checkpoints.glob(".*.tmp-*"):  # left by a crash mid-save
            stale.unlink(missing_ok=True)

    def check_fresh(self, option: str = "--out") -> None:
        """Refuse, in one line, a folder that another process is training, or where a new run would write over
        a run's checkpoints or over files of the names a run writes that are not a run's (what :meth:`create`
        checks again under the lock)."""
        if (self.root / ".lock").exists():
            self.lock(option).close()
        self._refuse_replacing(option)

    def _saved(self) -> Path | None:
        """The first of the run's checkpoints that is here (``last.ckpt``, ``best.ckpt``, ``checkpoints/``)."""
        return next((path for path in (self.last, self.best, *sorted(self.checkpoints.glob("step-*.ckpt")))
                     if path.is_file()), None)

    def _refuse_replacing(self, option: str) -> None:
        saved = self._saved()
        if saved is not None:
            raise UserError(f"{option}: {self.root} already holds a run; continue it with --resume "
                            f"{self.root if saved == self.last else saved} or choose another {option}")
        if _is_run_config(self.config):
            return  # a run that stopped before its first checkpoint: the same command starts it again
        foreign = self._foreign()
        if foreign is not None:
            raise UserError(f"{option}: {foreign} exists and is not from an img2img run, and a new run there "
                            f"would write over it; choose another {option}")

    def check_resumable(self, checkpoint: str | Path, option: str = "--resume") -> None:
        """Refuse, in one line, to resume ``checkpoint`` in a folder that is not a run's and holds files of the
        names a run writes: a checkpoint resumed where it lies (downloaded, copied out of its run) makes its
        folder the run's, whose config.json the resume writes, whose metrics.jsonl it cuts back to the steps
        before the checkpoint, and whose train.log and sample grids it adds to."""
        if _is_run_config(self.config) or (not self.config.exists() and self._saved() is not None):
            return  # a run's folder (one that a library's Trainer wrote has no config.json)
        foreign = self._foreign()
        if foreign is not None:
            raise UserError(f"{option}: {foreign} exists and is not from an img2img run, and resuming there "
                            f"would write over it; go on in a new run folder: --resume {checkpoint} --out NEW")

    def _foreign(self) -> Path | None:
        """The first file here of the names a run writes besides its checkpoints (config.json first), which the
        callers know not to be a run's."""
        written = (self.config, self.log, self.metrics, self.samples / "last.png",
                   *sorted(self.samples.glob("step-*.png")))
        return next((path for path in written if path.exists()), None)

    def lock(self, option: str = "--out") -> IO[str]:
        """Take the run folder for this process, creating it if need be: an exclusive lock on ``RUN/.lock``,
        held until the returned file is closed.  A folder that another process is training is refused in one
        line.  The operating system drops the lock when its process ends, however it ends (a killed run's
        lock never blocks ``--resume``)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = open(self.root / ".lock", "a+")  # noqa: SIM115 - held open for the run's life
        except OSError as error:
            raise UserError(f"{option}: cannot write to {error.filename or self.root} ({error.strerror or error})") \
                from None
        locked = True
        try:
            _lock_file(handle)
        except OSError as error:
            if error.errno in _HELD:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise UserError(f"{option}: {self.root} is in use: {holder} is training it; wait for it to end, "
                                f"or choose another folder") from None
            # a file system that does not lock files (NFS without its lock service, Lustre without -o flock, some
            # FUSE mounts): training goes on unguarded, as it must
            log.warning("%s: %s cannot lock files here (%s), so a second trainer of this folder would not be "
                        "refused", option, self.root, error.strerror or error)
            locked = False
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}{'' if locked else ' (not locked)'}\n")
        handle.flush()
        return handle

    def write_config(self, run: RunConfig) -> None:
        replace_file(self.config, (run.to_json() + "\n").encode())  # on --resume, never half the old one

    def prune_checkpoints(self, keep: int) -> None:
        """Delete all but the newest ``keep`` step checkpoints (last.ckpt stays reachable: it is its own link)."""
        for old in sorted(self.checkpoints.glob("step-*.ckpt"))[:-keep or None]:
            old.unlink(missing_ok=True)

    def append_metrics(self, record: dict) -> None:
        try:
            with open(self.metrics, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as error:  # a full disk fails the buffer's flush, which names no file
            raise OSError(error.errno, error.strerror, str(error.filename or self.metrics)) from None

    def keep_metrics_to(self, step: int) -> None:
        """Drop the metrics records after ``step``, where training (re)starts: what a run that was killed wrote
        after its newest checkpoint, which the resumed run writes again (a line cut off by the kill goes too).
        The file is replaced atomically, and only when something is dropped.  Bytes that are not UTF-8 (a disk
        that failed under it) drop their lines too: they ended the resume in a UnicodeDecodeError's traceback."""
        try:
            data = self.metrics.read_bytes()
        except FileNotFoundError:
            return
        kept = "".join(line + "\n" for line in data.decode("utf-8", errors="replace").splitlines()
                       if (record_step := _record_step(line)) is not None and record_step <= step).encode()
        if kept != data:
            replace_file(self.metrics, kept)


class RunLog(logging.FileHandler):
    """The run's ``train.log``.  Where it can no longer be written (a full disk, a file-size limit), it says so
    once on the console and writes no more, and the run goes on: logging's own handling printed a traceback for
    every line, and closing the file raised the error again over the run's own (what a full disk then stops is
    the next metrics line or checkpoint, each named in one line)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8", errors="backslashreplace")  # a file's name may not be UTF-8
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.setLevel(logging.INFO)
        self.failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            super().handleError(record)
            return
        self.failed = True
        with contextlib.suppress(OSError):  # what it could not flush is lost; the file is closed all the same
            if self.stream is not None:
                self.stream.close()
        self.stream = None  # (emit would open it again)
        log.warning("%s can no longer be written (%s): the rest of the run's log is on the console only",
                    self.baseFilename, error.strerror or error)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # (NFS says that a write failed only when the file is closed)
            super().close()


def _is_run_config(path: Path) -> bool:
    """Whether ``path`` is the config.json of an img2img run."""
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and {"model", "train", "options"} <= config.keys()


def _record_step(line: str) -> int | None:
    """The step of one metrics line, or None for a line that is not a whole record."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) else None


# what a lock held by another process says (flock: EWOULDBLOCK; Windows' locking: EACCES or EDEADLOCK)
_HELD = {errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, getattr(errno, "EDEADLOCK", errno.EDEADLK)}


def _lock_file(handle: IO[str]) -> None:
    """An exclusive, non-blocking lock on an open file (OSError when another process holds it)."""
    if fcntl is not None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    import msvcrt  # noqa: PLC0415 - Windows

    handle.seek(0)
    msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)


@contextlib.contextmanager
def held(lock: IO[str] | None):
    """Close (and so release) a run folder's lock when the block ends."""
    try:
        yield lock
    finally:
        if lock is not None:
            lock.close()
