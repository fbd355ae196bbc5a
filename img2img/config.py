"""The run configuration: one frozen, typed record, printed and saved as JSON beside the run.

A run is described by the model's name, the options every model shares
(:class:`TrainConfig`) and the model's own options (each model's ``Config``
dataclass).  A checkpoint stores all three, so it rebuilds its model alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from img2img.errors import UserError


# torch.compile modes (img2img.speed); the two with CUDA graphs are reduce-overhead and max-autotune; auto:
# reduce-overhead when training on one CUDA device (measured 2-4x a step; see BENCHMARKS.md), else off
COMPILE_MODES = ("auto", "off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# --cuda-graph (img2img.step_graph): on (refused in one line where it cannot run), off, or auto: on where it can
# run (CUDA, one process, a model whose step can be captured), and off again, with a line, should a capture fail
CUDA_GRAPH_SETTINGS = ("auto", "on", "off")


# the largest image side any option takes (32768² is a billion pixels; beyond it no decoder or network goes)
MAX_SIDE = 32768
# what --amp means, as train, translate and bench say it
AMP_HELP = "bf16 autocast on CUDA GPUs that compute in bf16 (compute capability 8.0 on)"


@dataclass(frozen=True)
class CliOption:
    """How a config field appears on the command line (``img2img train MODEL`` is generated from these)."""

    help: str
    flag: str | None = None  # default: the field's name, dashed ("load_size" → --load-size)
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    path: bool = False  # a file or folder
    images: bool = True  # (a path) whose images the run reads, so no run folder may lie inside it (MNIST's: no)
    switch: bool = False  # a bool given as a bare flag (--sync-bn), not as --x/--no-x
    bare: str | None = None  # a choice's value when its flag is given alone (--cuda-graph means --cuda-graph on)


def option(default: Any, help: str, **cli: Any) -> Any:  # noqa: A002
    """A dataclass field that is also a command-line option: its default, help and checks (see :class:`CliOption`).

    Fields made with plain defaults stay off the command line (settings that
    are resolved from the data, or that no user needs to change).
    """
    return field(default=default, metadata={"cli": CliOption(help, **cli)})


def cli_option(f: dataclasses.Field) -> CliOption | None:
    return f.metadata.get("cli")


def option_flag(f: dataclasses.Field) -> str:
    """The command-line flag of a field made with :func:`option` (``load_size`` → ``--load-size``)."""
    return cli_option(f).flag or "--" + f.name.replace("_", "-")


def path_fields(cls: type) -> tuple[str, ...]:
    """The fields of config dataclass ``cls`` that name a file or folder (the options marked ``path``): the data
    folders, which ``--resume`` may be told the new place of."""
    return tuple(f.name for f in dataclasses.fields(cls) if (cli := cli_option(f)) is not None and cli.path)


@dataclass(frozen=True)
class TrainConfig:
    """Options of the training loop, the same for every model."""

    # None (steps, decay_steps): the model's epoch schedule decides (see GANModel.schedule)
    steps: int | None = option(1000, "Training steps in all.", min=1)
    batch_size: int = option(1, "Examples per step.", min=1)
    seed: int = option(0, "Random seed.", min=0, max=2**63 - 1)
    device: str = option("auto", "auto (CUDA when present), cpu, cuda or cuda:N.")
    lr: float = option(2e-4, "Adam learning rate.", min=0, min_open=True)
    beta1: float = 0.5
    beta2: float = 0.999
    # the last `decay_steps` of `steps` decay the learning rate linearly to zero
    decay_steps: int | None = option(0, "Final steps over which the learning rate falls linearly to zero.", min=0)
    save_every_steps: int = option(1000, "Write a checkpoint every N steps (and at the end).", flag="--save-every",
                                   min=1)
    sample_every_steps: int = option(500, "Write a sample grid every N steps (and at the end).",
                                     flag="--sample-every", min=1)
    log_every_steps: int = option(50, "Log losses and speed every N steps.", flag="--log-every", min=1)
    time_limit: float = option(0.0, "Stop after this many seconds of training, with a checkpoint and sample grid, "
                                    "even before --steps (0: no limit); --resume goes on from there.  For comparing "
                                    "models at equal time.", min=0)
    keep_checkpoints: int = 2  # step checkpoints kept besides last.ckpt's target
    amp: bool = option(True, f"{AMP_HELP}.")  # the CPU always trains in float32
    num_workers: int = option(2, "Data-loading worker processes (0: load in this process, where a crashing "
                                 "decoder would end the run).", flag="--workers", min=0)
    sync_batch_norm: bool = option(False, "Synchronise batch norm across processes (torchrun, CUDA).",
                                   flag="--sync-bn", switch=True)
    ema_decay: float = option(0.0, "Decay of the moving average of the generator weights used for samples (0: off).",
                              flag="--ema", min=0, max=1, max_open=True)
    eval_every_steps: int = option(0, "Evaluate on held-out data every N steps and at the end, logging the metrics "
                                      "and keeping RUN/best.ckpt (0: off).", flag="--eval-every", min=0)
    eval_metric: str = option("", "Metric that picks best.ckpt.  [default: the model's own]")
    eval_a: str | None = option(None, "Held-out A images for --eval-every.", path=True)
    eval_b: str | None = option(None, "Held-out B images for --eval-every.", path=True)
    eval_aligned: str | None = option(None, "Held-out side-by-side files for --eval-every (pix2pix).", path=True)
    eval_data: str | None = option(None, "Held-out domain sub-folders for --eval-every (StarGAN).", path=True)
    eval_samples: int = 1000  # generated images per evaluation (MNIST GAN)
    # speed settings (img2img.speed): how the step runs, not what it computes; they may change on --resume
    channels_last: bool = option(False, "Networks and image batches in NHWC memory layout.")
    compile: str = option("auto", "torch.compile the networks; reduce-overhead and max-autotune also replay each step "
                                  "as CUDA graphs; auto: when training on one CUDA GPU (the first steps compile, "
                                  "about a minute) default inside --cuda-graph's step graphs, else reduce-overhead; "
                                  "off on the CPU and for a gradient penalty (StarGAN, --loss wgan-gp), which cannot "
                                  "be compiled; if torch's compiler fails under auto, the run goes on uncompiled.",
                          choices=COMPILE_MODES)
    cudnn_benchmark: bool = option(True, "Let cuDNN time and pick its fastest convolution algorithms (CUDA).")
    cuda_graph: str = option("auto", "Capture each whole training step (every phase's forward and backward passes "
                                     "and optimiser update) as one CUDA graph and replay it (CUDA, one process); "
                                     "with it --compile auto is default, not reduce-overhead.  auto: on where it "
                                     "can run, and off again, with a warning, should a capture fail; given alone: "
                                     "on, which stops where it cannot run.", choices=CUDA_GRAPH_SETTINGS, bare="on")
    fused_adam: bool = True  # Adam's update as one fused kernel (else the multi-tensor "foreach" one)
    tensorboard: bool = option(False, "Also write TensorBoard event files to RUN/tensorboard: losses, learning rate, "
                                      "speed, sample grids, evaluations and the config (needs pip install "
                                      "'img2img[tensorboard]').", switch=True)

    def validate(self) -> None:
        if self.steps is None or self.decay_steps is None:
            raise ValueError("steps and decay_steps are set by the model's schedule (GANModel.schedule) first")
        positive = {"--steps": self.steps, "--batch-size": self.batch_size, "--save-every": self.save_every_steps,
                    "--sample-every": self.sample_every_steps, "--log-every": self.log_every_steps}
        for option, value in positive.items():
            if value <= 0:
                raise UserError(f"{option} must be a positive whole number, got {value}")
        if not 0 <= self.decay_steps <= self.steps:
            raise UserError(f"--decay-steps must lie between 0 and --steps ({self.steps}), got {self.decay_steps}")
        if self.lr <= 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"--ema must lie in [0, 1), got {self.ema_decay}")
        if self.eval_every_steps < 0:
            raise UserError(f"--eval-every must be 0 (off) or more, got {self.eval_every_steps}")
        if not 0 <= self.seed < 2**63:
            raise UserError(f"--seed must lie in [0, 2**63), got {self.seed}")
        if self.num_workers < 0:
            raise UserError(f"--workers must be 0 or more, got {self.num_workers}")
        from img2img.speed import check_compile_mode  # noqa: PLC0415

        check_compile_mode(self.compile)
        from img2img.step_graph import check_setting  # noqa: PLC0415

        check_setting(self.cuda_graph)
        if self.tensorboard:
            from img2img.board import check_available  # noqa: PLC0415

            check_available()


# settings that --resume may change: they say where and how fast a run computes, not what
RESUMABLE_SETTINGS = ("steps", "time_limit", "device", "channels_last", "compile", "cudnn_benchmark", "cuda_graph",
                      "fused_adam", "tensorboard")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run: the model's name, the loop's options and the model's options."""

    model: str
    train: TrainConfig
    options: Any = field(default=None)  # the model's own Config dataclass

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "train": dataclasses.asdict(self.train),
                "options": dataclasses.asdict(self.options)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace_train(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, train=dataclasses.replace(self.train, **changes))


def from_dict(cls: type, values: dict[str, Any], what: str) -> Any:
    """Build dataclass ``cls`` from ``values``, refusing unknown keys (they mean a foreign or newer file)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"{what}: unknown settings {', '.join(unknown)} (written by a newer img2img, which "
                        "reads it?)")
    converted = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            value = values[f.name]
            converted[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**converted)
