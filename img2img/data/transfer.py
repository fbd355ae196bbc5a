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

from collections.abc import Callable
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
    shared memory(shm) for file </torch_...>: No space left on device (28)``, and older wordings)."""
    text = str(error)
    return isinstance(error, RuntimeError) and any(w in text for w in ("shared memory", "shm", "/torch_")) and any(
        w in text for w in ("No space left", "unable to allocate", "Cannot allocate memory"))


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


__all__ = ["Collate", "received", "shared_memory_full"]
