"""Benchmarks: the real training step of each model, and folder translation, on synthetic data.

``bench_training`` builds a model with the official default architecture for
the size asked (U-Net 256 / 70×70 PatchGAN for pix2pix, ResNet-9 generators
for CycleGAN at 256, ...) and times :meth:`Trainer.train_step`, the same code
that ``img2img train`` runs, on one fixed synthetic batch already on the
device, so the numbers measure the step and not the disk.  ``bench_translate``
times :meth:`Translator.translate_folder` over a folder of synthetic JPEGs
(decoding and PNG encoding included).  Both report seconds per step, images
per second, peak memory, and the achieved TFLOP/s (floating-point operations
counted by ``torch.utils.flop_counter`` for one step) as a fraction of the
device's peak, measured here with a large matrix product.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import os
import re
import resource
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from img2img import step_graph
from img2img.checkpoint import replace_file
from img2img.config import RunConfig, TrainConfig
from img2img.errors import UserError
from img2img.speed import bf16_autocast


def targets() -> tuple[str, ...]:
    """What ``img2img bench`` times: every registered model's training step, and folder translation."""
    from img2img.models import MODELS  # noqa: PLC0415

    return (*MODELS, "translate")


class SyntheticBatches:
    """The same batch every step (a batch source for :class:`~img2img.train.Trainer`)."""

    def __init__(self, batch: Any) -> None:
        self._batch = batch

    def iterate(self, start_step: int) -> Iterator[Any]:
        while True:
            yield self._batch


@dataclass(frozen=True)
class SpeedSettings:
    """The means of going faster that a benchmark can switch (see :mod:`img2img.speed`)."""

    amp: bool = True  # bf16 autocast (CUDA)
    cudnn_benchmark: bool = True  # CUDA
    channels_last: bool = False
    compile: str = "off"
    fused_adam: bool = True  # training only
    cuda_graph: str = "off"  # the whole step (translation: the forward pass) as one CUDA graph (img2img.step_graph)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def in_effect(self, device: torch.device, training: bool) -> dict[str, Any]:
        """The settings as they applied on ``device`` (bf16 and cuDNN are CUDA's; Adam is training's)."""
        settings = {**self.as_dict(), "amp": bf16_autocast(self.amp, device),
                    "cudnn_benchmark": self.cudnn_benchmark and device.type == "cuda"}
        if not training:
            del settings["fused_adam"]
        return settings


@dataclass(frozen=True)
class Rung:
    name: str
    speed: SpeedSettings
    cuda_only: bool = False
    training_only: bool = False


# each rung adds one mean to the rung above it; the CUDA-only ones are left out on the CPU
LADDER: tuple[Rung, ...] = (
    Rung("float32, eager, foreach Adam", SpeedSettings(amp=False, cudnn_benchmark=False, fused_adam=False)),
    Rung("+ fused Adam", SpeedSettings(amp=False, cudnn_benchmark=False), training_only=True),
    Rung("+ bf16 autocast", SpeedSettings(cudnn_benchmark=False), cuda_only=True),
    Rung("+ cuDNN benchmark", SpeedSettings(), cuda_only=True),
    Rung("+ channels_last", SpeedSettings(channels_last=True)),
    Rung("+ torch.compile", SpeedSettings(channels_last=True, compile="default")),
    Rung("+ CUDA graphs", SpeedSettings(channels_last=True, compile="reduce-overhead"), cuda_only=True),
    Rung("one CUDA graph per step (--cuda-graph)",
         SpeedSettings(channels_last=True, compile="default", cuda_graph="on"), cuda_only=True),
)


