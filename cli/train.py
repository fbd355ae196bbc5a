"""``img2img train MODEL``: one subcommand per model, all sharing the options in :mod:`.options`."""

from __future__ import annotations

import os

import click

from img2img import train as training
from img2img.distributed import from_environment
from img2img.config import RunConfig, TrainConfig
from img2img.models.cyclegan import GENERATORS as CYCLEGAN_GENERATORS
from img2img.models.cyclegan import CycleGAN, CycleGANConfig
from img2img.models.discogan import DiscoGAN, DiscoGANConfig
from img2img.models.mnist_gan import MnistGanConfig
from img2img.models.pix2pix import DISCRIMINATORS, GENERATORS, Pix2Pix, Pix2PixConfig
from img2img.nn.norm import NORMS

from .options import (check_resume_options, default_out, epoch_steps, report_config, resume_changes, run_config,
                      train_options)


@click.group()
def train() -> None:
    """Train a model; every run writes a folder with its config, log, sample grids and checkpoints."""


def _start(ctx: click.Context, run: RunConfig, values: dict, resolved: bool = False) -> None:
    """Start the run described by ``run`` or resume ``--resume``, then say where the results are."""
    if values["resume"]:
        check_resume_options(ctx)
        if values["dry_run"]:
            click.echo(f"would resume {values['resume']}")
            return
        result = training.resume(values["resume"], **resume_changes(ctx))
    else:
        run = run if resolved else training.resolve_run(run)
        if from_environment().is_main:
            report_config(run)
        if values["dry_run"]:
            return
        result = training.train(run, values["out"] or default_out(run.model), resolved=True)
    if not from_environment().is_main:
        return
    click.echo(f"run folder:  {result.run_dir}")
    click.echo(f"checkpoint:  {result.checkpoint}")
    if result.sample_grid is not None:
        click.echo(f"sample grid: {result.sample_grid}")


# Measured on 2 CPU cores: 10,000 steps of batch 128 take about 3.5 minutes; the weight average (EMA)
# and the larger batch gave the best digits for that time (see the closing note of the foundation issue).
MNIST_DEFAULTS = TrainConfig(steps=10_000, batch_size=128, save_every_steps=2000, sample_every_steps=1000,
                             log_every_steps=100, num_workers=0, ema_decay=0.999)


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


# pix2pix, CycleGAN and DiscoGAN: batch 1 as in the papers, steps from the papers' epochs (see epoch_steps)
IMAGE_DEFAULTS = TrainConfig(batch_size=1, save_every_steps=5000, sample_every_steps=1000, log_every_steps=100,
                             num_workers=min(4, os.cpu_count() or 1))


@train.command("pix2pix")
@train_options(IMAGE_DEFAULTS, default_loss=Pix2PixConfig.loss,
               steps_help="Training steps in all.  [default: 200 epochs, as in the paper]",
               decay_help="Final steps with a linearly falling learning rate.  [default: the second half]",
               epoch_schedule=True)
@click.option("--a", "a_dir", type=click.Path(), default=None, help="Folder of input images (domain A).")
@click.option("--b", "b_dir", type=click.Path(), default=None, help="Folder of target images, paired with --a by name.")
@click.option("--aligned", type=click.Path(), default=None, help="Folder of side-by-side A|B images (official format).")
@click.option("--direction", type=click.Choice(["a2b", "b2a"]), default="a2b", help="Translate A to B, or B to A.")
@click.option("--size", type=click.IntRange(min=32), default=256, help="Training crop side in pixels.")
@click.option("--load-size", type=click.IntRange(min=1), default=None,
              help="Side images are resized to before cropping.  [default: size × 286/256]")
@click.option("--channels-a", type=click.Choice(["1", "3", "4"]), default=None,
              help="Input channels.  [default: inferred from the files]")
@click.option("--channels-b", type=click.Choice(["1", "3", "4"]), default=None,
              help="Output channels.  [default: inferred from the files]")
