"""Options every ``img2img train`` command takes, and how they become a run configuration."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click

from img2img.config import RESUMABLE_SETTINGS, RunConfig, TrainConfig
from img2img.losses import LOSSES
from img2img.speed import COMPILE_MODES

# options that may accompany --resume: they do not change what the run computes
RESUMABLE = {*RESUMABLE_SETTINGS, "resume", "out", "dry_run"}
OPTION_SETTINGS = {"compile_mode": "compile"}  # option names that differ from their TrainConfig field


def resume_changes(ctx: click.Context) -> dict[str, Any]:
    """The resumable settings given on the command line (not left at their defaults), by TrainConfig field."""
    return {OPTION_SETTINGS.get(name, name): value for name, value in ctx.params.items()
            if OPTION_SETTINGS.get(name, name) in RESUMABLE_SETTINGS
            and ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)}


def train_options(defaults: TrainConfig, default_loss: str, steps_help: str = "Training steps in all.",
                  decay_help: str = "Final steps over which the learning rate falls linearly to zero.",
                  epoch_schedule: bool = False) -> Callable:
    """Decorate a ``train MODEL`` command with the shared options, showing this model's defaults.

    With ``epoch_schedule``, --steps and --decay-steps default to None: the
    command derives them from the dataset's size (see :func:`epoch_steps`).
    """
    positive = click.IntRange(min=1)
    options = [
        click.option("--out", type=click.Path(file_okay=False), default=None,
                     help="Run folder to create.  [default: runs/MODEL-TIME]"),
        click.option("--resume", type=click.Path(), default=None,
                     help="Continue the run in this folder (or from this checkpoint) with its saved settings."),
        click.option("--steps", type=positive, default=None if epoch_schedule else defaults.steps, help=steps_help),
        click.option("--batch-size", type=positive, default=defaults.batch_size, help="Examples per step."),
        click.option("--loss", type=click.Choice(list(LOSSES)), default=default_loss, help="Adversarial loss."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=defaults.lr,
                     help="Adam learning rate."),
        click.option("--decay-steps", type=click.IntRange(min=0),
                     default=None if epoch_schedule else defaults.decay_steps, help=decay_help),
        click.option("--seed", type=int, default=defaults.seed, help="Random seed."),
        click.option("--device", default=defaults.device, help="auto (CUDA when present), cpu, cuda or cuda:N."),
        click.option("--amp/--no-amp", default=defaults.amp, help="bf16 autocast on CUDA."),
        click.option("--save-every", type=positive, default=defaults.save_every_steps,
                     help="Write a checkpoint every N steps (and at the end)."),
        click.option("--sample-every", type=positive, default=defaults.sample_every_steps,
                     help="Write a sample grid every N steps (and at the end)."),
        click.option("--log-every", type=positive, default=defaults.log_every_steps,
                     help="Log losses and speed every N steps."),
        click.option("--workers", type=click.IntRange(min=0), default=defaults.num_workers,
                     help="Data-loading worker processes."),
        click.option("--ema", type=click.FloatRange(min=0, max=1, max_open=True), default=defaults.ema_decay,
                     help="Decay of the moving average of the generator weights used for samples (0: off)."),
        click.option("--eval-every", type=click.IntRange(min=0), default=0,
                     help="Evaluate on held-out data every N steps and at the end, logging the metrics and keeping "
                          "RUN/best.ckpt (0: off)."),
        click.option("--eval-metric", default="",
                     help="Metric that picks best.ckpt.  [default: fid (MNIST GAN), psnr (pix2pix), fid_a2b]"),
        click.option("--eval-a", type=click.Path(), default=None, help="Held-out A images for --eval-every."),
        click.option("--eval-b", type=click.Path(), default=None, help="Held-out B images for --eval-every."),
        click.option("--eval-aligned", type=click.Path(), default=None,
                     help="Held-out side-by-side files for --eval-every (pix2pix)."),
        click.option("--sync-bn", is_flag=True, help="Synchronise batch norm across processes (torchrun, CUDA)."),
        *speed_options(defaults),
        click.option("--dry-run", is_flag=True, help="Print the resolved configuration and exit."),
    ]

    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def speed_options(defaults: TrainConfig) -> list[Callable]:
    """How fast a step runs (see img2img.speed); shared by ``train`` and ``bench``."""
    return [
        click.option("--channels-last/--no-channels-last", default=defaults.channels_last,
                     help="Networks and image batches in NHWC memory layout."),
        click.option("--compile", "compile_mode", type=click.Choice(COMPILE_MODES), default=defaults.compile,
                     help="torch.compile the networks; reduce-overhead and max-autotune also use CUDA graphs."),
        click.option("--cudnn-benchmark/--no-cudnn-benchmark", default=defaults.cudnn_benchmark,
                     help="Let cuDNN time and pick its fastest convolution algorithms (CUDA)."),
    ]


def with_speed_options(command: Callable) -> Callable:
    """Decorate a command that runs networks (translate, bench) with the speed options and their defaults."""
    for option in reversed(speed_options(TrainConfig())):
        command = option(command)
    return command


def epoch_steps(values: dict[str, Any], dataset_size: int, epochs: int, decay_epochs: int) -> None:
    """Fill in --steps and --decay-steps left unset: ``epochs`` passes over the data, the last ``decay_epochs``
    of them decaying (the papers' 100 + 100 epochs)."""
    per_epoch = max(1, -(-dataset_size // values["batch_size"]))
    if values["steps"] is None:
        values["steps"] = epochs * per_epoch
        if values["decay_steps"] is None:
            values["decay_steps"] = decay_epochs * per_epoch
    elif values["decay_steps"] is None:
        values["decay_steps"] = values["steps"] * decay_epochs // epochs


def train_config(values: dict[str, Any]) -> TrainConfig:
    return TrainConfig(
        steps=values["steps"], batch_size=values["batch_size"], seed=values["seed"], device=values["device"],
        lr=values["lr"], decay_steps=values["decay_steps"], save_every_steps=values["save_every"],
        sample_every_steps=values["sample_every"], log_every_steps=values["log_every"],
        num_workers=values["workers"], amp=values["amp"], ema_decay=values["ema"], sync_batch_norm=values["sync_bn"],
        eval_every_steps=values["eval_every"], eval_metric=values["eval_metric"], eval_a=values["eval_a"],
        eval_b=values["eval_b"], eval_aligned=values["eval_aligned"], channels_last=values["channels_last"],
        compile=values["compile_mode"], cudnn_benchmark=values["cudnn_benchmark"])


def check_resume_options(ctx: click.Context) -> None:
    """With --resume, refuse options that would change what the saved run computes."""
    for name in ctx.params:
        if OPTION_SETTINGS.get(name, name) in RESUMABLE:
            continue
        if ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None):
            flag = next(p for p in ctx.command.params if p.name == name).opts[0]
            raise click.UsageError(f"{flag} cannot be changed when resuming; --resume uses the run's saved "
                                   "settings (only --steps, --device, --channels-last, --compile and --cudnn-benchmark "
                                   "may be given)", ctx)
    if ctx.get_parameter_source("out") is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--out cannot be given with --resume: a resumed run stays in its own folder", ctx)


def default_out(model: str) -> str:
    return f"runs/{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def report_config(run: RunConfig) -> None:
    click.echo(f"resolved configuration:\n{run.to_json()}")


def run_config(model: str, options: Any, values: dict[str, Any]) -> RunConfig:
    return RunConfig(model=model, train=train_config(values), options=options)


__all__ = ["check_resume_options", "default_out", "epoch_steps", "report_config", "resume_changes", "run_config",
           "speed_options", "train_options",
           "with_speed_options"]
