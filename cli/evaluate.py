"""``img2img eval``: metrics of a checkpoint, with their baselines and floors, as a table and as JSON."""

from __future__ import annotations

from pathlib import Path

import click

from img2img.evaluation.features import EXTRACTORS
from img2img.evaluation.evaluate import evaluate_checkpoint, write_report

from .options import SEED, Location, Output, counts


@click.command("eval")
@click.argument("checkpoint", type=Location())
@click.option("--a", "data_a", type=Location(), default=None, help="Held-out domain-A (input) images.")
@click.option("--b", "data_b", type=Location(), default=None, help="Held-out domain-B (target) images.")
@click.option("--aligned", type=Location(), default=None, help="Held-out side-by-side A|B files (pix2pix).")
@click.option("--data", "domains", type=Location(), default=None,
              help="Held-out images, one sub-folder per domain (StarGAN); for a model trained on a folder (dcgan "
                   "--data DIR), where DIR lies now, if it moved.")
@click.option("--metrics", default=None,
              help="Comma-separated metrics that must be computed (e.g. fid,psnr).  [default: all that apply]")
@click.option("--features", type=click.Choice(["auto", *EXTRACTORS]), default="auto",
              help="FID/KID features: auto (digits for digit data, else Inception), digits, inception, random.")
@click.option("--inception-weights", type=Location(dir_okay=False), default=None,
              help="The FID Inception weights (pt_inception-2015-12-05-6726825d.pth); never downloaded.")
@click.option("--samples", type=counts(2), default=None,
              help="Generated images (MNIST GAN).  [default: 1000]")
@click.option("--seed", type=SEED, default=0, help="Seed of the generated images and of the floor's draw.")
@click.option("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--json", "json_path", type=Output(dir_okay=False), default=None,
              help="Where to write the JSON.  [default: RUN/eval/step-N.json beside the checkpoint]")
def evaluate(checkpoint: str, data_a: str | None, data_b: str | None, aligned: str | None, domains: str | None,
             metrics: str | None,
             features: str, inception_weights: str | None, samples: int | None, seed: int, device: str,
             json_path: str | None) -> None:
    """Evaluate CHECKPOINT (a checkpoint file or run folder) by the documented protocol (see the README)."""
    wanted = tuple(m.strip() for m in metrics.split(",") if m.strip()) if metrics else ()
    report, destination = evaluate_checkpoint(checkpoint, data_a, data_b, aligned, wanted, features,
                                              inception_weights, samples, seed, device,
                                              Path(json_path) if json_path else None, domains)
    click.echo(f"{report.model} at step {report.step}")
    click.echo(report.table())  # before the JSON is written: a write that fails does not take the metrics with it
    if destination is not None:
        write_report(report, destination)
        click.echo(f"wrote {destination}")
