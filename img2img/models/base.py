"""The model contract: what one model file gives the trainer, the command line, evaluation, bench and translation.

A model owns no loop.  It names its networks (``self.nets``), the phases of
one training step (each phase updates some networks with one optimizer),
and, for each phase, a loss.  The trainer runs the phases in order: it
freezes every network the phase does not update, computes the phase's loss
under autocast, and steps that phase's optimizer.

Tensors pass between the phases of one step through ``carry``, a plain dict
the trainer creates for each step (for example the generator's output, which
the discriminator phase then judges), never through attributes.

Everything else a model declares on its class, so that one file is the
whole model (see ``models/_template.py`` and the README's "Adding a model"):

- ``Config``: a frozen dataclass whose fields made with
  :func:`img2img.config.option` become the options of ``img2img train NAME``;
- ``train_defaults`` and ``epoch_schedule``: its training defaults;
- ``evaluation`` and ``default_metric``: which evaluation protocol applies;
- :meth:`synthetic` and ``bench_batch_size``: how ``img2img bench`` runs it;
- ``translation_networks``/:meth:`translation`: what a translation takes (a
  direction today, a target domain for a multi-domain model), so translate
  and export need no code of their own for it;
- :meth:`compile_refusal` and :meth:`graph_refusal`: whether ``torch.compile``
  can run its phases, and whether a whole step can be replayed as one CUDA
  graph (``--cuda-graph``: a step must make its random choices on the device,
  not in Python); :meth:`graph_key`: what of a step its number decides.

Defining a subclass with a ``name`` registers it (``img2img.models.MODELS``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import default_collate

from img2img.config import TrainConfig
from img2img.data.batches import BatchSource, LoaderBatches, StepSampler
from img2img.errors import UserError
from img2img.resources import available_cpus

Logs = dict[str, Tensor]

# every registered model, by name (filled as model classes are defined; img2img.models imports them all)
REGISTRY: dict[str, type[GANModel]] = {}

# the image models' training defaults: batch 1 as in the papers, steps from their epochs
IMAGE_DEFAULTS: dict[str, Any] = dict(batch_size=1, save_every_steps=5000, sample_every_steps=1000,
                                      log_every_steps=100, num_workers=min(4, available_cpus()))
# evaluation protocols (img2img.evaluation.evaluate): unconditional samples, paired data, unpaired domains,
# and several domains (each target domain against its held-out images)
PROTOCOLS = ("samples", "paired", "unpaired", "multi-domain")


@contextlib.contextmanager
def evaluating(*nets: nn.Module) -> Iterator[None]:
    """Networks in evaluation mode for a sample grid or generation, each back in its own mode afterwards."""
    modes = [net.training for net in nets]
    for net in nets:
        net.eval()
    try:
        yield
    finally:
        for net, mode in zip(nets, modes):
            net.train(mode)


@dataclass(frozen=True)
class Translation:
    """What translating to one target takes: a module ``(N, in_channels, H, W)`` → ``(N, out_channels, H, W)``
    in [-1, 1] (a conditional generator comes wrapped with its target), the networks whose weights it uses,
    and the bits per channel of the images the model learnt to produce."""

    module: nn.Module
    networks: tuple[str, ...]
    in_channels: int
    out_channels: int
    out_bits: int = 8


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
    # the option that names a translation's target (translate, export, the Python API's ``load``)
    translation_option: ClassVar[str] = "--direction"
    # TrainConfig fields whose defaults differ for this model (shown by `train NAME --help`)
    train_defaults: ClassVar[dict[str, Any]] = {}
    # (epochs, decaying epochs): --steps/--decay-steps left unset follow the data's size; None: fixed defaults
    epoch_schedule: ClassVar[tuple[int, int] | None] = None
    # the evaluation protocol (one of PROTOCOLS; None: the model is not evaluated) and the metric of best.ckpt
    evaluation: ClassVar[str | None] = None
    default_metric: ClassVar[str] = ""
    bench_batch_size: ClassVar[int] = 1  # `img2img bench NAME`'s default batch
    order: ClassVar[int] = 100  # where the model stands in listings (img2img train --help)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # a concrete model; shared bases (UnpairedModel) name none
            if cls.evaluation is not None and cls.evaluation not in PROTOCOLS:
                raise TypeError(f"{cls.__name__}.evaluation must be one of {PROTOCOLS}, got {cls.evaluation!r}")
            REGISTRY[cls.name] = cls

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.nets = nn.ModuleDict()

    @classmethod
    def resolve(cls, config: Any) -> Any:
        """Validate the options (and the dataset they name) once; return them with every default made explicit."""
        return config

    @classmethod
    def summary(cls) -> str:
        """One line for ``img2img train --help``: the first line of the class docstring."""
        return (cls.__doc__ or cls.name).strip().splitlines()[0]

    @classmethod
    def schedule(cls, train: TrainConfig, config: Any) -> TrainConfig:
        """``train`` with --steps/--decay-steps filled in where unset: ``epoch_schedule`` passes over the
        (resolved) configuration's data, the last ones decaying (the papers' 100 + 100 epochs, say)."""
        if train.steps is not None and train.decay_steps is not None:
            return train
        if cls.epoch_schedule is None:
            defaults = TrainConfig()
            return dataclasses.replace(train, steps=train.steps or defaults.steps,
                                       decay_steps=train.decay_steps or defaults.decay_steps)
        epochs, decay_epochs = cls.epoch_schedule
        per_epoch = max(1, math.ceil(cls.dataset_size(config) / train.batch_size))
        if train.steps is None:
            steps = epochs * per_epoch
            decay = decay_epochs * per_epoch if train.decay_steps is None else train.decay_steps
        else:
            steps, decay = train.steps, train.steps * decay_epochs // epochs
        return dataclasses.replace(train, steps=steps, decay_steps=decay)

    @classmethod
    def metrics(cls) -> tuple[str, ...]:
        """The metrics this model's evaluation reports (what --eval-metric may name)."""
        from img2img.evaluation.evaluate import protocol_metrics  # noqa: PLC0415 - evaluation is imported lazily

        return protocol_metrics(cls)

    @classmethod
    def synthetic(cls, size: int, batch_size: int, generator: torch.Generator) -> tuple[Any, Any]:
        """A resolved configuration with the official default networks for ``size`` and one synthetic batch
        (what ``img2img bench`` trains on)."""
        raise UserError(f"bench: {cls.name} has no benchmark")

    @classmethod
    def check_size(cls, size: int) -> None:
        """Refuse, in one line naming --size, an image side this model's networks cannot take."""

    @classmethod
    def dataset_size(cls, config: Any) -> int:
        """Examples in one epoch of the (resolved) configuration's training data."""
        raise NotImplementedError

    @classmethod
    def compile_refusal(cls, config: Any) -> str | None:
        """Why ``torch.compile`` cannot run the phases of this model with ``config``, or None when it can
        (``--compile auto`` turns it on only then, and another mode is refused): a gradient penalty (WGAN-GP)
        differentiates D's gradient, a double backward that compiled autograd cannot take."""
        if getattr(config, "loss", None) == "wgan-gp":
            return "the wgan-gp loss's gradient penalty needs a double backward, which torch.compile cannot take"
        return None

    @classmethod
    def graph_refusal(cls, config: Any) -> str | None:
        """Why one training step of this model with ``config`` cannot be captured as a CUDA graph and replayed
        (``--cuda-graph``), or None when it can: a step that decides something in Python from a random draw or
        a tensor's value would replay the decision made at capture."""
        return None

    def graph_key(self, step: int) -> tuple[Any, ...]:
        """What of training step ``step`` is decided on the host from the step's number, which a step captured
        as a CUDA graph repeats (``--cuda-graph``: steps with another key get their own graph): the phases
        that run (:meth:`phases_at`), and more for a model whose losses read ``carry["step"]``."""
        return tuple(phase.name for phase in self.phases_at(step))

    def phases_at(self, step: int) -> tuple[Phase, ...]:
        """The phases of training step ``step``: all of them, except that a model whose config has ``n_critic``
        (WGAN, StarGAN: its first phase the critic's) runs the later phases only every ``n_critic`` steps, as
        the official ``(i + 1) % n_critic == 0``.  A model that alternates otherwise overrides this."""
        every = getattr(self.config, "n_critic", 1)
        return self.phases if (step + 1) % every == 0 else self.phases[:1]

    def optimizer_options(self) -> dict[str, Any]:
        """Extra Adam arguments of this model (e.g. weight decay)."""
        return {}

    def make_optimizer(self, phase: Phase, params: list[nn.Parameter], train: TrainConfig) -> torch.optim.Optimizer:
        """The optimiser of ``phase``: Adam with the run's --lr and betas and :meth:`optimizer_options`, one fused
        kernel per step (the multi-tensor "foreach" one without ``fused_adam``).  A model may choose another
        (WGAN: RMSprop)."""
        extra = {"fused": True} if train.fused_adam else {"foreach": True}
        return torch.optim.Adam(params, lr=train.lr, betas=(train.beta1, train.beta2), **extra,
                                **self.optimizer_options())

    def after_phase(self, phase: str) -> None:
        """Called after each optimiser step of ``phase`` (WGAN clips its critic's weights here)."""

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
    def dry_batch(cls, config: Any, batch_size: int) -> Any:
        """A batch of ``batch_size`` shaped as the training data's (its first example, repeated), on which
        :func:`img2img.train.check_runnable` tries the networks before training; None: not checked."""
        try:
            example = cls.dataset(config)[0]
        except NotImplementedError:
            return None
        # views of the one example, not copies: only the shapes matter, and a large batch costs nothing
        return _expand(default_collate([example]), batch_size)

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
    def translation_targets(self) -> tuple[str, ...]:
        """What a translation may be asked for (``a2b``, ``b2a``; a domain's name); the first is the default."""
        return tuple(self.translation_networks)

    def translation(self, target: str | None = None) -> Translation:
        """What translating to ``target`` takes (by default the first of :meth:`translation_targets`).

        The default reads ``translation_networks`` ({"a2b": "g_ab"}) and the
        configuration's ``channels_a``/``channels_b`` and ``bits_a``/``bits_b``;
        a conditional model returns its generator wrapped with the target.
        """
        targets = self.translation_targets()
        if not targets:
            raise UserError(f"a {self.name} model generates images rather than translating them "
                            "(use `img2img sample`)")
        target = targets[0] if target is None else target
        if target not in targets:
            raise UserError(f"{self.translation_option}: a {self.name} model translates {' and '.join(targets)}, "
                            f"not {target}")
        name = self.translation_networks[target]
        source, goal = target.split("2")
        bits = getattr(self.config, f"bits_{goal}", None) or 8
        return Translation(self.nets[name], (name,), getattr(self.config, f"channels_{source}"),
                           getattr(self.config, f"channels_{goal}"), bits)

    def conditional_generator(self) -> tuple[nn.Module, tuple[str, ...]] | None:
        """For a model whose one generator takes its target as an input (StarGAN): the generator, called as
        ``g(images, one_hot)`` with ``one_hot`` ``(N, len(targets))``, and the targets in label order.  Export
        then takes the target as a second input.  None for every other model."""
        return None

    @torch.no_grad()
    def translate(self, images: Tensor, target: str | None = None) -> Tensor:
        """``(N, C, H, W)`` in [-1, 1] translated to ``target`` (see :meth:`translation`)."""
        return self.translation(target).module(images)

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


def _expand(batch: Any, batch_size: int) -> Any:
    """A collated batch of one, as a batch of ``batch_size`` (tensors expanded, not copied)."""
    if isinstance(batch, Tensor):
        return batch.expand(batch_size, *batch.shape[1:])
    if isinstance(batch, Mapping):
        return {key: _expand(value, batch_size) for key, value in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_expand(value, batch_size) for value in batch)
    return batch
