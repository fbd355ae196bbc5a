"""What a GAN model gives the training loop: networks, phases and loss terms.

A model owns no loop.  It names its networks (``self.nets``), the phases of
one training step (each phase updates some networks with one optimizer),
and, for each phase, a loss.  The trainer runs the phases in order: it
freezes every network the phase does not update, computes the phase's loss
under autocast, and steps that phase's optimizer.

Tensors pass between the phases of one step through ``carry``, a plain dict
the trainer creates for each step (for example the generator's output, which
the discriminator phase then judges), never through attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from img2img.config import TrainConfig
from img2img.data.batches import BatchSource, LoaderBatches, StepSampler
from img2img.errors import UserError

Logs = dict[str, Tensor]


@dataclass(frozen=True)
class Phase:
    """One optimiser step of a training step: its name (also its optimiser's) and the networks it updates."""

    name: str
    networks: tuple[str, ...]


class GANModel(nn.Module):
    """Base class of every model; subclasses set ``name``, ``Config`` and ``phases``."""

    name: ClassVar[str]
    Config: ClassVar[type]
    phases: ClassVar[tuple[Phase, ...]]
    # networks used at inference; with --ema they are replaced by their weight averages there
    inference_networks: ClassVar[tuple[str, ...]] = ()
    # the generator that translates each direction ({"a2b": "g"}); empty for models that do not translate
    translation_networks: ClassVar[dict[str, str]] = {}

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.nets = nn.ModuleDict()

    @classmethod
    def resolve(cls, config: Any) -> Any:
        """Validate the options (and the dataset they name) once; return them with every default made explicit."""
        return config

    @classmethod
    def check_size(cls, size: int) -> None:
        """Refuse, in one line naming --size, an image side this model's networks cannot take."""

    @classmethod
    def dataset_size(cls, config: Any) -> int:
        """Examples in one epoch of the (resolved) configuration's training data."""
        raise NotImplementedError

    def phases_at(self, step: int) -> tuple[Phase, ...]:
        """The phases of training step ``step`` (all of them, unless a model alternates its updates)."""
        return self.phases

    def optimizer_options(self) -> dict[str, Any]:
        """Extra Adam arguments of this model (e.g. weight decay)."""
        return {}

    def prepare_batch(self, batch: Any) -> Any:
        """Last changes to a batch on the training device (e.g. GPU-side augmentation)."""
        return batch

    # -- training ---------------------------------------------------------------------------------
    def phase_loss(self, phase: str, nets: Mapping[str, nn.Module], batch: Any,
                   carry: dict[str, Any]) -> tuple[Tensor, Logs]:
        """The loss that ``phase`` minimises, and scalars to log.

        ``nets`` maps network names to the modules to call in this phase: the
        networks being updated may be wrapped (DistributedDataParallel), the
        others are plain and frozen.
        """
        raise NotImplementedError

    @classmethod
    def dataset(cls, config: Any, train: bool = True) -> Any:
        """The map-style dataset of a (resolved) configuration: augmented for training, else deterministic."""
        raise NotImplementedError

    @classmethod
    def build_data(cls, config: Any, train: TrainConfig, device: torch.device,
                   rank: int = 0, world_size: int = 1) -> BatchSource:
        """The training data as a step-indexed batch source: by default :meth:`dataset` through worker
        processes and pinned memory, this rank's shard of every batch."""
        dataset = cls.dataset(config)
        sampler = StepSampler(len(dataset), train.batch_size, train.seed, rank, world_size)
        return LoaderBatches(dataset, sampler, train.num_workers, pin_memory=device.type == "cuda")

    def move_batch(self, batch: Any, device: torch.device) -> Any:
        """Put a batch from the data source on ``device`` (a no-op for data already there)."""
        if isinstance(batch, Tensor):
            return batch.to(device, non_blocking=True)
        if isinstance(batch, (tuple, list)):
            return type(batch)(self.move_batch(item, device) for item in batch)
        if isinstance(batch, dict):
            return {key: self.move_batch(value, device) for key, value in batch.items()}
        return batch

    # -- inference --------------------------------------------------------------------------------------
    @torch.no_grad()
    def translate(self, images: Tensor, direction: str = "a2b") -> Tensor:
        """``(N, C, H, W)`` in [-1, 1] through the generator of ``direction`` (see ``translation_networks``)."""
        name = self.translation_networks.get(direction)
        if name is None:
            ways = " and ".join(self.translation_networks) or "nothing"
            raise UserError(f"--direction: a {self.name} model translates {ways}, not {direction}")
        return self.nets[name](images)

    # -- monitoring -------------------------------------------------------------------------------
    def sample_inputs(self, data: BatchSource, seed: int, device: torch.device) -> Any:
        """A fixed set of inputs for the sample grids written during training."""
        raise NotImplementedError

    @torch.no_grad()
    def sample_grid(self, inputs: Any) -> tuple[Tensor, int]:
        """Images for a sample grid, ``(N, C, H, W)`` in [-1, 1], and the number per row."""
        raise NotImplementedError

    def refresh_statistics(self, nets: Mapping[str, nn.Module], generator: torch.Generator) -> None:
        """Recompute the batch-norm statistics of ``nets`` (averaged inference networks) for their weights.

        Draws its randomness from ``generator`` only, never from the global
        generators, so that it leaves training exactly as it found it.
        Models whose inference networks have no batch norm need not override it.
        """

    # -- state beyond the networks (e.g. image pools) ----------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{self.name} keeps no extra state, got {sorted(state)}")
