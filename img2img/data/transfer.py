"""How a loading worker's batch reaches the training or translating process, also where shared memory is short.

A DataLoader worker hands its batches over in shared memory (``/dev/shm``).
Where that is small (a Docker container's is 64 MB unless ``--shm-size``
says more) a batch of large images does not fit: a batch collated by torch
fails in the worker, and one collated otherwise fails in the thread that
sends it, which loses the error, so that the receiving process waits for
ever.  :class:`Collate` moves each batch into shared memory itself, in the
worker, and where it does not fit sends the batch by value through the
worker's pipe instead (as numpy arrays, which cost a copy or two but no
shared memory); :func:`received` turns those back into tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils._pytree import tree_map
from torch.utils.data import default_collate
from torch.utils.data._utils.collate import collate, default_collate_fn_map


class _ByValue:
    """A batch's array that crosses to the main process through the worker's pipe, not shared memory."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


def shared_memory_full(error: BaseException) -> bool:
    """Whether ``error`` is torch's report that shared memory had no room for a tensor (``unable to allocate
    shared memory(shm) for file </torch_...>: No space left on device (28)``, and older wordings), or that its
    file there may not be that large (``unable to resize file </torch_...> to the right size: File too large
    (27)``: a limit on the size of files, ``ulimit -f``, which a cluster's job may carry over from where it
    was submitted)."""
    text = str(error)
    return isinstance(error, RuntimeError) and any(w in text for w in ("shared memory", "shm", "/torch_")) and any(
        w in text for w in ("No space left", "unable to allocate", "Cannot allocate memory", "File too large"))


def _share(value: Any) -> Any:
    return value.share_memory_() if isinstance(value, Tensor) and value.untyped_storage().nbytes() else value


def _stack(batch: list[Tensor], *, collate_fn_map: Any = None) -> Tensor:
    return torch.stack(batch)


# default_collate's rules, but tensors stacked in the worker's own memory (default_collate, in a worker, stacks
# them straight into shared memory)
_PLAIN_RULES = {**default_collate_fn_map, Tensor: _stack}


def _plain_collate(items: list[Any]) -> Any:
    return collate(items, collate_fn_map=_PLAIN_RULES)


class Collate:
    """A DataLoader ``collate_fn`` (default: torch's) whose batches cross to the main process in shared memory,
    moved there in the worker, or, where it has no room, by value (:func:`received` turns them back).  A
    ``collate_fn`` other than torch's must stack in the worker's own memory (as torch's does not, in a worker)."""

    def __init__(self, collate_fn: Callable[[list[Any]], Any] = default_collate) -> None:
        self.collate_fn = collate_fn
        self.plain = _plain_collate if collate_fn is default_collate else collate_fn  # without shared memory

    def __call__(self, items: list[Any]) -> Any:
        if torch.utils.data.get_worker_info() is None:  # collated where it is used: nothing crosses
            return self.collate_fn(items)
        try:
            return tree_map(_share, self.collate_fn(items))
        except RuntimeError as error:
            if not shared_memory_full(error):
                raise
        return tree_map(lambda value: _ByValue(value.numpy()) if isinstance(value, Tensor) else value,
                        self.plain(items))


def received(batch: Any) -> Any:
    """A batch from a :class:`Collate` loader with the arrays sent by value as tensors again."""
    return tree_map(lambda value: torch.from_numpy(value.array) if isinstance(value, _ByValue) else value, batch)


class BoundedBatches:
    """Batch sizes for a loader of images whose sizes are not known before they are decoded, so that what it
    decodes ahead of its consumer stays within ``budget`` bytes.

    A DataLoader keeps ``in_flight`` batches (workers × prefetch factor) decoding or waiting: batches of 8
    24-megapixel photos (72 MB each decoded) on a machine with 16 cores held 36 GB.  Here a batch holds
    ``batch_size`` images where ``in_flight`` such batches fit in ``budget``, else as many as fit, and one at
    the least (at most ``in_flight`` images in flight, then).  The size of an image is learnt from those that
    arrive (:meth:`seen`; the largest so far); until the first does, batches hold one image each.
    """

    def __init__(self, batch_size: int, in_flight: int, budget: int) -> None:
        self.batch_size, self.in_flight, self.budget = batch_size, max(1, in_flight), budget
        self.largest = 0

    def seen(self, image_bytes: int) -> None:
        """An image of ``image_bytes`` bytes has arrived."""
        self.largest = max(self.largest, image_bytes)

    def size(self) -> int:
        """How many images the next batch holds."""
        if not self.largest:
            return 1
        return max(1, min(self.batch_size, self.budget // (self.in_flight * self.largest)))

    def over(self, count: int) -> Iterator[list[int]]:
        """A DataLoader's ``batch_sampler`` over the positions ``0 .. count-1`` in order; it draws each batch's
        size when the loader asks for the batch, which is when one before it has been taken.

        No batch crosses a multiple of ``batch_size``, so that a consumer gathering batches of ``batch_size``
        (same-sized images) takes each whole from one or more of these, never cut from two: after the first
        batches of one image (``in_flight`` and one more, drawn before any image arrived), the next is shorter,
        and then each is whole.  Before, every batch after them was joined to the one before and cut again, two
        copies in the main process: 56% of its time on an H200 lease's host, whose cores the writers kept busy
        (287 images/s)."""
        position = 0
        while position < count:
            size = min(self.size(), self.batch_size - position % self.batch_size)
            yield list(range(position, min(count, position + size)))
            position += size


__all__ = ["BoundedBatches", "Collate", "received", "shared_memory_full"]