@click.option("--flip/--no-flip", default=True, help="Random horizontal flips.")
@click.option("--generator", type=click.Choice(list(GENERATORS)), default="auto",
              help="U-Net depth: unet_256 (8 downsamplings), unet_128 (7), auto: what --size fits.")
@click.option("--ngf", type=click.IntRange(min=1), default=64, help="Generator base width.")
@click.option("--ndf", type=click.IntRange(min=1), default=64, help="Discriminator base width.")
@click.option("--norm", type=click.Choice(list(NORMS)), default="batch", help="Normalisation layers.")
@click.option("--dropout/--no-dropout", default=True, help="Dropout 0.5 in the innermost decoder blocks.")
@click.option("--discriminator", type=click.Choice(list(DISCRIMINATORS)), default="basic",
              help="basic: 70×70 PatchGAN; n_layers: PatchGAN of --n-layers; pixel: 1×1 PixelGAN.")
@click.option("--n-layers", type=click.IntRange(min=1), default=3, help="Layers of the n_layers discriminator.")
@click.option("--lambda-l1", type=click.FloatRange(min=0), default=100.0, help="Weight λ of the L1 term.")
@click.pass_context
def pix2pix(ctx: click.Context, **values) -> None:
    """pix2pix (U-Net G, PatchGAN D, cGAN + λ·L1) on paired folders or side-by-side files."""
    options = Pix2PixConfig(
        a=values["a_dir"], b=values["b_dir"], aligned=values["aligned"], direction=values["direction"],
        size=values["size"], load_size=values["load_size"],
        channels_a=int(values["channels_a"]) if values["channels_a"] else None,
        channels_b=int(values["channels_b"]) if values["channels_b"] else None,
        flip=values["flip"], generator=values["generator"], base_channels=values["ngf"], norm=values["norm"],
        dropout=values["dropout"], discriminator=values["discriminator"], n_layers=values["n_layers"],
        d_base_channels=values["ndf"], loss=values["loss"], lambda_l1=values["lambda_l1"])
    _start_epoch_schedule(ctx, Pix2Pix, options, values)