def ladder(run: Callable[[SpeedSettings], dict[str, Any]], device: torch.device,
           training: bool = True, compiles: bool = True, graphs: bool = True,
           progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run one benchmark once per rung of :data:`LADDER` (each adding one mean), and say what each rung changed.
    ``compiles``: False leaves out the compiled rungs (a model that torch.compile cannot run), ``graphs`` the
    whole-step CUDA graph (a model whose step cannot be captured); ``progress`` is given each rung's result as
    it comes (a ladder cut short still tells what it measured)."""
    results = []
    for rung in LADDER:
        if ((rung.cuda_only and device.type != "cuda") or (rung.training_only and not training)
                or (rung.speed.compile != "off" and not compiles) or (rung.speed.cuda_graph != "off" and not graphs)):
            continue
        torch.compiler.reset()  # a rung compiles afresh, in its own mode
        result = run(rung.speed)
        result["rung"] = rung.name if training else rung.name.replace(", foreach Adam", "")
        result["speedup_over_previous"] = (results[-1]["seconds_per_step"] / result["seconds_per_step"]
                                           if results else 1.0)
        result["speedup_over_first"] = (results[0]["seconds_per_step"] / result["seconds_per_step"]
                                        if results else 1.0)
        results.append(result)
        if progress is not None:
            progress(result)
    torch.compiler.reset()
    return results


def synthetic_run(model: str, size: int, batch_size: int, device: str, speed: SpeedSettings) -> tuple[RunConfig, Any]:
    """A resolved run of ``model`` with the official default networks for ``size``, and a synthetic batch (both
    from the model's :meth:`~img2img.models.base.GANModel.synthetic`)."""
    from img2img.models import MODELS  # noqa: PLC0415

    if model not in MODELS:
        raise UserError(f"bench: unknown target {model!r}; choose one of {', '.join(targets())}")
    model_class = MODELS[model]
    model_class.check_size(size)
    train = TrainConfig(steps=10**9, batch_size=batch_size, device=device, num_workers=0, save_every_steps=10**9,
                        sample_every_steps=10**9, log_every_steps=10**9, **speed.as_dict())
    from img2img.train import check_runnable  # noqa: PLC0415

    with torch.device("meta"):  # its shapes first: a batch too large for memory is refused before it is made
        options, shapes = model_class.synthetic(size, batch_size, torch.Generator().manual_seed(0))
    run = RunConfig(model, train, options)
    check_runnable(run, shapes, architecture_options=False)
    return run, model_class.synthetic(size, batch_size, torch.Generator().manual_seed(0))[1]


def refusal(model: str, size: int, kind: str) -> str | None:
    """Why ``model``'s training step, as the benchmark sets it up, cannot be compiled (``kind`` "compile":
    :meth:`~img2img.models.base.GANModel.compile_refusal`) or be one CUDA graph ("graph", --cuda-graph), or None."""
    from img2img.models import MODELS  # noqa: PLC0415

    options, _ = MODELS[model].synthetic(size, 1, torch.Generator().manual_seed(0))
    return getattr(MODELS[model], f"{kind}_refusal")(options)


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _image_side(batch: Any) -> int:
    """The side of the images in a synthetic batch (a tensor, or a dict or tuple of them, the images first)."""
    tensor = batch if isinstance(batch, torch.Tensor) else \
        next(iter(batch.values() if isinstance(batch, dict) else batch))
    return int(tensor.shape[-1])


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    """Start measuring the peak memory: before the warm-up, where compiling and capturing happen (a CUDA graph
    takes its pool then, and its replays allocate nothing), with the allocator's cache given back first."""
    if device.type == "cuda":
        gc.collect()  # a ladder's earlier rungs, and what refers to itself among them
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory(device: torch.device) -> tuple[int, str]:
    """The peak memory since :func:`_reset_peak`: on CUDA, what the caching allocator held from the device
    (tensors, its cache, and CUDA graphs' pools, which no other allocation can use); on the CPU, the process's
    resident peak.  The tensors' own peak (``max_memory_allocated``) leaves the pools out: reset after the
    warm-up, it said 0.48 GiB for a CycleGAN step replayed as one graph, its weights, optimiser state and
    buffers alone."""
    if device.type == "cuda":
        return (torch.cuda.max_memory_reserved(device),
                "CUDA memory held by the allocator: tensors, cache and CUDA graph pools, warm-up included")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak resident memory of the process"


@functools.cache  # measured once per device and dtype, not once per benchmark (a ladder runs several)
def device_peak_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """Measured peak: TFLOP/s of a large square matrix product in ``dtype`` on ``device``."""
    side = 8192 if device.type == "cuda" else 1024
    a = torch.randn(side, side, device=device, dtype=dtype)
    b = torch.randn(side, side, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _synchronize(device)
    repeats = 20 if device.type == "cuda" else 5
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _synchronize(device)
    return 2 * side ** 3 * repeats / (time.perf_counter() - start) / 1e12


def _device_in_use(device: torch.device) -> dict[str, int]:
    """On CUDA, the device's memory in use as ``nvidia-smi`` counts it (as figures for other code, such as the
    official code's 4.8 GB, are usually given): the allocator's, and what it never sees, the CUDA context and the
    libraries' own.  The allocator gives nothing back during a benchmark, so at its end this is its peak too.  It
    counts every process on the GPU (``cudaMemGetInfo``), so it is this benchmark's only where it runs alone."""
    if device.type != "cuda":
        return {}
    free, total = torch.cuda.mem_get_info(device)
    return {"device_in_use_bytes": int(total - free)}


def _summary(device: torch.device, seconds: float, steps: int, images: int, flops: float,
             settings: dict[str, Any]) -> dict[str, Any]:
    peak_bytes, memory_kind = _peak_memory(device)
    tensors = {"peak_tensor_bytes": torch.cuda.max_memory_allocated(device)} if device.type == "cuda" else {}
    in_use = _device_in_use(device)  # before the peak TFLOP/s's matrices
    compute_dtype = torch.bfloat16 if settings["amp"] else torch.float32
    peak = device_peak_tflops(device, compute_dtype)
    achieved = flops * steps / seconds / 1e12
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return {"seconds_per_step": seconds / steps, "images_per_second": images / seconds,
            "peak_memory_bytes": int(peak_bytes), "peak_memory_kind": memory_kind, **tensors, **in_use,
            "flops_per_step": flops, "achieved_tflops": achieved, "device_peak_tflops": peak,
            "fraction_of_peak": achieved / peak if peak else 0.0, "peak_dtype": str(compute_dtype).split(".")[-1],
            "device": f"{device} ({name})", "torch_version": torch.__version__, "settings": settings}


class _Global:
    """In place of FlopCounterMode's module tracker, which counts per module through backward hooks that
    ``torch.autograd.grad`` (a gradient penalty) cannot run under; only the total is wanted here."""

    parents = {"Global"}

    def __enter__(self) -> _Global:
        return self

    def __exit__(self, *args: Any) -> None:
        return None


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode that counts the total only (and so also a step with a gradient penalty)."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _Global()
    return counter


def _step_flops(trainer: Any, batch: Any) -> float:
    """Floating-point operations of one training step (counted, not timed; the step does happen)."""
    trainer.model.train()
    with flop_counter() as counter:
        trainer.train_step(trainer.model.move_batch(batch, trainer.device))
    return float(counter.get_total_flops())


def bench_training(model: str, size: int = 256, batch_size: int = 1, steps: int = 20, warmup: int = 3,
                   device: str = "auto", speed: SpeedSettings = SpeedSettings(),
                   profile: str | Path | None = None) -> dict[str, Any]:
    """Time ``steps`` training steps of ``model`` after ``warmup`` untimed ones (at least 3 when compiling:
    the first steps compile, and CUDA graphs are recorded on the second and replayed from the third).
    ``profile``: also profile a few more steps and write where their time goes to this file."""
    from img2img.loading import resolve_device  # noqa: PLC0415
    from img2img.train import Trainer  # noqa: PLC0415

    torch_device = resolve_device(device)
    run, batch = synthetic_run(model, size, batch_size, str(torch_device), speed)
    with tempfile.TemporaryDirectory(prefix="img2img-bench-") as folder:
        trainer = Trainer(run, Path(folder) / "run", torch_device, data=SyntheticBatches(batch))
        if trainer.compile_mode == "off" and not trainer.step_graphs:
            flops = _step_flops(trainer, batch)
        else:  # FLOPs are counted on an eager twin: the counter's hooks stay out of compiled code and graphs
            # compiling takes the first steps; a step graph's key runs eagerly first, then is captured
            warmup = max(warmup, 3, step_graph.WARMUP_STEPS + 2 if trainer.step_graphs else 0)
            eager = Trainer(run.replace_train(compile="off", cuda_graph="off"), Path(folder) / "eager", torch_device,
                            data=SyntheticBatches(batch))
            flops = _step_flops(eager, batch)
            del eager
        batch = trainer.model.move_batch(batch, torch_device)
        trainer.model.train()
        _reset_peak(torch_device)
        for _ in range(warmup):
            trainer.train_step(batch)
        # what --compile auto and --cuda-graph auto stood for (off if torch's compiler, or a capture, failed with
        # these networks in the warm-up)
        speed = dataclasses.replace(speed, compile=trainer.compile_mode, cuda_graph=_on(trainer.step_graphs))
        _synchronize(torch_device)
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(batch)
        _synchronize(torch_device)
        seconds = time.perf_counter() - start
        syncs = _host_syncs(lambda: trainer.train_step(batch), torch_device)
        settings = {"target": model, "size": _image_side(batch), "batch_size": batch_size,
                    "steps": steps, "warmup": warmup, **speed.in_effect(torch_device, training=True)}
        if profile is not None:
            write_profile(lambda: trainer.train_step(batch), torch_device, Path(profile),
                          f"{model} training step, {seconds / steps * 1000:.2f} ms per step timed; {settings}")
    result = _summary(torch_device, seconds, steps, steps * batch_size, flops, settings)
    if syncs is not None:
        result["host_syncs_per_step"], result["host_sync_sites"] = syncs
    return result


def write_profile(step: Callable[[], Any], device: torch.device, path: Path, title: str, steps: int = 10) -> None:
    """Profile ``steps`` calls of ``step`` (torch.profiler) and write where the time goes: the device's busy
    time against the wall time (launch-bound code leaves the device idle), then the operators by their own
    device time (CPU time on the CPU)."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    on_cuda = device.type == "cuda"
    if not on_cuda:  # a CUDA build of torch on a machine with no GPU: the profiler's library looks for one all the
        # same and prints "ERROR: ... gpuGetDeviceCount failed with code 35" (its level is read at its first use)
        os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # above its highest level, USDT (5): none of its lines
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_cuda else [])]
    _synchronize(device)
    with profile(activities=activities) as profiler:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _synchronize(device)
        wall = (time.perf_counter() - start) / steps
    averages = profiler.key_averages()
    lines = [title, f"profiled steps: {steps}; wall time per step (profiler on): {wall * 1000:.2f} ms"]
    if on_cuda:
        from torch.autograd import DeviceType  # noqa: PLC0415

        # the kernels and copies themselves (operators also carry their kernels' time, which would count twice)
        busy = sum(getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)
                   for event in averages if event.device_type == DeviceType.CUDA) / steps / 1000
        lines.append(f"device busy per step (sum of kernel times): {busy:.2f} ms = {100 * busy / (wall * 1000):.0f}% "
                     "of the wall time")
    for key in (("self_device_time_total", "self_cuda_time_total") if on_cuda else ("self_cpu_time_total",)):
        try:
            table = averages.table(sort_by=key, row_limit=45, max_name_column_width=70)
            break
        except (AttributeError, KeyError, ValueError):
            continue
    replace_file(path, ("\n".join(lines) + "\n\n" + table + "\n\n" + python_profile(step, device, steps) + "\n")
                 .encode())


def python_profile(step: Callable[[], Any], device: torch.device, steps: int = 10, rows: int = 25) -> str:
    """Where the host's time goes in ``steps`` calls of ``step``, by Python function (cProfile): the functions
    with the most time of their own, then with the most in all (its hooks slow Python code down, so that the
    shares count more than the times).  A step that leaves the GPU idle is spending its time here."""
    import cProfile  # noqa: PLC0415
    import io  # noqa: PLC0415
    import pstats  # noqa: PLC0415

    profiler = cProfile.Profile()
    _synchronize(device)
    profiler.enable()
    for _ in range(steps):
        step()
    _synchronize(device)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    text.write(f"host time by Python function over {steps} steps (cProfile), by own time:\n")
    stats.sort_stats("tottime").print_stats(rows)
    text.write("by time in all (with what it calls):\n")
    stats.sort_stats("cumulative").print_stats(rows)
    return text.getvalue()


def _host_syncs(step: Callable[[], Any], device: torch.device) -> tuple[int, list[str]] | None:
    """How many times one more step makes the host wait for the GPU, and the lines of Python that made it wait
    (CUDA's sync debug mode; None elsewhere)."""
    if device.type != "cuda":
        return None
    caught = warnings_in_sync_debug_mode(step)
    _synchronize(device)
    return sync_warnings(caught)


def warnings_in_sync_debug_mode(step: Callable[[], Any]) -> list[warnings.WarningMessage]:
    """Every warning that ``step()`` gives under CUDA's sync debug mode "warn", which reports each synchronising
    call as one (see :func:`sync_warnings`)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return caught


# what CUDA's sync debug mode says at each synchronising call; its own notice on being switched on
# ("Synchronization debug mode is a prototype feature …", once per process) is not one
SYNC_WARNING = "called a synchronizing CUDA operation"


def sync_warnings(caught: list[warnings.WarningMessage]) -> tuple[int, list[str]]:
    """How many of ``caught`` report a synchronising call, and the lines of Python they came from."""
    syncs = [w for w in caught if SYNC_WARNING in str(w.message)]
    return len(syncs), sorted({f"{w.filename}:{w.lineno}" for w in syncs})


def bench_translate(size: int = 256, batch_size: int = 8, images: int = 64, device: str = "auto",
                    speed: SpeedSettings = SpeedSettings(), workers: int | None = None,
                    io_only: bool = False, profile: str | Path | None = None) -> dict[str, Any]:
    """Time folder translation of ``images`` synthetic ``size``² JPEGs to PNGs with a CycleGAN ResNet generator
    (``io_only``: a 1×1 convolution instead, which leaves decoding, transfers and encoding to be measured).
    ``profile``: translate the folder once more, sampling where this process's threads are
    (:class:`ThreadSampler`), and write that to this file."""
    from img2img.models.cyclegan import CycleGAN, resnet_blocks  # noqa: PLC0415
    from img2img.nn import init_weights  # noqa: PLC0415
    from img2img.nn.resnet import ResnetGenerator  # noqa: PLC0415
    from img2img.loading import resolve_device  # noqa: PLC0415
    from img2img.translate import GeneratorInfo, Translator, default_workers, generator_info  # noqa: PLC0415

    torch_device = resolve_device(device)
    CycleGAN.check_size(size)
    workers = default_workers() if workers is None else workers
    blocks = resnet_blocks("auto", size)
    torch.manual_seed(0)
    if io_only:
        net: nn.Module = nn.Conv2d(3, 3, 1)
        info = GeneratorInfo(3, 3, 1)
    else:
        net = init_weights(ResnetGenerator(3, 3, 64, blocks, "instance"))
        info = generator_info(net, 3, 3)
    with torch.no_grad(), flop_counter() as counter:  # counted eagerly, before any compiling
        net.eval()(torch.zeros(1, 3, size, size))
    flops = float(counter.get_total_flops())
    translator = Translator(net, info, torch_device, amp=speed.amp, batch_size=batch_size,
                            channels_last=speed.channels_last, compile=speed.compile,
                            cudnn_benchmark=speed.cudnn_benchmark, cuda_graph=speed.cuda_graph)
    # what --compile auto and --cuda-graph auto stood for
    speed = dataclasses.replace(speed, compile=translator.compile, cuda_graph=_on(translator.cuda_graph))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="img2img-bench-") as folder:
        source = Path(folder) / "in"
        source.mkdir()
        try:
            for index in range(images):
                low = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
                Image.fromarray(low).resize((size, size), Image.BICUBIC).save(source / f"{index:05d}.jpg",
                                                                              quality=90)
        except OSError as error:  # a full disk: Pillow's error names no file
            raise UserError(f"--steps {images}: {Path(folder).parent} (TMPDIR), where the synthetic JPEGs are "
                            f"written, refused JPEG {index + 1:,} of {images:,}: {error.strerror or error}; use "
                            "fewer --steps, or set TMPDIR to a folder with more room") from None
        warm = Path(folder) / "warm"
        warm.mkdir()
        # compiling takes the first batches, and a batch shape's graph is captured at its third
        for index in range(min(images, batch_size * (3 if speed.compile != "off" or translator.cuda_graph else 1))):
            (warm / f"{index}.jpg").write_bytes((source / f"{index:05d}.jpg").read_bytes())
        _reset_peak(torch_device)
        translator.translate_folder(warm, Path(folder) / "warm-out", progress=False, workers=workers)
        summary = translator.translate_folder(source, Path(folder) / "out", progress=False, workers=workers)
        if profile is not None and summary.ok:
            with ThreadSampler() as sampler:
                again = translator.translate_folder(source, Path(folder) / "profiled", progress=False,
                                                    workers=workers)
            title = (f"folder translation of {images} {size}² JPEGs to PNGs, batch {batch_size}, {workers} decoding "
                     f"processes: {images / summary.seconds:.1f} images/s timed, {images / again.seconds:.1f} "
                     "while sampled")
            replace_file(Path(profile), (sampler.report(title) + "\n").encode())
    if not summary.ok or len(summary.translated) != images:
        raise UserError(f"bench translate: only {len(summary.translated)} of {images} images were translated")
    settings = {"target": "translate", "size": size, "batch_size": batch_size, "images": images,
                "generator": "1x1 convolution (--io-only)" if io_only else f"resnet_{blocks}blocks",
                "input": "JPEG", "output": "PNG", "workers": workers, **speed.in_effect(torch_device, training=False)}
    result = _summary(torch_device, summary.seconds, images, images, flops, settings)
    result["seconds_per_step"] = summary.seconds / images  # per image
    return result


class ThreadSampler:
    """Where each thread of this process is, sampled every ``interval`` seconds (``sys._current_frames``): for
    folder translation, whether the main thread waits for decoded batches or for the writers, and what the
    writers do.  A thread in C code that frees the GIL (OpenCV encoding, a kernel launch) is seen at the
    Python line that called it.  The decoding processes are not seen, only the main thread's wait for them."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.ticks = 0
        self.samples: Counter[str] = Counter()  # by role
        self.places: Counter[tuple[str, str]] = Counter()  # by role and place
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="img2img-sampler", daemon=True)

    def __enter__(self) -> ThreadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(self.interval):
            names = {thread.ident: thread.name for thread in threading.enumerate()}
            self.ticks += 1
            for ident, frame in sys._current_frames().items():
                if ident != me:
                    role = thread_role(names.get(ident, "unnamed"))
                    self.samples[role] += 1
                    self.places[role, _place(frame)] += 1

    def report(self, title: str, rows: int = 12) -> str:
        lines = [title, f"{self.ticks} samples of each thread, {self.interval * 1000:g} ms apart", ""]
        for role, count in self.samples.most_common():
            lines.append(f"{role}: {count / max(1, self.ticks):.1f} threads on average; where they were:")
            places = [(place, n) for (r, place), n in self.places.most_common() if r == role][:rows]
            lines += [f"  {100 * n / count:5.1f}%  {place}" for place, n in places]
            lines.append("")
        return "\n".join(lines)


def thread_role(name: str) -> str:
    """A thread's role from its name: the main thread, the writers (ThreadPoolExecutor-N_M), torch's pin-memory
    thread, or the name without its numbers."""
    if name == "MainThread":
        return "main"
    if name.startswith("ThreadPoolExecutor"):
        return "writers (thread pool)"
    if "pin_memory" in name:
        return "pin memory"
    return re.sub(r"[-_]?\d+", "", name) or name


def _place(frame: Any) -> str:
    """The innermost line of a stack, and the innermost line of img2img's own that led there (if another)."""
    def line(f: Any) -> str:
        return f"{f.f_code.co_name} ({Path(f.f_code.co_filename).name}:{f.f_lineno})"

    inner, own = frame, frame
    while own is not None and f"{os.sep}img2img{os.sep}" not in own.f_code.co_filename:
        own = own.f_back
    return line(inner) if own is None or own is inner else f"{line(inner)} in {line(own)}"


def format_ladder(results: list[dict[str, Any]]) -> str:
    """The rungs of a ladder as a Markdown table (as in BENCHMARKS.md)."""
    first = results[0]
    unit = "image" if first["settings"]["target"] == "translate" else "step"
    # the CPU's figure is the process's resident peak so far, which only grows from rung to rung
    memory = "peak memory" if first["peak_memory_kind"].startswith("CUDA") else "peak RSS so far"
    lines = [f"{first['settings']['target']} on {first['device']}, torch {first['torch_version']}, "
             + ", ".join(f"{k} {v}" for k, v in first["settings"].items()
                         if k in ("size", "batch_size", "steps", "images", "generator")),
             "",
             f"| rung | ms per {unit} | images/s | × previous | × first | {memory} | TFLOP/s | of peak |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r['rung']} | {r['seconds_per_step'] * 1000:.2f} | {r['images_per_second']:.1f} | "
                     f"{r['speedup_over_previous']:.2f} | {r['speedup_over_first']:.2f} | "
                     f"{r['peak_memory_bytes'] / 2**30:.2f} GiB | {r['achieved_tflops']:.3f} | "
                     f"{100 * r['fraction_of_peak']:.1f}% |")
    return "\n".join(lines)


def format_result(result: dict[str, Any]) -> str:
    settings = result["settings"]
    unit = "image" if settings["target"] == "translate" else "step"
    return "\n".join([
        f"{settings['target']} on {result['device']}, torch {result['torch_version']}: "
        + ", ".join(f"{k} {v}" for k, v in settings.items() if k != "target"),
        f"  {result['seconds_per_step'] * 1000:.2f} ms per {unit}, {1 / result['seconds_per_step']:.2f} {unit}s/s, "
        f"{result['images_per_second']:.1f} images/s",
        f"  peak memory {result['peak_memory_bytes'] / 2**30:.2f} GiB ({result['peak_memory_kind']}"
        + (f"; tensors {result['peak_tensor_bytes'] / 2**30:.2f} GiB" if "peak_tensor_bytes" in result else "") + ")"
        + (f"; {result['device_in_use_bytes'] / 2**30:.2f} GiB of the device in use, as nvidia-smi counts it"
           if "device_in_use_bytes" in result else "")
        + (f"; {result['host_syncs_per_step']} host synchronisations per step" if "host_syncs_per_step" in result
           else "")
        + (f" (at {', '.join(result['host_sync_sites'])})" if result.get("host_sync_sites") else ""),
        f"  {result['flops_per_step'] / 1e9:.1f} GFLOP per {unit}; {result['achieved_tflops']:.3f} TFLOP/s achieved, "
        f"{100 * result['fraction_of_peak']:.1f}% of the measured {result['peak_dtype']} peak "
        f"({result['device_peak_tflops']:.2f} TFLOP/s)",
    ])
