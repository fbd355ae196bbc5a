"""The one error type users see.

Library code raises :class:`UserError` for anything the user can fix (a bad
option, a missing or corrupt file).  The CLI turns it into a one-line message
with a non-zero exit and no traceback.  :func:`out_of_memory` says which errors
mean that memory ran out, wherever they come from.
"""

from __future__ import annotations

import errno
import logging
import math
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


def too_many_open_files(error: BaseException) -> bool:
    """Whether ``error`` says that this process (or the system) has as many files open as it may: an OSError, one
    that a loading worker raised (which the DataLoader raises again without its errno), or torch's own report."""
    return isinstance(error, (OSError, RuntimeError)) and (
        getattr(error, "errno", None) in (errno.EMFILE, errno.ENFILE) or "Too many open files" in str(error))


def too_many_open_files_message() -> str:
    """What :func:`too_many_open_files` errors say, in one line, with this process's limit."""
    from img2img.resources import open_files_limit  # noqa: PLC0415 - resources imports this module

    limit = open_files_limit()
    at_most = f" (this process may have {limit} open at once: ulimit -n)" if math.isfinite(limit) else ""
    return f"too many open files{at_most}; raise the limit"


def out_of_memory_message(error: BaseException) -> str:
    """``out of CUDA memory (tried to allocate 2.00 GiB)``: what :func:`out_of_memory` ``error`` says, in a few
    words (torch's own runs to a paragraph, or starts with the allocator's source line)."""
    where = "CUDA" if isinstance(error, torch.OutOfMemoryError) or "CUDA" in str(error) else "CPU"
    tried = re.search(r"allocate ([0-9.]+ ?[KMGT]i?B|[0-9]+ bytes)", str(error))
    return f"out of {where} memory" + (f" (tried to allocate {tried.group(1)})" if tried else "")
