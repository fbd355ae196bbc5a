"""``img2img train MODEL``: one subcommand per registered model, generated from its config and defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from img2img import train as training
from img2img.config import RunConfig, TrainConfig, path_fields
from img2img.distributed import from_environment
from img2img.models import MODELS, GANModel
from img2img.run import RunDir

from .options import (Output, check_resume_options, config_options, decorate, default_out, record_output, report_config,
                      resume_changes, resume_moves)


@click.group()
def train() -> None:
    """Train a model; every run writes a folder with its config, log, sample grids and checkpoints."""


def _start(ctx: click.Context, model_class: type[GANModel], values: dict) -> None:
    """Start the run the options describe, or resume --resume; then say where the results are."""
    out, resume, dry_run = values.pop("out"), values.pop("resume"), values.pop("dry_run")
    if resume:
        data_fields = path_fields(model_class.Config) + path_fields(TrainConfig)
        check_resume_options(ctx, data_fields)
        if dry_run:
            click.echo(f"would resume {resume}" + (f" in the new run folder {out}" if out else ""))
            return
        result = training.resume(resume, model=model_class.name, moves=resume_moves(ctx, data_fields), out=out,
                                 **resume_changes(ctx))
    else:
        train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
        given = {k: v for k, v in values.items() if k in train_fields}
        # the model's defaults of settings that are no options (GMMN's Adam β1) first, then the options' values
        run = RunConfig(model_class.name, TrainConfig(**{**model_class.train_defaults, **given}),
                        model_class.Config(**{k: v for k, v in values.items() if k not in train_fields}))
        if out and not dry_run and from_environment().is_main:
            RunDir(out).check_fresh("--out")  # before the data are checked, which can take minutes
            training.refuse_run_inside_data(run, Path(out), "--out")
        run = training.resolve_run(run)
        if from_environment().is_main:
            report_config(run)
        if dry_run:
            return
        out = out or default_out(run.model)
        record_output(ctx, out)
        result = training.train(run, out, resolved=True)
    if not from_environment().is_main:
        return
    click.echo(f"run folder:  {result.run_dir}")
    click.echo(f"checkpoint:  {result.checkpoint}")
    if result.sample_grid is not None:
        click.echo(f"sample grid: {result.sample_grid}")


def _help_overrides(model_class: type[GANModel]) -> dict[str, str]:
    """Help that depends on the model: its best.ckpt metric, its epoch schedule."""
    helps = {"eval_metric": f"Metric that picks best.ckpt.  [default: {model_class.default_metric or 'none'}]"}
    if model_class.epoch_schedule is None:
        if model_class.train_defaults.get("decay_steps", 0) is None:  # left to the model's schedule
            helps["decay_steps"] = ("Final steps with a linearly falling learning rate.  [default: the second half "
                                    "of --steps]")
        return helps
    epochs, decay = model_class.epoch_schedule
    return {**helps,"steps": f"Training steps in all.  [default: {epochs} epochs of the training data, as in the paper]",
            "decay_steps": "Final steps with a linearly falling learning rate.  "
                           f"[default: the last {decay} epochs]"}


def model_command(model_class: type[GANModel]) -> click.Command:
    """``img2img train NAME``: the model's own options, then the training loop's, with the model's defaults."""
    defaults = dict(model_class.train_defaults)
    if model_class.epoch_schedule is not None:  # unset, they follow the data's size (GANModel.schedule)
        defaults.update(steps=None, decay_steps=None)
    options = [
        click.option("--out", type=Output(file_okay=False), default=None,
                     help="Run folder to create (with --resume: go on there, leaving the checkpoint's folder as it "
                          "is).  [default: runs/MODEL-TIME]"),
        click.option("--resume", type=Output(), default=None,
                     help="Continue the run in this folder (or from this checkpoint) with its saved settings (and, "
                          "where its data folders moved, their new places: --resume RUN --a DIR)."),
        *config_options(model_class.Config),
        *config_options(TrainConfig, defaults, help_overrides=_help_overrides(model_class)),
        click.option("--dry-run", is_flag=True, help="Print the resolved configuration and exit."),
    ]

    def command(**values) -> None:
        _start(click.get_current_context(), model_class, values)

    command.__doc__ = model_class.summary()
    return click.command(model_class.name, help=model_class.summary())(decorate(command, options))


for _model_class in MODELS.values():
    train.add_command(model_command(_model_class))