def unpaired_options(command):
    """The data options CycleGAN and DiscoGAN share."""
    options = [
        click.option("--a", "a_dir", type=click.Path(), default=None, help="Folder of domain-A images."),
        click.option("--b", "b_dir", type=click.Path(), default=None, help="Folder of domain-B images (unpaired)."),
        click.option("--load-size", type=click.IntRange(min=1), default=None,
                     help="Side images are resized to before cropping.  [default: size × 286/256]"),
        click.option("--channels-a", type=click.Choice(["1", "3", "4"]), default=None,
                     help="Channels of domain A.  [default: inferred from the files]"),
        click.option("--channels-b", type=click.Choice(["1", "3", "4"]), default=None,
                     help="Channels of domain B.  [default: inferred from the files]"),
        click.option("--flip/--no-flip", default=True, help="Random horizontal flips."),
        click.option("--gpu-augment", is_flag=True, help="Crop and flip on the training device with kornia."),
        click.option("--ngf", type=click.IntRange(min=1), default=64, help="Generator base width."),
        click.option("--ndf", type=click.IntRange(min=1), default=64, help="Discriminator base width."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _unpaired_data(values: dict) -> dict:
    return dict(a=values["a_dir"], b=values["b_dir"], size=values["size"], load_size=values["load_size"],
                channels_a=int(values["channels_a"]) if values["channels_a"] else None,
                channels_b=int(values["channels_b"]) if values["channels_b"] else None, flip=values["flip"],
                gpu_augment=values["gpu_augment"], base_channels=values["ngf"], d_base_channels=values["ndf"],
                loss=values["loss"])


def _start_epoch_schedule(ctx: click.Context, model_class, options, values: dict) -> None:
    """Resolve, fill in the papers' 100 + 100 epoch schedule where --steps was not given, and train."""
    if values["resume"]:
        _start(ctx, run_config(model_class.name, options, values), values)
        return
    options = model_class.resolve(options)
    epoch_steps(values, model_class.dataset_size(options), epochs=200, decay_epochs=100)
    run = training.resolve_run(run_config(model_class.name, options, values), options_resolved=True)
    _start(ctx, run, values, resolved=True)


@train.command("cyclegan")
@train_options(IMAGE_DEFAULTS, default_loss=CycleGANConfig.loss,
               steps_help="Training steps in all.  [default: 200 epochs of max(|A|, |B|) images, as in the paper]",
               decay_help="Final steps with a linearly falling learning rate.  [default: the second half]",
               epoch_schedule=True)
@unpaired_options
@click.option("--size", type=click.IntRange(min=8), default=256, help="Training crop side in pixels.")
@click.option("--generator", type=click.Choice(list(CYCLEGAN_GENERATORS)), default="auto",
              help="resnet_9blocks, resnet_6blocks, or auto: 9 blocks above 128 pixels, else 6.")
@click.option("--norm", type=click.Choice(list(NORMS)), default="instance", help="Normalisation layers.")
@click.option("--n-layers", type=click.IntRange(min=1), default=3, help="PatchGAN layers (3: 70×70 patches).")
@click.option("--lambda-a", type=click.FloatRange(min=0), default=10.0, help="Weight of the a→b→a cycle term.")
@click.option("--lambda-b", type=click.FloatRange(min=0), default=10.0, help="Weight of the b→a→b cycle term.")
@click.option("--lambda-identity", type=click.FloatRange(min=0), default=0.5,
              help="Identity term, relative to the cycle weights (0: off).")
@click.option("--pool-size", type=click.IntRange(min=0), default=50, help="Generated images kept for D (0: none).")
@click.pass_context
def cyclegan(ctx: click.Context, **values) -> None:
    """CycleGAN (ResNet G, PatchGAN D, LSGAN + cycle + identity) on two unpaired folders."""
    options = CycleGANConfig(**_unpaired_data(values), generator=values["generator"], norm=values["norm"],
                             n_layers=values["n_layers"], lambda_a=values["lambda_a"], lambda_b=values["lambda_b"],
                             lambda_identity=values["lambda_identity"], pool_size=values["pool_size"])
    _start_epoch_schedule(ctx, CycleGAN, options, values)


@train.command("discogan")
@train_options(IMAGE_DEFAULTS, default_loss=DiscoGANConfig.loss,
               steps_help="Training steps in all.  [default: 200 epochs of max(|A|, |B|) images]",
               decay_help="Final steps with a linearly falling learning rate.  [default: the second half]",
               epoch_schedule=True)
@unpaired_options
@click.option("--size", type=click.IntRange(min=16), default=64, help="Image side (a power of two).")
@click.option("--curriculum-steps", type=click.IntRange(min=0), default=0,
              help="Steps with the low starting reconstruction rate first (the paper code: 10000).")
@click.option("--starting-rate", type=click.FloatRange(0, 1), default=0.01, help="Reconstruction weight at first.")
@click.option("--default-rate", type=click.FloatRange(0, 1), default=0.5, help="Reconstruction weight after.")
@click.option("--update-interval", type=click.IntRange(min=2), default=3,
              help="The discriminators step once in this many steps, the generators the others.")
@click.pass_context
def discogan(ctx: click.Context, **values) -> None:
    """DiscoGAN (encoder-decoder G, feature-matching D, BCE + MSE reconstruction) on two unpaired folders."""
    options = DiscoGANConfig(**_unpaired_data(values), curriculum_steps=values["curriculum_steps"],
                             starting_rate=values["starting_rate"], default_rate=values["default_rate"],
                             update_interval=values["update_interval"])
    _start_epoch_schedule(ctx, DiscoGAN, options, values)
