"""Decoding that no broken file can turn into a crash.

Images are decoded in worker processes (DataLoader workers), so a native
decoder that dies on a file (a segmentation fault, an abort) takes only its
worker with it.  This module notices a dead worker, finds the file it died
on, and lets the caller go on without that file:

- :func:`find_crashes` decodes files one after another in a child process
  that announces each file before it starts on it; when the child dies, the
  announced file is the culprit, and a new child carries on after it.
- :func:`resilient` runs a DataLoader over a list of files and, when a
  worker dies, names the culprit (:func:`find_crashes` on the files that
  were in flight) and starts a new loader over the files not yet delivered.
- :func:`verify_images` fully decodes every file of a training folder once,
  in parallel and with a progress bar, before any compute is spent.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import multiprocessing
import multiprocessing.util
import os
import signal
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch.multiprocessing
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from img2img.data import images
from img2img.errors import UserError, say_once
from img2img.resources import available_cpus, open_files_limit

log = logging.getLogger(__name__)


def worker_died(error: BaseException) -> bool:
    """Whether ``error`` is a DataLoader's report that one of its worker processes died, or what fetching a batch
    from a worker that is dying raises before the DataLoader sees it gone: a batch's tensors cross processes as
    file descriptors, which the main process asks the sending worker for, and a worker that died since it sent
    the batch resets (or closes) that connection."""
    if isinstance(error, (ConnectionError, EOFError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and "DataLoader worker" in text and (
        "exited unexpectedly" in text or "killed by signal" in text)


def original_message(error: BaseException) -> str:
    """The one-line message of an error, also when a DataLoader re-raised it from a worker (whose message is the
    worker's whole traceback: its last line is the original ``Type: message``)."""
    text = str(error).strip()
    if "Original Traceback" not in text:
        return text.splitlines()[0] if text else type(error).__name__
    last = text.splitlines()[-1]
    name, separator, message = last.partition(": ")
    return message if separator and " " not in name else last


@contextlib.contextmanager
def worker_deaths_at_fetch(loader: Any = None) -> Iterator[None]:
    """Let a dead loading worker be noticed only where the next batch is awaited, for the block's life; at its
    end, shut the workers of ``loader`` (a DataLoader iterator, if any) down.

    A DataLoader learns of a dead worker from SIGCHLD, whose handler raises its
    error wherever the main thread happens to be: halfway through an optimiser
    step, say, where no consistent checkpoint can be written.  Here SIGCHLD
    gets its default action instead (POSIX, main thread; enter after the
    loader has started, since starting it installs its handler); the loader
    still checks its workers whenever it waits for a batch and raises there.
    Its workers end (and are unregistered) before the handler comes back, so
    that it never reports one that died in the block.
    """
    sigchld = getattr(signal, "SIGCHLD", None)
    try:
        previous = signal.signal(sigchld, signal.SIG_DFL) if sigchld is not None else None
    except ValueError:  # not the main thread: signals are not ours to set
        sigchld = None
    try:
        yield
    finally:
        shutdown = getattr(loader, "_shutdown_workers", None)  # now, not whenever the garbage collector runs
        if shutdown is not None:
            shutdown()
        if sigchld is not None:
            signal.signal(sigchld, previous)


def child_context() -> Any:
    """How img2img starts its child processes (loading workers, the decoder that looks for a crashing file): by
    fork on Linux, as every Python did there before 3.14 made forkserver the default; elsewhere as the system
    does (macOS's and Windows's spawn).

    A forked worker starts at once, with this process's modules and settings.  A forkserver's worker imports
    torch and img2img anew, in every command that decodes and again after each dead worker: on Python 3.13 with
    forkserver, the test suite took 659 s against 222 s with fork (2 cores).  The workers touch no GPU, so a
    parent that uses CUDA forks them safely, as torch's DataLoader always did on Linux.  What a worker needs of
    this process's settings is handed to it all the same (:func:`loader_options`), should another start method
    be in use."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)


class _WorkerStart:
    """A loading worker's ``worker_init_fn``: this process's pixel limit (``--max-pixels``), which a worker
    started by forkserver or spawn would not have (it imports Pillow afresh), and the folder for its sockets
    where TMPDIR's path is too long for them (:func:`_socket_folder_for_workers`), then the caller's own."""

    def __init__(self, then: Callable[[int], None] | None, sockets: str | None = None) -> None:
        self.pixels, self.then, self.sockets = images.Image.MAX_IMAGE_PIXELS, then, sockets

    def __call__(self, worker_id: int) -> None:
        images.Image.MAX_IMAGE_PIXELS = self.pixels
        if self.sockets is not None:  # where torch's shared-memory manager, started by this worker, makes its own
            os.environ["TMPDIR"] = self.sockets
        if self.then is not None:
            self.then(worker_id)


def workers_that_start(workers: int) -> int:
    """``workers``, or none where no loading worker can start here, said once: a loader's queues need
    semaphores, which live in shared memory (/dev/shm on Linux), and a container may have it read-only, or
    none.  Every command stopped there, blaming its own output folder ("OUT: Read-only file system")."""
    if workers <= 0:
        return workers
    reason = _no_semaphores()
    if reason is None:
        return workers
    where = "/dev/shm" if sys.platform.startswith("linux") else "shared memory"
    say_once(log, logging.WARNING, f"loading workers cannot start here: no semaphore can be made in {where} "
                                   f"({reason}); decoding in this process instead, where a file that crashes its "
                                   "decoder ends the command")
    return 0


@functools.cache
def _no_semaphores() -> str | None:
    """Why this system cannot make the semaphores of a loader's queues, or None where it can."""
    try:
        child_context().Lock()
    except OSError as error:
        return error.strerror or str(error)
    return None


def loader_options(workers: int, worker_init_fn: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The DataLoader arguments that start ``workers`` loading processes as img2img does (:func:`child_context`,
    with this process's settings); none where there are no workers (a DataLoader refuses them then)."""
    if workers <= 0:
        return {"worker_init_fn": worker_init_fn}
    _open_files_for(workers)
    sockets = _socket_folder_for_workers()
    return {"multiprocessing_context": child_context(), "worker_init_fn": _WorkerStart(worker_init_fn, sockets)}


# the files a loading worker keeps open, here and in itself: its pipes, and a file descriptor for each tensor of a
# batch in flight, which this process asks the worker for (5 to 7 a worker measured, in training and translation);
# and those open beside the workers (the run's log and lock, writers, the interpreter's own)
_FILES_A_WORKER, _FILES_BESIDE = 16, 64


def _open_files_for(workers: int) -> None:
    """Make room for ``workers`` loading workers' open files: the limit raised where it is low and may be
    (:func:`~img2img.resources.open_files_limit`), else the batches handed over through shared-memory files,
    which keep no file descriptor open.  Past the limit, torch's DataLoader stops with a traceback when this
    process runs out, and waits for ever when a worker does (its batch is dropped in the sending thread)."""
    need = _FILES_BESIDE + _FILES_A_WORKER * workers
    limit = open_files_limit(need)
    if limit < need and torch.multiprocessing.get_sharing_strategy() == "file_descriptor":
        torch.multiprocessing.set_sharing_strategy("file_system")
        say_once(log, logging.INFO, f"this process may have {limit} files open at once (ulimit -n): loading "
                                    "workers hand their batches over through shared-memory files instead")


# the longest path of a socket (AF_UNIX) that the system binds, in bytes: 108 on Linux with the closing NUL, 104
# on macOS and the BSDs; and the most put after the temporary folder for one: torch's shared-memory manager's
# /torch-shm-dir-XXXXXX/manager.sock (multiprocessing's /pymp-XXXXXXXX/listener-XXXXXXXX is 2 bytes shorter)
_SOCKET_PATH_MAX = 107 if sys.platform.startswith("linux") else 103
_SOCKET_BELOW_TEMPORARY = len("/torch-shm-dir-123456/manager.sock")


def _socket_folder_for_workers() -> str | None:
    """Make this process's multiprocessing folder (``pymp-*``) now, before its loading workers start, where the
    paths of their sockets fit: they inherit it, and this process removes it at its exit.  Returns the folder it
    is made in when that is not TMPDIR, for the workers' own sockets (torch's shared-memory manager's).

    A worker hands each batch's tensors over as file descriptors, through a socket in that folder (or, under a
    low limit of open files, as shared-memory files, through torch's manager's socket).  Under a TMPDIR longer
    than 73 bytes (a cluster job's scratch folder) the socket's path was too long to bind: the worker's sending
    thread printed a traceback and dropped the batch, and training and translation waited for it for ever (or
    ended in torch's traceback).  There the sockets go to the system's temporary folder (/tmp) instead, as
    Python 3.14's multiprocessing does for its own.  And each worker made a folder of its own, which one that
    crashed or was killed left behind."""
    if sys.platform == "win32":  # no such sockets there
        return None
    base = tempfile.gettempdir()
    short = None
    if len(os.fsencode(base)) + _SOCKET_BELOW_TEMPORARY > _SOCKET_PATH_MAX:
        short = next((folder for folder in ("/tmp", "/var/tmp", "/dev/shm")
                      if os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)), None)
        if short is None:
            raise UserError(f"TMPDIR: {base} is too long a path for the loading workers' sockets, and no shorter "
                            "temporary folder (/tmp) can be written; set TMPDIR to a shorter one, or pass --workers 0")
    previous, tempfile.tempdir = tempfile.tempdir, short or tempfile.tempdir
    try:
        multiprocessing.util.get_temp_dir()  # made once, in a process
    finally:
        tempfile.tempdir = previous
    return short


# what this process had frozen when img2img was imported: the interpreter's own (Python 3.12.1 starts with 375
# objects frozen, 3.10, 3.11 and 3.13 with none), which forking() must not take for a caller's gc.freeze(): on
# 3.12.1 it never unfroze, and every object alive at the first loader's start stayed out of the collector's reach
_FROZEN_AT_IMPORT = gc.get_freeze_count()


@contextlib.contextmanager
def forking() -> Iterator[None]:
    """Start child processes (loading workers) inside this block: the objects that exist now are frozen out of
    the garbage collector (:func:`gc.freeze`) while the children fork, so that a child's collections never run
    the destructors of this process's garbage.  Such a destructor can wait for threads that a forked child does
    not have (an ONNX Runtime session waits on its thread pool's condition variable) and hang the child, and
    with it this process, which waits for the child's batches.  Objects frozen before (by the program that
    uses img2img) stay frozen.

    torch's DataLoader warns, in several lines ending in a path of its own, when the workers outnumber the
    CPUs; made in this block, a loader leaves that to :func:`img2img.resources.note_workers`, which says it in
    one line, once."""
    frozen_before = gc.get_freeze_count()
    gc.freeze()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
            yield
    finally:
        if frozen_before <= _FROZEN_AT_IMPORT:  # else unfreezing would thaw the caller's frozen objects too
            gc.unfreeze()


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"the decoder crashed on it ({signal.Signals(-code).name})"
    return f"the decoder crashed on it (exit status {code})"


def _scan(paths: Sequence[Path], read: Callable[[Path], Any], announce: Any, pixels: int | None) -> None:
    images.Image.MAX_IMAGE_PIXELS = pixels  # the parent's limit, where this child did not fork from it
    for index, path in enumerate(paths):
        announce.send(index)
        try:
            read(path)
        except Exception:  # noqa: BLE001, S110 - an ordinary error is not a crash; the caller reports those
            pass
    announce.send(len(paths))
    announce.close()


def find_crashes(paths: Sequence[Path]) -> dict[int, str]:
    """The positions in ``paths`` of the files whose decoding (:func:`images.read_image_levels`) kills the
    process, each with why: every file is decoded in a child process, never here."""
    read = images.read_image_levels  # looked up now: what the loader's workers call
    context = child_context()
    crashed: dict[int, str] = {}
    start = 0
    while start < len(paths):
        receiver, sender = context.Pipe(duplex=False)
        limit = images.Image.MAX_IMAGE_PIXELS
        child = context.Process(target=_scan, args=(list(paths[start:]), read, sender, limit), daemon=True)
        with forking():
            child.start()
        sender.close()
        last = -1
        with contextlib.suppress(EOFError, OSError):
            while True:
                last = receiver.recv()
        receiver.close()
        child.join()
        if last < 0 or start + last >= len(paths):  # done (or the child failed before it began: no culprit)
            break
        crashed[start + last] = _describe_exit(child.exitcode)
        start += last + 1
    return crashed


def resilient(dataset: Callable[[list[int]], Dataset], count: int, paths: Callable[[int], Sequence[Path]],
              delivered: Callable[[Any], Sequence[int]], on_crash: Callable[[int, str], None],
              batches: Callable[[int], Iterator[list[int]]] | None = None, **loader: Any) -> Iterator[Any]:
    """What a ``DataLoader(dataset(indices), **loader)`` yields over the items ``0 .. count-1``, surviving the
    death of its workers.

    ``dataset(indices)`` makes a dataset over some of the items (in that order); ``delivered(piece)`` says which
    items a yielded piece holds, and ``paths(item)`` which files an item decodes.  When a worker dies, the
    files of the items in flight are decoded one by one in a child process: each that kills it is passed to
    ``on_crash(item, reason)`` and left out, and a new loader goes on with the items not yet delivered.
    ``batches(n)``, if given, is the loader's ``batch_sampler`` over ``n`` items (in order), each batch of at
    most ``loader["batch_size"]`` items.
    """
    remaining = list(range(count))
    if workers_that_start(loader.get("num_workers", 0)) != loader.get("num_workers", 0):
        loader = {**loader, "num_workers": 0, "prefetch_factor": None}
    in_flight = max(1, loader.get("num_workers", 0)) * (loader.get("prefetch_factor") or 2) * \
        loader.get("batch_size", 1)
    if batches is not None:
        loader = {key: value for key, value in loader.items() if key not in ("batch_size", "shuffle")}
    loader = {**loader, **loader_options(loader.get("num_workers", 0), loader.get("worker_init_fn"))}
    fruitless = 0
    while remaining:
        seen: set[int] = set()
        with forking():
            iterator = iter(DataLoader(dataset(remaining), **loader) if batches is None else
                            DataLoader(dataset(remaining), batch_sampler=batches(len(remaining)), **loader))
        # while the consumer works between two pieces too, a dead worker is noticed only at the next fetch
        with worker_deaths_at_fetch(iterator):
            try:
                for piece in iterator:
                    seen.update(delivered(piece))
                    yield piece
                return
            except (RuntimeError, ConnectionError, EOFError) as error:
                if not worker_died(error):
                    raise
                reason = original_message(error)
        remaining = [item for item in remaining if item not in seen]
        suspects = remaining[:in_flight]
        files = [(item, path) for item in suspects for path in paths(item)]
        crashed = find_crashes([path for _, path in files])
        culprits = {files[position][0]: why for position, why in crashed.items()}
        if not culprits:  # the worker died of something else (killed, out of memory): try again, twice at most
            fruitless += 1
            if fruitless > 2:
                raise UserError(f"decoding workers keep dying ({reason}) and no file makes them; --workers 0 "
                                "decodes in this process instead")
        for item, why in culprits.items():
            on_crash(item, why)
        remaining = [item for item in remaining if item not in culprits]


# -- verifying a training folder ---------------------------------------------------------------------------
class _Verify(Dataset):
    def __init__(self, paths: Sequence[Path], items: list[int]) -> None:
        self.paths, self.items = paths, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> tuple[int, Any]:
        item = self.items[position]
        return item, _verify_one(self.paths[item])


def _verify_one(path: Path) -> images.ImageInfo | str:
    try:
        levels, bits = images.read_image_levels(path)  # every pixel, not only the header
        return images.ImageInfo(levels.shape[1], levels.shape[0], levels.shape[2], bits)
    except UserError as error:
        return str(error)
    except Exception as error:  # noqa: BLE001 - whatever a decoder raises, name the file
        return f"{path}: not a readable image ({type(error).__name__}: {str(error)[:120]})"


# a folder this small is decoded in one worker; larger ones in as many as there are cores, with a progress bar
_SMALL = 64


def verify_images(paths: Sequence[Path], option: str, workers: int | None = None,
                  before: str = "training") -> list[images.ImageInfo]:
    """Decode every file fully, once, in worker processes (so that no decoder can crash this one): the header
    facts of each, or one :class:`UserError` naming the broken files (a decompression bomb, a truncated or
    corrupt file, one whose decoder crashes) before any training step (or evaluation: ``before``) is spent on
    the folder."""
    paths = list(paths)
    if workers is None:
        workers = 1 if len(paths) <= _SMALL else min(8, available_cpus())
    results: dict[int, Any] = {}

    def crashed(item: int, why: str) -> None:
        results[item] = f"{paths[item]}: {why}"

    chunk = max(1, min(32, len(paths) // max(1, 4 * workers)))
    bar = tqdm(total=len(paths), unit="img", desc=f"checking {option}", leave=False, dynamic_ncols=True,
               disable=True if len(paths) <= _SMALL else None)
    try:
        for piece in resilient(lambda items: _Verify(paths, items), len(paths), lambda item: [paths[item]],
                               lambda piece: [item for item, _ in piece], crashed, batch_size=chunk,
                               num_workers=workers, collate_fn=list,
                               prefetch_factor=2 if workers else None):
            results.update(piece)
            bar.update(len(piece))
    finally:
        bar.close()
    broken = [results[item] for item in range(len(paths)) if isinstance(results.get(item), str)]
    if broken:
        more = f" and {len(broken) - 3} more broken files" if len(broken) > 3 else ""
        raise UserError(f"{option}: {'; '.join(broken[:3])}{more}; fix or remove them before {before}")
    return [results[item] for item in range(len(paths))]
