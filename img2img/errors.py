"""The one error type users see.

Library code raises :class:`UserError` for anything the user can fix (a bad
option, a missing or corrupt file).  The CLI turns it into a one-line message
with a non-zero exit and no traceback.  :func:`out_of_memory` says which errors
mean that memory ran out, wherever they come from, and :func:`exhausted` which
mean that open files, processes or threads did.
"""

from __future__ import annotations

import errno
import logging
import re

import torch


class UserError(Exception):
    """A problem with the user's input, stated in one line that names the option or path."""


# what a named pipe, a socket or a device given for a file is called: never opened (a pipe's reader waits for a
# writer, for ever)
NOT_A_FILE = "not a regular file (a pipe, a socket or a device)"


_SAID: set[str] = set()


def say_once(logger: logging.Logger, level: int, line: str) -> None:
    """Log ``line`` once a process: a command resolves its device, its workers and its speed settings more than
    once (each loader, each evaluation, the trainer and the translator), and says each thing once."""
    if line not in _SAID:
        _SAID.add(line)
        logger.log(level, "%s", line)


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says that memory ran out (CUDA's allocator, the CPU's, or OpenCV's)."""
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or any(
        text in str(error) for text in ("can't allocate memory", "Insufficient memory", "Failed to allocate"))


def exhausted(error: BaseException, workers: bool = False) -> str | None:
    """What ``error`` says, in one line with the limit that was reached, where this process ran out of something
    that no file or option is at fault for: open files (an OSError, one that a loading worker raised, which the
    DataLoader raises again without its errno, or torch's own report), or processes and threads (fork's EAGAIN,
    Python's "can't start new thread"); None for any other error.  ``workers``: the command has loading workers
    (``--workers``), each a process with its own open files, and the line says to use fewer."""
    fewer = ", or use fewer --workers" if workers else ""
    if isinstance(error, (OSError, RuntimeError)) and (
            getattr(error, "errno", None) in (errno.EMFILE, errno.ENFILE) or "Too many open files" in str(error)):
        return "too many open files" + _limit("NOFILE", " (this process may have {} open at once: ulimit -n)") + \
            "; raise the limit" + fewer
    if (isinstance(error, BlockingIOError) and error.filename is None) or (
            isinstance(error, RuntimeError) and "can't start new thread" in str(error)):
        reason = error.strerror if isinstance(error, OSError) else str(error)
        return f"no more processes or threads can start ({reason}" + _limit(
            "NPROC", "; this user may run {} at once: ulimit -u") + "); raise the limit, or free memory" + fewer
    return None


def _limit(name: str, template: str) -> str:
    """``template`` holding the soft limit ``RLIMIT_<name>`` of this process; empty where there is none."""
    try:
        import resource  # noqa: PLC0415 - POSIX only

        limit = resource.getrlimit(getattr(resource, f"RLIMIT_{name}"))[0]
    except (ImportError, AttributeError, OSError, ValueError):
        return ""
    return "" if limit == resource.RLIM_INFINITY else template.format(limit)


def out_of_memory_message(error: BaseException) -> str:
    """``out of CUDA memory (tried to allocate 2.00 GiB)``: what :func:`out_of_memory` ``error`` says, in a few
    words (torch's own runs to a paragraph, or starts with the allocator's source line)."""
    where = "CUDA" if isinstance(error, torch.OutOfMemoryError) or "CUDA" in str(error) else "CPU"
    tried = re.search(r"allocate ([0-9.]+ ?[KMGT]i?B|[0-9]+ bytes)", str(error))
    return f"out of {where} memory" + (f" (tried to allocate {tried.group(1)})" if tried else "")
