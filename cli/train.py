"""``img2img train MODEL``: one subcommand per model, all sharing the options in :mod:`.options`."""

from __future__ import annotations

import click

from img2img import train as training
from img2img.config import RunConfig, TrainConfig
from img2img.models.mnist_gan import MnistGanConfig

from .options import check_resume_options, default_out, report_config, run_config, train_options


@click.group()
def train() -> None:
    """Train a model; every run writes a folder with its config, log, sample grids and checkpoints."""


def _start(ctx: click.Context, run: RunConfig, values: dict) -> None:
    """Start the run described by ``run`` or resume ``--resume``, then say where the results are."""
    if values["resume"]:
        check_resume_options(ctx)
        steps = values["steps"] if ctx.get_parameter_source("steps").name != "DEFAULT" else None
        device = values["device"] if ctx.get_parameter_source("device").name != "DEFAULT" else None
        if values["dry_run"]:
            click.echo(f"would resume {values['resume']}")
            return
        result = training.resume(values["resume"], steps=steps, device=device)
    else:
        run.train.validate()
        report_config(run)
        if values["dry_run"]:
            return
        result = training.train(run, values["out"] or default_out(run.model))
    click.echo(f"run folder:  {result.run_dir}")
    click.echo(f"checkpoint:  {result.checkpoint}")
    if result.sample_grid is not None:
        click.echo(f"sample grid: {result.sample_grid}")


MNIST_DEFAULTS = TrainConfig(steps=8000, batch_size=64, save_every_steps=2000, sample_every_steps=1000,
                             log_every_steps=100, num_workers=0)


@train.command("mnist-gan")
@train_options(MNIST_DEFAULTS, default_loss=MnistGanConfig.loss)
@click.option("--mnist-root", type=click.Path(), default=None,
              help="Use full MNIST from this folder (downloaded there if missing; falls back to the embedded "
                   "digits when that fails).  [default: the embedded 4,000 training digits]")
@click.pass_context
def mnist_gan(ctx: click.Context, **values) -> None:
    """The MNIST baseline GAN (MLP G and D) on the embedded digits; no download needed."""
    options = MnistGanConfig(loss=values["loss"], mnist_root=values["mnist_root"])
    _start(ctx, run_config("mnist-gan", options, values), values)
