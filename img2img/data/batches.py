"""Step-indexed sampling: which examples form the batch of any training step.

The batch of step ``s`` is a pure function of (seed, s, rank), never of how
many steps the process has run, so a resumed run draws exactly the batches
an uninterrupted one would, and every rank of a distributed run draws a
disjoint shard of the same global batch.  Each epoch is a fresh permutation
seeded by (seed, epoch); a batch never spans two epochs (the remainder of an
epoch is dropped, as ``drop_last=True`` would).

Every example in a batch also gets its own integer seed, for datasets whose
loading is random (crops, flips, an unpaired partner), so that randomness is
reproducible too, whichever worker process loads the example.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from img2img.data import guard
from img2img.data.transfer import Collate
from img2img.errors import UserError
from img2img.resources import note_workers

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads nearby seeds apart


def mix_seed(*parts: int) -> int:
    """A 63-bit seed derived deterministically from integers."""
    value = 0x243F6A8885A308D3
    for part in parts:
        value = (value ^ (int(part) + _MIX + (value << 6) + (value >> 2))) & 0xFFFFFFFFFFFFFFFF
    return value & 0x7FFFFFFFFFFFFFFF


class StepSampler:
    """Maps a training step to this rank's example indices and per-example seeds."""

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        global_batch = batch_size * world_size
        if size < global_batch:
            raise UserError(f"--batch-size: the dataset has {size} examples, fewer than one batch of {global_batch}")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = size // global_batch
        self._epoch = -1
        self._permutation = torch.empty(0, dtype=torch.long)

    def _permutation_for(self, epoch: int) -> Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            self._permutation = torch.randperm(self.size, generator=generator)
            self._epoch = epoch
        return self._permutation

    def indices(self, step: int) -> Tensor:
        """This rank's example indices for ``step``, ``(batch_size,)`` int64."""
        epoch, offset = divmod(step, self.batches_per_epoch)
        start = (offset * self.world_size + self.rank) * self.batch_size
        return self._permutation_for(epoch)[start:start + self.batch_size]

    def keys(self, step: int) -> list[tuple[int, int]]:
        """``(index, example_seed)`` pairs for ``step``: what a map-style dataset is asked for."""
        return [(int(index), mix_seed(self.seed, step, self.rank, position))
                for position, index in enumerate(self.indices(step).tolist())]

    def epoch_of(self, step: int) -> int:
        return step // self.batches_per_epoch


class BatchSource(Protocol):
    """Where a training loop gets its batches: ``iterate(start)`` yields the batches of steps start, start+1, ..."""

    sampler: StepSampler

    def iterate(self, start_step: int) -> Iterator[Any]: ...


class TensorBatches:
    """Batches indexed straight out of tensors that sit on the training device (small datasets such as MNIST)."""

    def __init__(self, tensors: Tensor | tuple[Tensor, ...], sampler: StepSampler) -> None:
        self.tensors = tensors
        self.sampler = sampler

    def batch(self, step: int) -> Tensor | tuple[Tensor, ...]:
        first = self.tensors[0] if isinstance(self.tensors, tuple) else self.tensors
        index = self.sampler.indices(step).to(first.device)
        if isinstance(self.tensors, tuple):
            return tuple(t.index_select(0, index) for t in self.tensors)
        return self.tensors.index_select(0, index)

    def iterate(self, start_step: int) -> Iterator[Tensor | tuple[Tensor, ...]]:
        step = start_step
        while True:
            yield self.batch(step)
            step += 1


class _StepBatches:
    """A never-ending batch sampler: the keys of steps start, start+1, ... (for DataLoader's ``batch_sampler``)."""

    def __init__(self, sampler: StepSampler, start_step: int) -> None:
        self.sampler, self.start_step = sampler, start_step

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            yield self.sampler.keys(step)
            step += 1


def _ignore_ctrl_c(worker_id: int) -> None:
    """In each loading worker: a terminal's Ctrl-C reaches the workers too, and the training process, not they,
    decides how to stop (:mod:`img2img.interrupt`); it ends its workers when it does."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LoaderBatches:
    """Batches from a map-style dataset through worker processes, pinned memory and prefetching.

    The dataset is asked for ``(index, example_seed)`` keys, so which example
    and which augmentation a step sees depends only on the step, never on
    which worker loaded it.
    """

    PREFETCH = 4  # batches each worker loads ahead

    def __init__(self, dataset: Any, sampler: StepSampler, num_workers: int = 2, pin_memory: bool = False) -> None:
        self.dataset, self.sampler = dataset, sampler
        self.num_workers, self.pin_memory = num_workers, pin_memory

    def iterate(self, start_step: int) -> Iterator[Any]:
        from torch.utils.data import DataLoader  # noqa: PLC0415

        workers = guard.workers_that_start(self.num_workers)
        note_workers(workers)
        with guard.forking():
            # the loader draws its workers' base seed from a generator of its own, never from torch's global one,
            # which the models draw from (dropout, ...): a resumed run's draws match an uninterrupted run's
            loader = DataLoader(self.dataset, batch_sampler=_StepBatches(self.sampler, start_step),
                                num_workers=workers, pin_memory=self.pin_memory, persistent_workers=workers > 0,
                                prefetch_factor=self.PREFETCH if workers > 0 else None,
                                **guard.loader_options(workers, _ignore_ctrl_c),
                                collate_fn=Collate(),  # by value where shared memory is short (trainer: received)
                                generator=torch.Generator().manual_seed(mix_seed(self.sampler.seed, start_step)))
            return iter(loader)

    def files(self, start_step: int, steps: int) -> list[Path]:
        """The files that the batches of ``steps`` steps from ``start_step`` read (when the dataset says,
        through ``files_for(key)``): where to look when a loading worker dies."""
        files_for = getattr(self.dataset, "files_for", None)
        if files_for is None:
            return []
        found = dict.fromkeys(path for step in range(start_step, start_step + steps)
                              for key in self.sampler.keys(step) for path in files_for(key))
        return list(found)

    def steps_in_flight(self) -> int:
        """How many steps' batches may be loading at once (the workers' prefetch)."""
        return max(1, self.num_workers) * self.PREFETCH + 1
