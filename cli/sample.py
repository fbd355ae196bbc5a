"""``img2img sample``: images from a noise-to-image model's checkpoint (one class of a conditional one)."""

from __future__ import annotations

import click

from img2img import sampling

from .options import SEED, Location, Output, Word, counts


@click.command()
@click.argument("checkpoint", type=Location())
@click.option("--n", "count", type=counts(), default=64, help="How many images.")
@click.option("--out", type=Output(file_okay=False), required=True, help="Folder for the PNG files.")
@click.option("--seed", type=SEED, default=0, help="The same seed gives the same images.")
@click.option("--grid", type=Output(dir_okay=False), default=None, help="Also write them as one grid PNG.")
@click.option("--class", "label", type=Word(), default=None,
              help="The class to draw, by name (a digit, or a --data sub-folder), for a conditional model (cgan, "
                   "acgan).  [default: every class in turn, one grid row each]")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@click.option("--overwrite", is_flag=True, help="Replace files of the same names in --out, and --grid.")
def sample(checkpoint: str, count: int, out: str, seed: int, grid: str | None, label: str | None, device: str,
           overwrite: bool) -> None:
    """Write N generated images from CHECKPOINT (a checkpoint file or run folder) as PNG files."""
    written = sampling.sample_to_folder(checkpoint, count, out, seed=seed, grid=grid, device=device,
                                        overwrite=overwrite, label=label)
    click.echo(f"wrote {len(written)} images to {out}" + (f" and the grid {grid}" if grid else ""))
