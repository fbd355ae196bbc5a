"""``img2img bench``: speed and memory of a training step or of folder translation, on synthetic data."""

from __future__ import annotations

import json

import click

from img2img import bench as bench_lib


@click.command()
@click.argument("target", type=click.Choice(bench_lib.TARGETS))
@click.option("--size", type=click.IntRange(min=8), default=256, help="Image side (the MNIST GAN is always 28).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per step.  [default: 1 for training (64 for mnist-gan), 8 for translate]")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Timed steps (translate: images).  [default: 50 on CUDA, 3 on the CPU (translate: 256, 16)]")
@click.option("--warmup", type=click.IntRange(min=0), default=None,
              help="Untimed steps first.  [default: 5 on CUDA, 1 on the CPU]")
@click.option("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--amp/--no-amp", default=True, help="bf16 autocast on CUDA.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="translate: decoding processes.  [default: min(4, CPUs)]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the summary.")
def bench(target: str, size: int, batch_size: int | None, steps: int | None, warmup: int | None, device: str,
          amp: bool, workers: int | None, as_json: bool) -> None:
    """Time TARGET (a model's training step, or translate) on synthetic data: seconds per step, images/s,
    peak memory, achieved TFLOP/s and its fraction of the device's measured peak."""
    from img2img.train import resolve_device  # noqa: PLC0415

    on_cuda = resolve_device(device).type == "cuda"
    if target == "translate":
        result = bench_lib.bench_translate(size, batch_size or 8, steps or (256 if on_cuda else 16), device, amp,
                                           workers)
    else:
        default_batch = 64 if target == "mnist-gan" else 1
        result = bench_lib.bench_training(target, size, batch_size or default_batch, steps or (50 if on_cuda else 3),
                                          warmup if warmup is not None else (5 if on_cuda else 1), device, amp)
    click.echo(json.dumps(result) if as_json else bench_lib.format_result(result))
