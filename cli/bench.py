"""``img2img bench``: speed and memory of a training step or of folder translation, on synthetic data."""

from __future__ import annotations

import json

import click

from img2img import bench as bench_lib
from img2img.checkpoint import check_writable
from img2img.config import AMP_HELP, MAX_SIDE

from .options import Output, counts, cuda_graph_option, with_speed_options


@click.command()
@click.argument("target", type=click.Choice(bench_lib.targets()))
@click.option("--size", type=click.IntRange(min=8, max=MAX_SIDE), default=256, help="Image side (the MNIST GAN is always 28).")
@click.option("--batch-size", type=counts(), default=None,
              help="Images per step.  [default: the model's bench batch (1 for the image models, 64 for mnist-gan), "
                   "8 for translate]")
@click.option("--steps", type=counts(), default=None,
              help="Timed steps (translate: images).  [default: 50 on CUDA, 3 on the CPU (translate: 256, 16)]")
@click.option("--warmup", type=counts(0), default=None,
              help="Untimed steps first (at least 3 with --compile).  [default: 5 on CUDA, 1 on the CPU]")
@click.option("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--amp/--no-amp", default=True, help=f"{AMP_HELP}.")
@with_speed_options
@cuda_graph_option("Capture each whole training step (translate: each batch's forward pass) as one CUDA graph and "
                   "replay it (train's and translate's --cuda-graph; for training --compile auto is then default).  "
                   "Given alone: on; auto: on where it can run.")
@click.option("--ladder", is_flag=True,
              help="Run once per means of going faster, each rung adding one to the last (float32 eager with "
                   "foreach Adam, fused Adam, bf16, cuDNN benchmark, channels_last, torch.compile, CUDA graphs, "
                   "then one CUDA graph per step; CUDA-only rungs skipped on the CPU), and print a table "
                   "of each one's effect.  Ignores the speed options above.")
@click.option("--workers", type=counts(0), default=None,
              help="translate: decoding processes.  [default: min(4, CPUs)]")
@click.option("--io-only", is_flag=True,
              help="translate: a 1×1 convolution instead of the ResNet, to measure decoding, transfers and "
                   "encoding alone (the ceiling of the folder pipeline).")
@click.option("--profile", type=Output(dir_okay=False), default=None,
              help="Training targets: also profile ten more steps and write where their time goes to this file: "
                   "device busy time against wall time, operators by device time (torch.profiler), and the "
                   "host's time by Python function (cProfile).  translate: translate the folder once more and "
                   "write where the main thread and the writers were, sampled every millisecond.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the summary.")
def bench(target: str, size: int, batch_size: int | None, steps: int | None, warmup: int | None, device: str,
          amp: bool, channels_last: bool, compile_mode: str, cudnn_benchmark: bool, cuda_graph: str, ladder: bool,
          workers: int | None, io_only: bool, profile: str | None, as_json: bool) -> None:
    """Time TARGET (a model's training step, or translate) on synthetic data: seconds per step, images/s,
    peak memory, achieved TFLOP/s and its fraction of the device's measured peak."""
    from img2img.errors import out_of_memory, out_of_memory_message  # noqa: PLC0415
    from img2img.loading import resolve_device  # noqa: PLC0415
    from img2img.models import MODELS  # noqa: PLC0415

    torch_device = resolve_device(device)
    on_cuda = torch_device.type == "cuda"
    if io_only and target != "translate":
        raise click.UsageError("--io-only applies to translate only")
    if workers is not None and target != "translate":
        raise click.UsageError("--workers applies to translate only (a training target runs on synthetic batches)")
    if warmup is not None and target == "translate":
        raise click.UsageError("--warmup applies to training targets only (translate times every image)")
    fixed = None if target == "translate" else getattr(MODELS[target], "fixed_size", None)
    if fixed is not None and size != fixed and click.get_current_context().get_parameter_source("size") is not \
            click.core.ParameterSource.DEFAULT:  # it ran at 28 all the same, with no word of it
        raise click.UsageError(f"--size {size}: {target} takes {fixed}×{fixed} digits only; leave out --size")
    if ladder:
        context = click.get_current_context()
        given = [f"--{name.replace('_', '-')}" for name in ("amp", "channels_last", "compile_mode", "cudnn_benchmark",
                                                             "cuda_graph")
                 if context.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
        if given:
            raise click.UsageError(f"--ladder sets the speed settings itself, rung by rung; leave out "
                                   f"{', '.join(g.replace('--compile-mode', '--compile') for g in given)}")
    if profile and ladder:
        raise click.UsageError("--profile applies to a single run, not to --ladder")
    if profile:
        check_writable(profile, "--profile")  # before the timing, which the profile follows

    def run(speed: bench_lib.SpeedSettings) -> dict:
        batch = batch_size or (8 if target == "translate" else MODELS[target].bench_batch_size)
        try:
            if target == "translate":
                return bench_lib.bench_translate(size, batch, steps or (256 if on_cuda else 16), device, speed,
                                                 workers, io_only, profile)
            return bench_lib.bench_training(target, size, batch, steps or (50 if on_cuda else 3),
                                            warmup if warmup is not None else (5 if on_cuda else 1), device, speed,
                                            profile)
        except (RuntimeError, MemoryError) as error:  # torch.OutOfMemoryError is a RuntimeError
            if not out_of_memory(error):
                raise
            raise click.ClickException(f"{out_of_memory_message(error)}: {target} at --size {size} with --batch-size "
                                       f"{batch} does not fit; give a smaller one") from None

    if ladder:
        refusal = None if target == "translate" else bench_lib.refusal(target, size, "compile")
        if refusal:
            click.echo(f"the compiled rungs are left out: {refusal}", err=True)
        graph_refusal = None if target == "translate" else bench_lib.refusal(target, size, "graph")
        if graph_refusal and on_cuda:
            click.echo(f"the whole-step CUDA graph is left out: {graph_refusal}", err=True)
        results = bench_lib.ladder(run, torch_device, training=target != "translate", compiles=refusal is None,
                                   graphs=graph_refusal is None,
                                   progress=lambda r: click.echo(
                                       f"{r['rung']}: {r['seconds_per_step'] * 1000:.2f} ms per step, "
                                       f"{r['images_per_second']:.1f} images/s", err=True))
        click.echo(json.dumps({"ladder": results}) if as_json else bench_lib.format_ladder(results))
        return
    result = run(bench_lib.SpeedSettings(amp=amp, cudnn_benchmark=cudnn_benchmark, channels_last=channels_last,
                                         compile=compile_mode, cuda_graph=cuda_graph))
    click.echo(json.dumps(result) if as_json else bench_lib.format_result(result))
