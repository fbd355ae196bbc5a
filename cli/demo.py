"""``img2img demo``: write the small offline demo datasets made from the embedded MNIST digits."""

from __future__ import annotations

import click

from img2img.data import demo as demo_data

from .options import Output


@click.group()
def demo() -> None:
    """Write a small demo dataset from the embedded MNIST digits (no download)."""


@demo.command("pix2pix")
@click.argument("out", type=Output(file_okay=False))
@click.option("--overwrite", is_flag=True, help="Write into a folder that is not empty.")
def pix2pix(out: str, overwrite: bool) -> None:
    """Paired digits: skeleton (OUT/*/a) → digit (OUT/*/b), 32×32, train/ and test/ splits."""
    counts = demo_data.write_skeleton_pairs(out, overwrite=overwrite)
    click.echo(f"wrote {counts['train']} training and {counts['test']} held-out pairs to {out}")
    click.echo(f"train with: img2img train pix2pix --a {out}/train/a --b {out}/train/b --size 32 --load-size 32 "
               "--no-flip --batch-size 16 --steps 3000 --decay-steps 1000")


@demo.command("cyclegan")
@click.argument("out", type=Output(file_okay=False))
@click.option("--overwrite", is_flag=True, help="Write into a folder that is not empty.")
def cyclegan(out: str, overwrite: bool) -> None:
    """Unpaired digits: grey (OUT/train/a) and orange-on-navy (OUT/train/b) from disjoint halves, 32×32."""
    counts = demo_data.write_colour_digits(out, overwrite=overwrite)
    click.echo(f"wrote {counts['train_a']} + {counts['train_b']} unpaired training digits and {counts['test']} "
               f"held-out ones to {out}")
    click.echo(f"train with: img2img train cyclegan --a {out}/train/a --b {out}/train/b --size 32 --load-size 32 "
               "--no-flip --batch-size 4 --steps 3000 --decay-steps 1000 --ngf 32 --ndf 32")


@demo.command("stargan")
@click.argument("out", type=Output(file_okay=False))
@click.option("--overwrite", is_flag=True, help="Write into a folder that is not empty.")
def stargan(out: str, overwrite: bool) -> None:
    """Digits in four styles (OUT/train/<style>, disjoint quarters; OUT/test/<style>, every held-out digit in
    every style), 32×32, ink on black: plain white, bold orange, soft cyan, bold and soft green."""
    counts = demo_data.write_style_digits(out, overwrite=overwrite)
    test = counts.pop("test")
    click.echo(f"wrote {' + '.join(str(n) for n in counts.values())} training digits in {len(counts)} styles "
               f"({', '.join(counts)}) and {test} held-out ones in every style to {out}")
    click.echo(f"train with: img2img train stargan --data {out}/train --size 32 --no-flip --batch-size 16 "
               "--steps 12000 --ngf 32 --ndf 32 --lr 2e-4   (25 minutes on 2 CPU cores)")
