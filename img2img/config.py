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


@dataclass(frozen=True)
class TrainConfig:
    """Options of the training loop, the same for every model."""

    steps: int = 1000
    batch_size: int = 1
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    decay_steps: int = 0  # the last `decay_steps` of `steps` decay the learning rate linearly to zero
    save_every_steps: int = 1000
    sample_every_steps: int = 500
    log_every_steps: int = 50
    keep_checkpoints: int = 2  # step checkpoints kept besides last.ckpt's target
    amp: bool = True  # bf16 autocast on CUDA; the CPU always trains in float32
    num_workers: int = 2
    sync_batch_norm: bool = False  # synchronised batch norm across processes in distributed training (CUDA)
    ema_decay: float = 0.0  # > 0: keep an exponential moving average of the generators' weights for inference
    eval_every_steps: int = 0  # > 0: evaluate on held-out data every N steps and at the end; keep best.ckpt
    eval_metric: str = ""  # the metric best.ckpt is chosen by ("": the model's default)
    eval_a: str | None = None  # held-out data of image models (pix2pix: --eval-a/--eval-b or --eval-aligned)
    eval_b: str | None = None
    eval_aligned: str | None = None
    eval_samples: int = 1000  # generated images per evaluation (MNIST GAN)
    # speed settings (img2img.speed): how the step runs, not what it computes; they may change on --resume
    channels_last: bool = False  # networks and image batches in NHWC layout
    compile: str = "off"  # torch.compile mode: off, default, reduce-overhead, max-autotune, ...
    cudnn_benchmark: bool = True  # let cuDNN pick the fastest convolution algorithms (CUDA)
    fused_adam: bool = True  # Adam's update as one fused kernel (else the multi-tensor "foreach" one)

    def validate(self) -> None:
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
        if self.num_workers < 0:
            raise UserError(f"--workers must be 0 or more, got {self.num_workers}")
        from img2img.speed import check_compile_mode  # noqa: PLC0415

        check_compile_mode(self.compile)


# settings that --resume may change: they say where and how fast a run computes, not what
RESUMABLE_SETTINGS = ("steps", "device", "channels_last", "compile", "cudnn_benchmark", "fused_adam")


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
        raise UserError(f"{what}: unknown settings {', '.join(unknown)}")
    converted = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            value = values[f.name]
            converted[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**converted)
