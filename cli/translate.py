"""``img2img translate``, ``img2img import`` and ``img2img export``: using a trained generator."""

from __future__ import annotations

from pathlib import Path

import click

from img2img import export as export_lib
from img2img import official
from img2img import translate as translate_lib
from img2img.config import AMP_HELP, MAX_SIDE
from img2img.data.images import is_image_name, pixel_limit

from .options import Location, Output, Word, counts, cuda_graph_option, printable, with_speed_options

ARCH_HELP = "Official weights only: the generator they hold (checked against the weights, which say it anyway)."


def official_options(command):
    """--arch/--norm/--ngf: describe (and check) an official pytorch-CycleGAN-and-pix2pix weights file."""
    for option in reversed([
        click.option("--arch", type=click.Choice(official.ARCHITECTURES), default=None, help=ARCH_HELP),
        click.option("--norm", type=click.Choice(["batch", "instance", "none"]), default=None,
                     help="Official weights only: their normalisation.  [default: read from the weights]"),
        click.option("--ngf", "base_channels", type=counts(), default=None,
                     help="Official weights only: generator base width.  [default: read from the weights]"),
    ]):
        command = option(command)
    return command


@click.command()
@click.argument("checkpoint", type=Location())
@click.argument("input_path", metavar="INPUT", type=Location())
@click.argument("output", type=Output())
@click.option("--direction", "--to", "target", type=Word(), default=None,
              help="What the translation takes, as the model says: a2b or b2a for two-way models (CycleGAN, "
                   "DiscoGAN), a domain for StarGAN, or all: every one, each into OUTPUT/<target>.  "
                   "[default: the model's first]")
@click.option("--format", "image_format", type=click.Choice(translate_lib.FORMATS), default="png",
              help="Output files: PNG (lossless, 8 or 16 bits), JPEG, or the input's own format.")
@click.option("--resize", type=click.IntRange(min=1, max=MAX_SIDE), default=None,
              help="Resize every input to N×N first (outputs are then N×N).  [default: keep each size]")
@click.option("--tile", type=click.IntRange(min=1, max=MAX_SIDE), default=None,
              help="Translate images larger than N×N in overlapping N×N tiles.  [default: only when an image "
                   "would not fit in memory]")
@click.option("--batch-size", type=counts(), default=8, help="Images per forward pass.")
@click.option("--workers", type=counts(0), default=None,
              help="Decoding processes; a file that crashes its decoder costs only that file.  0 decodes in this "
                   "process, unguarded.  [default: min(4, CPUs)]")
@click.option("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--amp/--no-amp", default=True, help=f"{AMP_HELP}; --no-amp: float32 throughout.")
@click.option("--stochastic", is_flag=True, help="Keep dropout on (pix2pix's noise); batch norm stays in eval mode.")
@click.option("--ema/--no-ema", "use_ema", default=True, help="Use the averaged weights when the run kept them.")
@click.option("--overwrite", is_flag=True, help="Replace files that already exist in OUTPUT.")
@click.option("--max-pixels", type=counts(0, 2**63 - 1), default=None,
              help="Skip, unread, any file whose header claims more pixels than this (0: no limit).  "
                   "[default: Pillow's limit, about 89 million]")
@official_options
@with_speed_options
@cuda_graph_option("Capture the forward pass of each batch shape as a CUDA graph and replay it (CUDA).  Given "
                   "alone: on; auto: on where it can run, and off again, with a warning, should a capture fail.")
