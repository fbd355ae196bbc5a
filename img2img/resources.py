"""What this process may use: memory, CPUs and open files, as the machine has them and as a container, a job
scheduler or ``ulimit`` limits them.

A container's limits live in its cgroups (v1 or v2), which the machine-wide
figures do not show: ``MemAvailable`` reports the host's free memory, and
``os.cpu_count()`` (and torch's threads) the host's cores.  Beyond a memory
limit the kernel kills the process, without a word; beyond a CPU quota its
threads are throttled, and more threads than the quota allows only slow it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from img2img.errors import say_once

log = logging.getLogger(__name__)

CGROUPS = Path("/sys/fs/cgroup")
MEMINFO = Path("/proc/meminfo")
OWN_CGROUPS = Path("/proc/self/cgroup")


def available_memory(unknown: int | None = 4 << 30) -> int | None:
    """Bytes of memory available to this process: Linux's MemAvailable, or less where a memory cgroup leaves
    less.  ``unknown`` where neither can be read (macOS, say): 4 GiB, a guess that sizes a budget (translation's
    tiles and queues); None for a caller that would refuse work on it, which a guess must not do."""
    available = None
    try:
        with open(MEMINFO) as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    left = cgroup_memory_left()
    if available is None:
        return unknown if left is None else left
    return available if left is None else min(available, left)


def memory_short(need: int) -> int | None:
    """The memory available, where it is less than ``need`` bytes: what a refusal of work that cannot fit quotes
    (overcommitted, such work is killed by the kernel, without a word).  None where ``need`` fits, or where the
    memory cannot be read (work is never refused on a guess)."""
    available = available_memory(unknown=None)
    return available if available is not None and need > available else None


def available_cpus() -> int:
    """CPUs this process may keep busy: those it may run on (its affinity), fewer where a cgroup's CPU quota (a
    container's ``--cpus``, a job scheduler's limit) allows less time, rounded up."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(count, math.ceil(quota))) if quota is not None else count


def note_workers(workers: int) -> None:
    """Says once, in one line, that ``workers`` loading processes outnumber the CPUs this process may use: they
    take turns on them, which may slow loading rather than speed it (torch's DataLoader says as much in a warning
    of several lines, which :func:`img2img.data.guard.forking` leaves out)."""
    cpus = available_cpus()
    if workers > cpus:
        say_once(log, logging.WARNING, f"--workers {workers}: more loading processes than the {cpus} "
                                       f"CPU{'' if cpus == 1 else 's'} this process may use; they will take turns")


def open_files_limit(need: int = 0) -> float:
    """How many files this process may hold open at once (its soft ``RLIMIT_NOFILE``, ``ulimit -n``; infinity
    where it has no limit, or the system none to read), raised first to the hard limit, the most an unprivileged
    process may set, where it is below ``need``.  The raise lasts for the process and the children it starts."""
    try:
        import resource  # noqa: PLC0415 - POSIX only
    except ImportError:  # Windows: no such limit
        return math.inf
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        raised = need if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):  # (macOS refuses more than its OPEN_MAX)
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    return math.inf if soft == resource.RLIM_INFINITY else soft


def _levels(controller: str, root: Path, proc: Path) -> Iterator[tuple[Path, int]]:
    """The folders of this process's cgroups for ``controller``, its own first, then those above it, each with
    its cgroup version."""
    try:
        entries = [line.split(":", 2) for line in proc.read_text().splitlines()]
    except OSError:
        return
    for entry in entries:
        if len(entry) != 3:
            continue
        _, controllers, path = entry
        if controllers == "":
            mount, version = root, 2
        elif controller in controllers.split(","):
            mount, version = root / controller, 1
        else:
            continue
        folder = mount / path.strip("/")
        if not folder.is_dir():  # a container that sees its own cgroup as the root of the mount
            folder = mount
        for level in (folder, *[p for p in folder.parents if p.is_relative_to(mount)]):
            yield level, version


def cgroup_memory_left(root: Path = CGROUPS, proc: Path = OWN_CGROUPS) -> int | None:
    """The least that this process's memory cgroup, or one above it, leaves below its limit (its usage less the
    page cache it can drop); None where none has a limit."""
    least = None
    for level, version in _levels("memory", root, proc):
        files = ("memory.max", "memory.current", "inactive_file") if version == 2 else \
            ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        left = _memory_left(level, *files)
        if left is not None:
            least = left if least is None else min(least, left)
    return least


def _memory_left(folder: Path, limit_file: str, usage_file: str, cache_key: str) -> int | None:
    try:
        limit = (folder / limit_file).read_text().strip()
        if limit == "max" or int(limit) >= 1 << 60:  # no limit (v1 writes a number near 2**63)
            return None
        usage = int((folder / usage_file).read_text())
        cache = 0
        with contextlib.suppress(OSError, ValueError):
            for line in (folder / "memory.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == cache_key:
                    cache = int(value)
    except (OSError, ValueError):
        return None
    return max(0, int(limit) - usage + cache)


def cgroup_cpu_quota(root: Path = CGROUPS, proc: Path = OWN_CGROUPS) -> float | None:
    """The CPUs' worth of time that this process's CPU cgroup, or one above it, allows (the least of their
    quotas, 1.5 for ``--cpus 1.5``); None where none has a quota."""
    least = None
    for level, version in _levels("cpu", root, proc):
        try:
            if version == 2:
                quota, period = (level / "cpu.max").read_text().split()[:2]
            else:
                quota, period = ((level / name).read_text().strip() for name in ("cpu.cfs_quota_us",
                                                                                   "cpu.cfs_period_us"))
            if quota in ("max", "-1") or int(period) <= 0:
                continue
            cpus = int(quota) / int(period)
        except (OSError, ValueError):
            continue
        least = cpus if least is None else min(least, cpus)
    return least


@contextlib.contextmanager
def host_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` for the block, then put back; unless ``OMP_NUM_THREADS`` is set,
    whose number stands (the user's word).  For a process whose CPU work is done by other threads and processes
    (folder translation on a GPU: decoders, writers, the pinning thread): each tensor operation of its main
    thread would otherwise wake one thread per CPU, which those keep busy."""
    if "OMP_NUM_THREADS" in os.environ:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


__all__ = ["available_cpus", "available_memory", "cgroup_cpu_quota", "cgroup_memory_left", "host_threads",
           "memory_short", "open_files_limit"]