def translate(checkpoint: str, input_path: str, output: str, target: str | None, image_format: str, resize: int | None,
              tile: int | None, batch_size: int, workers: int | None, device: str, amp: bool, stochastic: bool,
              use_ema: bool, overwrite: bool, max_pixels: int | None, arch: str | None, norm: str | None,
              base_channels: int | None, channels_last: bool, compile_mode: str, cudnn_benchmark: bool,
              cuda_graph: str) -> None:
    """Translate the image INPUT, or every image under the folder INPUT, into the folder OUTPUT.

    CHECKPOINT is an img2img checkpoint, a run folder (its last checkpoint), or
    an official pytorch-CycleGAN-and-pix2pix generator file (latest_net_G_A.pth).
    OUTPUT mirrors INPUT's sub-folders and file names; each output has its
    input's size.  One image INPUT may also go to an image file OUTPUT
    (out.png, out.jpg: its extension sets the format).  Existing files are
    kept unless --overwrite.  An unreadable input is reported and skipped, and
    the exit code is then 3.
    """
    # --to all: every target of the model, each into its own sub-folder of OUTPUT
    every = target == "all"
    if every and is_image_name(Path(output)) and not Path(output).is_dir():
        raise click.UsageError(f"--to all writes a folder per target into OUTPUT; {output} names a file")
    targets = translate_lib.translation_targets(checkpoint) if every else (target,)
    ok = True
    with pixel_limit(max_pixels):  # this command's limit, not the process's for good
        for goal in targets:
            translator = translate_lib.load(checkpoint, goal, device, arch=arch, norm=norm,
                                            base_channels=base_channels, use_ema=use_ema, amp=amp,
                                            stochastic=stochastic, batch_size=batch_size, tile=tile,
                                            channels_last=channels_last, compile=compile_mode,
                                            cudnn_benchmark=cudnn_benchmark, cuda_graph=cuda_graph)
            click.echo(f"{translator.info.description} on {translator.device}", err=True)
            summary = translator.translate_folder(
                input_path, Path(output) / goal if every else output, image_format, overwrite=overwrite,
                resize=resize, workers=workers,
                on_skip=lambda path, reason: click.echo(printable(f"skipped {path}: {reason}"), err=True))
            click.echo(f"{goal}: {summary.line()}" if every else summary.line())
            ok = ok and summary.ok
    if not ok:
        raise click.exceptions.Exit(translate_lib.EXIT_SKIPPED)


@click.command("import")
@click.argument("weights", type=Location())
@click.argument("weights_b", required=False, type=Location())
@click.option("--out", type=Output(dir_okay=False), required=True, help="The img2img checkpoint to write.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@official_options
def import_weights(weights: str, weights_b: str | None, out: str, overwrite: bool, arch: str | None,
                   norm: str | None, base_channels: int | None) -> None:
    """Turn official generator weights into a self-describing img2img checkpoint.

    WEIGHTS is G_A (latest_net_G_A.pth, a→b) or a pix2pix G (latest_net_G.pth);
    WEIGHTS_B, for CycleGAN, is G_B (b→a).  The checkpoint translates and
    exports without --arch; it holds no discriminators, so it does not resume.
    """
    path = official.to_checkpoint(weights, weights_b, out, arch, norm, base_channels, overwrite)
    click.echo(f"wrote {path}")


@click.command()
@click.argument("checkpoint", type=Location())
@click.option("--format", "export_format", type=click.Choice(["onnx"]), default="onnx", help="Export format.")
@click.option("--out", type=Output(dir_okay=False), required=True, help="The file to write.")
@click.option("--direction", "--to", "target", type=Word(), default=None,
              help="What the exported generator translates (a2b, b2a; a StarGAN domain).  [default: the model's "
                   "first; for StarGAN, every domain, the target being a second input]")
@click.option("--ema/--no-ema", "use_ema", default=True, help="Export the averaged weights when the run kept them.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@official_options
def export(checkpoint: str, export_format: str, out: str, target: str | None, use_ema: bool, overwrite: bool,
           arch: str | None, norm: str | None, base_channels: int | None) -> None:
    """Export one generator of CHECKPOINT (batch and image size dynamic; sides must be multiples of what it needs).

    A model that makes images from noise (mnist-gan, dcgan, wgan, gmmn, cgan, acgan) exports its generator:
    input 'noise' (and 'label', one-hot, for cgan and acgan), output 'images'."""
    path = export_lib.export_onnx(checkpoint, out, target, arch, norm, base_channels, use_ema, overwrite)
    click.echo(f"wrote {path}")
