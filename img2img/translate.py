"""Translating images with a trained generator: one image, a tensor, or a whole folder.

:func:`load` rebuilds a generator from an img2img checkpoint (or run folder)
or from an official pytorch-CycleGAN-and-pix2pix weights file, and returns a
:class:`Translator`.  Any image size works: sides that are not a multiple of
what the network needs are padded by reflection and the output is cropped
back, so every output has its input's size.  Images too large to translate
whole go through in overlapping tiles blended with a smooth window
(:func:`tile_windows`).  Channels follow the model (a one-channel model reads
and writes one-channel images); a 16-bit input gives a 16-bit output when
the model was trained on 16-bit images.

Folder translation (:meth:`Translator.translate_folder`) never touches its
inputs: it refuses an output folder inside the input folder, never replaces
an existing file unless asked, writes each file atomically, and reports an
unreadable input in one line and goes on.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import time
import types
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm import tqdm

from img2img import checkpoint, official, speed, step_graph
from img2img.data.guard import resilient, workers_that_start
from img2img.data.images import (CHANNEL_NAMES, can_write, convert_channels, encode_image, holds, image_extensions,
                                 is_image_name, quantize, read_image_bits, read_image_levels, same_format,
                                 special_mode, to_tensor, to_unit, visible_files)
from img2img.data.transfer import BoundedBatches, Collate, received
from img2img.errors import NOT_A_FILE, UserError, exhausted, out_of_memory
from img2img.interrupt import said, terminate_as_interrupt
from img2img.resources import available_cpus, available_memory, host_threads, note_workers
from img2img.step_graph import CaptureFault, StepGraphs, check_capture, ran_out_while_capturing

log = logging.getLogger(__name__)

FORMATS = ("png", "jpg", "same")
DEFAULT_TILE = 512
EXIT_SKIPPED = 3  # the CLI's exit code when some inputs could not be read


@dataclass(frozen=True)
class GeneratorInfo:
    """What translation needs to know of one generator besides its weights."""

    in_channels: int
    out_channels: int
    size_multiple: int  # input sides must be multiples of this
    out_bits: int = 8  # bits per channel of the images the model learnt to produce
    description: str = ""
    min_size: int = 1  # smallest input side the network takes
    target: str = "a2b"  # what it translates to (a direction, or a domain)


def generator_info(net: nn.Module, in_channels: int, out_channels: int, out_bits: int = 8,
                   description: str = "", target: str = "a2b") -> GeneratorInfo:
    multiple = size_multiple(net)
    return GeneratorInfo(in_channels, out_channels, multiple, out_bits, description,
                         max(multiple, getattr(net, "min_size", 1)), target)


def size_multiple(net: nn.Module) -> int:
    """The multiple of which a generator's input sides must be (its total downsampling)."""
    multiple = getattr(net, "size_multiple", None)
    if multiple is None:
        raise UserError(f"{type(net).__name__} does not say which input sizes it takes")
    return int(multiple)


# -- loading ----------------------------------------------------------------------------------------------
def load(path: str | Path, target: str | None = None, device: str | torch.device = "auto", arch: str | None = None,
         norm: str | None = None, base_channels: int | None = None, use_ema: bool = True, amp: bool | None = None,
         stochastic: bool = False, batch_size: int = 8, tile: int | None = None, channels_last: bool = False,
         compile: str = "off", cudnn_benchmark: bool = True, direction: str | None = None,  # noqa: A002
         cuda_graph: str | bool = "auto") -> Translator:
    """A :class:`Translator` for a checkpoint file, a run folder, or an official generator weights file.

    ``target`` is what the translation takes, as the model says (see
    :meth:`~img2img.models.base.GANModel.translation`): ``a2b``/``b2a`` for
    two-way models (``direction`` is the same argument); by default the
    model's first.  ``arch``/``norm``/``base_channels`` are checked against an
    official file's weights (which say what they are; img2img checkpoints
    describe themselves and take none of them).  ``amp``: bf16 autocast, on
    CUDA by default.  ``channels_last``, ``compile``, ``cudnn_benchmark``: see
    :mod:`img2img.speed`; ``cuda_graph`` (``on``, ``off`` or ``auto``: on CUDA, and off again should a capture
    fail): each batch shape's forward pass replayed as a CUDA graph (:mod:`img2img.step_graph`).
    """
    from img2img.loading import resolve_device  # noqa: PLC0415

    device = resolve_device(str(device))
    net, info = load_generator(path, target or direction, arch, norm, base_channels, use_ema)
    translator = Translator(net, info, device, amp=amp, stochastic=stochastic, batch_size=batch_size, tile=tile,
                            channels_last=channels_last, compile=compile, cudnn_benchmark=cudnn_benchmark,
                            cuda_graph=cuda_graph)
    # translate(image, to=OTHER): the same checkpoint and settings, another target
    translator.retarget = lambda other: load(path, other, device, arch, norm, base_channels, use_ema, amp, stochastic,
                                             batch_size, tile, channels_last, compile, cudnn_benchmark,
                                             cuda_graph=cuda_graph)
    return translator


def checkpoint_model(path: str | Path, use_ema: bool = True, option: str = "CHECKPOINT") -> Any:
    """The model in an img2img checkpoint (generators only: ``partial``), or None for an official weights file."""
    file = checkpoint.resolve(path, option)
    payload = checkpoint.load_file(file, option)
    if official.is_state_dict(payload):
        return None
    from img2img.loading import load_model  # noqa: PLC0415 - the loader imports the models, which import this

    return load_model(checkpoint.validate(payload, file, option), option=option, use_ema=use_ema, partial=True)[0]


def translation_targets(path: str | Path, option: str = "CHECKPOINT") -> tuple[str, ...]:
    """What the model in a checkpoint (or official weights file) translates to: its directions or domains."""
    model = checkpoint_model(path, option=option)
    return ("a2b",) if model is None else model.translation_targets()


def load_generator(path: str | Path, target: str | None = None, arch: str | None = None, norm: str | None = None,
                   base_channels: int | None = None, use_ema: bool = True,
                   option: str = "CHECKPOINT") -> tuple[nn.Module, GeneratorInfo]:
    """The module that translates to ``target`` in an img2img checkpoint or an official weights file, on the CPU."""
    file = checkpoint.resolve(path, option)
    payload = checkpoint.load_file(file, option)
    if official.is_state_dict(payload):
        if target not in (None, "a2b"):
            raise UserError(f"--direction: {file} holds one official generator, which translates as it was "
                            f"trained (a2b), not {target}")
        net, found = official.generator_from_state(payload, str(file), arch, norm, base_channels, option)
        return net, generator_info(net, found.in_channels, found.out_channels, 8, found.describe())
    if arch is not None or norm is not None or base_channels is not None:
        raise UserError(f"--arch/--norm/--ngf describe official weights files; {file} is an img2img checkpoint, "
                        "which describes itself")
    return checkpoint_generator(checkpoint.validate(payload, file, option), target, use_ema, option)


def checkpoint_generator(payload: dict[str, Any], target: str | None = None, use_ema: bool = True,
                         option: str = "CHECKPOINT") -> tuple[nn.Module, GeneratorInfo]:
    """What translates to ``target`` in a (validated) img2img checkpoint, with its averaged weights when the run
    kept them."""
    from img2img.loading import load_model  # noqa: PLC0415 - the loader imports the models, which import this

    model, run, payload = load_model(payload, option=option, use_ema=use_ema, partial=True)
    translation = model.translation(target)
    missing = [name for name in translation.networks if name not in payload["networks"]]
    if missing:
        raise UserError(f"{model.translation_option}: {payload['path']} holds no {target} generator "
                        f"({', '.join(missing)})")
    target = target or model.translation_targets()[0]
    info = generator_info(translation.module, translation.in_channels, translation.out_channels, translation.out_bits,
                          f"{run.model} {target} at step {payload['step']} from {payload['path']}", target)
    return translation.module, info


# -- tiles ------------------------------------------------------------------------------------------------
def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of side ``tile`` covering ``length``, neighbours overlapping by ≥ ``overlap``."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return sorted({round(i * (length - tile) / (count - 1)) for i in range(count)})


def tile_window(tile: int, overlap: int, rise_start: bool, rise_end: bool, device: torch.device) -> Tensor:
    """The 1-D blending weight of a tile along one axis.

    Where a neighbouring tile overlaps (``rise_start``/``rise_end``), the
    weight is 0 for the outer quarter of the overlap, where the tile lacks
    context, then rises linearly to 1; neighbours' ramps cross-fade, so no
    seam shows.  At the image's border the weight stays 1.
    """
    position = torch.arange(tile, device=device, dtype=torch.float32)
    margin = overlap // 4
    ramp = ((position - margin + 1) / (overlap - 2 * margin + 1)).clamp(0.0, 1.0)
    weight = torch.ones(tile, device=device)
    if rise_start:
        weight = torch.minimum(weight, ramp)
    if rise_end:
        weight = torch.minimum(weight, ramp.flip(0))
    return weight


def reflect_pad(images: Tensor, multiple: int, minimum: tuple[int, int] = (0, 0)) -> tuple[Tensor, tuple[int, int]]:
    """Pad ``(N, C, H, W)`` by reflection (about its centre) to sides that are multiples of ``multiple`` and at
    least ``minimum``; return it and the offset ``(top, left)`` of the original inside it."""
    height, width = images.shape[-2:]
    target_h = max(math.ceil(height / multiple) * multiple, minimum[0])
    target_w = max(math.ceil(width / multiple) * multiple, minimum[1])
    top, left = (target_h - height) // 2, (target_w - width) // 2
    bottom, right = target_h - height - top, target_w - width - left
    padded = images
    # reflection cannot reach further than the side minus one; pad in rounds for tiny images
    while top or bottom or left or right:
        h, w = padded.shape[-2:]
        step = [min(left, w - 1), min(right, w - 1), min(top, h - 1), min(bottom, h - 1)]
        if max(step) == 0:  # a one-pixel side: repeat it
            padded = F.pad(padded, (left, right, top, bottom), mode="replicate")
            break
        padded = F.pad(padded, step, mode="reflect")
        left, right, top, bottom = left - step[0], right - step[1], top - step[2], bottom - step[3]
    return padded, ((target_h - height) // 2, (target_w - width) // 2)


# -- the translator -----------------------------------------------------------------------------------------
@dataclass
class FolderSummary:
    """What :meth:`Translator.translate_folder` did."""

    translated: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # (input, reason)
    kept: list[Path] = field(default_factory=list)  # outputs that existed and were not replaced
    failed: list[tuple[Path, str]] = field(default_factory=list)  # outputs that could not be written
    ignored: int = 0  # files under the input that are not images
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.unreadable and not self.failed

    def line(self) -> str:
        rate = len(self.translated) / self.seconds if self.seconds > 0 else 0.0
        parts = [f"translated {_count(len(self.translated), 'image')} in {self.seconds:.1f} s ({rate:.1f} images/s)"]
        if self.unreadable:
            parts.append(f"skipped {len(self.unreadable)} unreadable")
        if self.failed:
            parts.append(f"failed to write {len(self.failed)}")
        if self.kept:
            parts.append(f"kept {_count(len(self.kept), 'existing output')} (--overwrite replaces them)")
        if self.ignored:
            parts.append(f"ignored {_count(self.ignored, 'file')} that "
                         f"{'is not an image' if self.ignored == 1 else 'are not images'}")
        return "; ".join(parts)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


class Translator:
    """A generator in evaluation mode with everything needed to translate images of any size.

    ``translate`` takes a tensor ``(C, H, W)`` or ``(N, C, H, W)`` in [-1, 1],
    a PIL image, a NumPy array ``(H, W[, C])`` (uint8, uint16 or floats in
    [0, 1]) or a file path, and returns the same kind (a NumPy array for a
    path).  ``translate_folder`` translates a folder tree into another.

    The translator takes ``net`` over: it moves it to ``device``, puts it in
    evaluation mode and, with bf16 autocast, runs its layers at full resolution
    in float32 (:func:`full_resolution_in_float32`).
    """

    def __init__(self, net: nn.Module, info: GeneratorInfo, device: torch.device | str = "cpu",
                 amp: bool | None = None, stochastic: bool = False, batch_size: int = 8,
                 tile: int | None = None, tile_overlap: int | None = None,
                 max_pixels: int | None = None, channels_last: bool = False, compile: str = "off",  # noqa: A002
                 cudnn_benchmark: bool = True, cuda_graph: str | bool = "auto") -> None:
        self.device = torch.device(device)
        self.info = info
        # cuDNN's autotuning costs a fraction of a second per new input shape: worth it for a shape that comes
        # back (a folder of same-sized photos), ruinous for a folder whose every image has its own size (seen on an
        # H200: 24 JPEGs of mixed sizes at 2 images/s), so a shape is autotuned when it is met the second time
        self.cudnn_benchmark = cudnn_benchmark and self.device.type == "cuda"
        self._shapes_seen: set[tuple[int, ...]] = set()
        self.channels_last = channels_last
        self.compile = speed.resolve_compile(compile, self.device, training=False)
        # --cuda-graph: the forward pass of each batch shape captured once (after its eager run and its autotuned
        # one) and replayed, which spares the host a launch per layer per batch
        if cuda_graph in (True, "on"):
            check_capture(self.device, self.compile, "translated batch")
        graphed = step_graph.resolve(cuda_graph, self.device, self.compile)
        self._graphs = StepGraphs(self.device, warmup=2, max_graphs=4, what="translated batch") if graphed else None
        self._graph_fallback = cuda_graph == "auto"  # a capture that fails leaves the forward pass uncaptured
        self.net = net.to(self.device, memory_format=speed.memory_format(channels_last)).eval()
        self.amp = speed.bf16_autocast(True if amp is None else amp, self.device)
        if self.amp:
            full_resolution_in_float32(self.net)
        self._run = speed.compile_module(self.net, self.compile, self.device)
        if stochastic:  # pix2pix's noise: dropout stays on, batch norm keeps its running statistics
            for module in self.net.modules():
                if isinstance(module, nn.Dropout):
                    module.train()
        if batch_size < 1:  # the command line's range says it; the Python API ended in torch's split error
            raise UserError(f"--batch-size: {batch_size} is not a batch size (at least 1)")
        self.batch_size = batch_size
        multiple = info.size_multiple
        self.min_size = max(info.min_size, multiple)
        if tile is not None and (tile < self.min_size or tile % multiple):
            raise UserError(f"--tile: {tile} must be a multiple of {multiple} and at least {self.min_size}, "
                            "as this generator needs")
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.max_pixels = max_pixels if max_pixels is not None else self._pixel_budget()
        self.retarget: Callable[[str], Translator] | None = None  # set by load(): a translator for another target
        self._others: dict[str, Translator] = {}

    @property
    def cuda_graph(self) -> bool:
        """Whether each batch shape's forward pass is captured and replayed (--cuda-graph)."""
        return self._graphs is not None

    # -- memory ----------------------------------------------------------------------------------------
    def _pixel_budget(self) -> int:
        """How many pixels one forward pass may hold: a quarter of the free memory over a rough cost per pixel
        (the widest full-resolution activation, a few times over)."""
        widths = [m.out_channels for m in self.net.modules() if isinstance(m, nn.Conv2d)]
        bytes_per_pixel = 4 * 8 * max(widths[:1] or [64])
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
        else:
            free = available_memory()
        return max(64 * 64, free // 4 // bytes_per_pixel)

    def _default_tile(self) -> int:
        multiple = self.info.size_multiple
        side = min(DEFAULT_TILE, int(math.sqrt(self.max_pixels)))
        return max(self.min_size, side // multiple * multiple)

    # -- tensors ---------------------------------------------------------------------------------------
    def _autotune(self, shape: tuple[int, ...]) -> bool:
        """Whether cuDNN should time its algorithms for a batch of ``shape``: when asked for, from its second time."""
        seen = shape in self._shapes_seen
        self._shapes_seen.add(shape)
        return self.cudnn_benchmark and seen

    @torch.no_grad()
    def _forward(self, images: Tensor) -> Tensor:
        with speed.cudnn_autotuning(self._autotune(tuple(images.shape))):
            speed.mark_step(self.compile, self.device)
            images = speed.to_layout(images, self.channels_last)
            # autocast keeps no casts of the weights across a captured forward pass: its cache would hold the capture's
            with (speed.compile_errors(self.compile, channels_last=self.channels_last),
                  torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp, cache_enabled=self._graphs is None)):
                if self._graphs is not None:  # a copy of the graph's output buffer
                    try:
                        return self._graphs.run(images, None, self._run).float()
                    except CaptureFault as fault:
                        if not self._graph_fallback:
                            raise
                        reason = fault.reason
                    except RuntimeError as error:  # torch.OutOfMemoryError is one
                        if not (self._graph_fallback and ran_out_while_capturing(error)):
                            raise
                        reason = "memory ran out while a batch's forward pass was captured as a CUDA graph"
                    log.warning("--cuda-graph auto: %s; translation goes on without it (as with --cuda-graph off)",
                                reason)
                    self._graphs = None
                    if self.device.type == "cuda":  # what the failed capture held goes back to the device
                        torch.cuda.empty_cache()
                output = self._run(images)
        if speed.uses_cuda_graphs(self.compile, self.device):  # the graph's output buffer is reused next call
            return output.float() if output.dtype != torch.float32 else output.clone()
        return output.float()

    @torch.no_grad()
    def translate_tensor(self, images: Tensor) -> Tensor:
        """``(N, C_in, H, W)`` in [-1, 1] on any device → ``(N, C_out, H, W)`` on the translator's device.

        Pads to the sizes the network takes and crops back; tiles when a tile
        size was given and the image is larger, or when the image would not
        fit in memory whole (and retries in smaller tiles when memory runs out).
        """
        if images.dim() != 4 or images.shape[1] != self.info.in_channels:
            raise UserError(f"expected images of shape (N, {self.info.in_channels}, H, W), got {tuple(images.shape)}")
        images = images.to(self.device, torch.float32)
        height, width = images.shape[-2:]
        tile = self.tile
        if tile is None and height * width * images.shape[0] > self.max_pixels:
            tile = self._default_tile()
        while True:
            try:
                if tile is not None and (height > tile or width > tile):
                    return self._tiled(images, tile)
                return self._whole(images)
            except (RuntimeError, MemoryError) as error:  # CUDA's allocator, or the CPU's (a cgroup, a ulimit)
                smaller = (tile or max(height, width)) // 2 // self.info.size_multiple * self.info.size_multiple
                if not out_of_memory(error) or smaller < self.min_size or smaller < 32:
                    raise
            # past the except clause, whose traceback held the failed attempt's tensors: now they are free
            log.info("out of memory: translating in %d-pixel tiles", smaller)
            self._release_memory()
            tile = smaller

    def _release_memory(self) -> None:
        """After running out of memory: forget the batch shapes' CUDA graphs, whose memory pools no other
        allocation can use (on an H200, a small ResNet's graph of 8 tiles of 512² held 390 MiB), and give the
        allocator's cache back to the device."""
        if self._graphs is not None:
            self._graphs.reset()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _whole(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        padded, (top, left) = reflect_pad(images, self.info.size_multiple, (self.min_size,) * 2)
        outputs = [self._forward(chunk) for chunk in padded.split(self.batch_size)]
        output = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        return output[..., top:top + height, left:left + width]

    def _tiled(self, images: Tensor, tile: int) -> Tensor:
        height, width = images.shape[-2:]
        multiple = self.info.size_multiple
        padded, (top, left) = reflect_pad(images, multiple, (self.min_size,) * 2)
        full_h, full_w = padded.shape[-2:]
        tile_h, tile_w = min(tile, full_h), min(tile, full_w)
        overlap = self.tile_overlap if self.tile_overlap is not None else tile // 4
        overlap_h, overlap_w = min(overlap, tile_h // 2), min(overlap, tile_w // 2)
        ys, xs = tile_starts(full_h, tile_h, overlap_h), tile_starts(full_w, tile_w, overlap_w)
        output = images.new_zeros(images.shape[0], self.info.out_channels, full_h, full_w)
        weight = images.new_zeros(1, 1, full_h, full_w)
        corners = [(y, x) for y in ys for x in xs]
        # a tile's blending weight depends only on which of its sides have a neighbour: nine kinds at most, where
        # one per tile held the image's area several times over in small tiles (a 4096² image in 256-pixel tiles
        # overlapping by half: 240 MiB), which memory that has run out has no room for
        kinds: dict[tuple[bool, bool, bool, bool], Tensor] = {}

        def window(y: int, x: int) -> Tensor:
            sides = (y > 0, y + tile_h < full_h, x > 0, x + tile_w < full_w)
            if sides not in kinds:
                kinds[sides] = (tile_window(tile_h, overlap_h, *sides[:2], self.device)[:, None]
                                * tile_window(tile_w, overlap_w, *sides[2:], self.device))
            return kinds[sides]

        for y, x in corners:
            weight[..., y:y + tile_h, x:x + tile_w] += window(y, x)
        for index in range(images.shape[0]):
            image = padded[index:index + 1]
            for start in range(0, len(corners), self.batch_size):
                batch_corners = corners[start:start + self.batch_size]
                crops = torch.cat([image[..., y:y + tile_h, x:x + tile_w] for y, x in batch_corners])
                results = self._forward(crops)
                for (y, x), result in zip(batch_corners, results):
                    output[index, :, y:y + tile_h, x:x + tile_w] += result * window(y, x)
        return (output / weight)[..., top:top + height, left:left + width]

    # -- images ----------------------------------------------------------------------------------------
    def translate(self, image: Any, to: str | None = None) -> Any:
        """Translate one image (or a batch of tensors); see the class docstring for what it takes.  ``to``:
        another target of the same model (a direction, or a multi-domain model's domain)."""
        if to is not None and to != self.info.target:
            if self.retarget is None:
                raise UserError(f"to={to!r}: this translator holds one generator ({self.info.target}); load it "
                                "with img2img.load(CHECKPOINT) to translate to other targets")
            if to not in self._others:
                self._others[to] = self.retarget(to)
            return self._others[to].translate(image)
        if isinstance(image, Tensor):
            if image.dim() not in (3, 4) or not image.numel():
                raise UserError(f"a tensor to translate is (C, H, W) or (N, C, H, W) with pixels; got "
                                f"{tuple(image.shape)}")
            if not image.is_floating_point():
                raise UserError(f"a tensor to translate holds floats in [-1, 1]; got {image.dtype} (for levels "
                                "0..255: levels / 127.5 - 1)")
            image = _check_span(image, -1.0, "a tensor to translate holds floats in [-1, 1]",
                                "for levels 0..255: levels / 127.5 - 1")
            batch = image if image.dim() == 4 else image.unsqueeze(0)
            result = self.translate_tensor(batch).to(image.device)
            return result if image.dim() == 4 else result[0]
        if isinstance(image, (str, Path)):
            array, bits = read_image_bits(image)
            return quantize(self.translate_array(array), self.output_bits(bits))
        if isinstance(image, Image.Image):
            if image.mode == "F" or image.mode.startswith("I"):  # 16-bit or float grey, which convert() clips to 255
                levels = np.asarray(image)
                deep = levels if image.mode == "F" else np.clip(levels, 0, 65535).astype(np.uint16)
                return _as_pil(self.translate(deep))  # floats: checked as an array's are
            alpha = "A" in image.getbands() or "transparency" in image.info
            array = np.asarray(image.convert("RGBA" if alpha else "RGB"), dtype=np.float32) / 255.0
            return _as_pil(quantize(self.translate_array(array), 8))
        if isinstance(image, np.ndarray):
            if image.dtype == np.uint8:
                array, bits = image.astype(np.float32) / 255.0, 8
            elif image.dtype == np.uint16:
                array, bits = image.astype(np.float32) / 65535.0, 16
            elif np.issubdtype(image.dtype, np.floating):
                array, bits = image.astype(np.float32), 0
            else:
                raise UserError(f"images must be uint8, uint16 or float arrays, got {image.dtype}")
            if array.ndim not in (2, 3) or array.ndim == 3 and array.shape[2] not in (1, 2, 3, 4) or not array.size:
                raise UserError(f"an array to translate is (H, W) or (H, W, C) with 1 to 4 channels and pixels; got "
                                f"shape {image.shape}")
            if not bits:
                array = _check_span(array, 0.0, "float images to translate (arrays, PIL images of mode F) hold "
                                    "values in [0, 1]", "for levels 0..255: levels / 255; for floats in [-1, 1]: "
                                    "(x + 1) / 2")
            if array.ndim == 3 and array.shape[2] == 2:  # grey and alpha, as a file of them is read: RGBA
                array = np.concatenate([np.repeat(array[:, :, :1], 3, axis=2), array[:, :, 1:]], axis=2)
            squeeze = array.ndim == 2
            out = self.translate_array(array[:, :, None] if squeeze else array)
            if bits:
                out = quantize(out, self.output_bits(bits))
            return out[:, :, 0] if squeeze and out.shape[2] == 1 else out
        raise UserError(f"cannot translate a value of type {type(image).__name__}: give a tensor, a PIL image, an array "
                        "or a path")

    def translate_array(self, array: np.ndarray) -> np.ndarray:
        """``(H, W, C)`` floats in [0, 1], any C in {1, 3, 4} → ``(H, W, C_out)`` floats in [0, 1]."""
        tensor = to_tensor(convert_channels(array, self.info.in_channels))[None]
        return _to_array(self.translate_tensor(tensor)[0])

    def output_bits(self, input_bits: int) -> int:
        """16 when the input has 16 bits and the model learnt 16-bit images; else 8."""
        return 16 if input_bits == 16 and self.info.out_bits == 16 else 8

    # -- folders ---------------------------------------------------------------------------------------
    def translate_folder(self, source: str | Path, destination: str | Path, format: str = "png",  # noqa: A002
                         overwrite: bool = False, resize: int | None = None, workers: int | None = None,
                         progress: bool = True,
                         on_skip: Callable[[Path, str], None] | None = None) -> FolderSummary:
        """Translate the image ``source`` or every image under the folder ``source`` into ``destination``,
        mirroring relative paths and names (extension from ``format``: png, jpg, or same as the input)."""
        folders: list[tuple[Path, str]] = []  # sub-folders that cannot be read: named and skipped, as files are
        jobs, ignored = plan_folder(source, destination, format, folders, self.info.out_channels)
        summary = FolderSummary(ignored=ignored)
        say = on_skip or (lambda path, reason: log.warning("skipped %s: %s", path, reason))
        for folder, reason in folders:
            summary.unreadable.append((folder, reason))
            say(folder, reason)

        def report(path: Path, reason: str) -> None:
            with tqdm.external_write_mode():  # a line of its own, above the progress bar
                say(path, reason)

        pending = []
        for job in jobs:
            if job.output.exists() and not overwrite:
                summary.kept.append(job.output)
            else:
                pending.append(job)
        if pending:
            checkpoint.check_writable(pending[0].output, "OUTPUT")  # before any image is decoded
        started = time.perf_counter()
        workers = default_workers() if workers is None else workers
        workers = workers_that_start(min(workers, len(pending)))
        note_workers(workers)

        def unreadable(index: int, reason: str) -> None:
            summary.unreadable.append((pending[index].input, reason))
            report(pending[index].input, reason)

        # each loader batch is decoded and stacked by shape in a worker, so it crosses processes as a few tensors;
        # a worker that dies on a file (a crashing decoder) costs that file only (guard.resilient).  What the
        # workers decode ahead stays bounded in bytes: batches of large photos hold fewer of them
        prefetch = 4 if workers else None
        budget = available_memory() // 8  # for the images decoded ahead, and as much for those waiting to be written
        decoded = BoundedBatches(self.batch_size, max(1, workers) * (prefetch or 1), budget)
        loader = resilient(lambda items: _ImageFiles(pending, items, self.info.in_channels, resize), len(pending),
                           lambda index: [pending[index].input], _delivered, unreadable, batches=decoded.over,
                           batch_size=self.batch_size, collate_fn=Collate(_stack_by_shape), num_workers=workers,
                           pin_memory=self.device.type == "cuda", prefetch_factor=prefetch)

        bar = tqdm(total=len(pending), unit="img", disable=not progress, dynamic_ncols=True, leave=False)
        writers = max(2, available_cpus())  # PNG encoding (~3 ms a 256² image) is the slowest stage; cv2 frees the GIL
        writes: deque[tuple[_Job, Future, int]] = deque()
        # translated images waiting for the writers stay bounded in bytes too: a folder of 24-megapixel photos
        # (72 MB each) held some hundreds of them, in page-locked memory on CUDA, on a machine with many cores
        waiting = 0

        def collect(limit: int) -> None:  # wait for the oldest writes until at most ``limit`` are in flight
            nonlocal waiting
            while len(writes) > limit or (writes and waiting > budget):
                job, future, size = writes.popleft()
                waiting -= size
                error = future.result()
                if error is None:
                    summary.translated.append(job.output)
                elif error == APPEARED:  # counted with the kept ones, not named one by one
                    summary.kept.append(job.output)
                else:
                    summary.failed.append((job.output, error))
                    report(job.output, error)

        def hand_over(batch: dict[str, Any], levels: list[Tensor], bits: list[int],
                      copied: torch.cuda.Event | None) -> None:  # a translated batch → the writers
            nonlocal waiting
            if copied is not None:
                copied.synchronize()  # its copy to the host has landed
            for index, result, b in zip(batch["indices"], levels, bits):
                job = pending[index]
                size = result.numel() * result.element_size()
                writes.append((job, writer.submit(_write, job.output, result, b, overwrite), size))
                waiting += size
            bar.update(len(batch["indices"]))
            collect(4 * writers + self.batch_size)  # images waiting in memory stay bounded, in number and bytes

        # one batch deep: a batch's forward pass is queued on the GPU, and its results copied back to (pinned)
        # host memory without waiting, before the batch before it is handed to the writers; so the GPU translates
        # while the host gathers the next batch and hands over the last one
        cuda = self.device.type == "cuda"
        # SIGTERM and SIGHUP (kill, a scheduler's time limit, a closed terminal) are Ctrl-C here: the writes under
        # way end, and what is done is said.  On a GPU the main thread's tensor work is queueing and copies: one
        # thread, where one per CPU would contend with the writers and decoders for the cores (on an H200 with 16
        # CPUs, 941 images/s against 915 over four pairs of runs, within their spread; on a 2-core host such
        # copies ran at half speed with two threads)
        # the loader is closed on the way out, however that is: its workers end now, not once the error that
        # stopped it is let go (the command line's, at its exit, where multiprocessing killed them)
        with contextlib.closing(loader), ThreadPoolExecutor(max_workers=writers) as writer, terminate_as_interrupt(), \
                host_threads(1) if cuda else contextlib.nullcontext():
            previous = None
            try:
                for batch in _batches_by_shape(loader, self.batch_size, unreadable, decoded):
                    bits = [self.output_bits(b) for b in batch["bits"]]
                    try:
                        results = self.translate_tensor(from_levels(batch["images"].to(self.device, non_blocking=True)))
                    except Exception:  # what was translated before is still written, then the run stops
                        if previous is not None:
                            with contextlib.suppress(Exception):
                                hand_over(*previous)
                        raise
                    if len(set(bits)) == 1:
                        levels = list(to_levels(results, bits[0]).to("cpu", non_blocking=cuda))
                    else:
                        levels = [to_levels(result, b).to("cpu", non_blocking=cuda) for result, b in zip(results, bits)]
                    copied = None
                    if cuda:
                        copied = torch.cuda.Event()
                        copied.record()
                    if previous is not None:
                        hand_over(*previous)
                    previous = batch, levels, bits, copied
                if previous is not None:
                    hand_over(*previous)
                collect(0)
            except KeyboardInterrupt as error:  # Ctrl-C, SIGTERM, SIGHUP: the writes under way end, then what
                bar.close()  # is done is said
                with contextlib.suppress(BaseException):
                    collect(0)
                log.warning("interrupted: %d of %d images translated into %s; the same command translates the "
                            "rest (what is written is kept)", len(summary.translated), len(pending), destination)
                raise said(error)
            except Exception as error:  # the error's line on a line of its own, not after the progress bar's
                bar.close()
                limit = exhausted(error, workers=True)  # open files, processes or threads: no file's fault
                if limit is not None:
                    with contextlib.suppress(BaseException):  # the writes under way end, and are counted
                        collect(0)
                    raise UserError(f"{limit} ({len(summary.translated)} of {len(pending)} images translated into "
                                    f"{destination}; the same command translates the rest)") from None
                raise
        bar.close()
        summary.seconds = time.perf_counter() - started
        return summary


def _check_span(values: Any, low: float, what: str, hint: str) -> Any:
    """``values`` (a tensor or an array), which should lie in [``low``, 1], clipped to it, where they stray by
    rounding alone (a thousandth); one line saying what they span where they stray further or are not finite (0..255
    levels given as floats, the other range of the two: translated, they would come out as noise or a flat
    image)."""
    if isinstance(values, Tensor):
        least, most = (float(v) for v in torch.aminmax(values.detach().float()))
    else:
        least, most = float(np.min(values)), float(np.max(values))
    if not (math.isfinite(least) and math.isfinite(most)):
        raise UserError(f"{what}; this one holds values that are not finite (NaN or infinite)")
    if least < low - 1e-3 or most > 1 + 1e-3:
        raise UserError(f"{what}; this one spans {least:.4g} to {most:.4g} ({hint})")
    if least < low or most > 1:
        return values.clamp(low, 1) if isinstance(values, Tensor) else np.clip(values, low, 1)
    return values


def _as_pil(array: np.ndarray) -> Image.Image:
    """A translated ``(H, W, C)`` array as a PIL image: 8-bit as it is, 16-bit and float grey too (modes I;16 and
    F), and deep colour, which Pillow does not hold, in 8 bits."""
    if array.ndim == 3 and array.dtype != np.uint8:
        array = quantize(array / 65535.0 if array.dtype == np.uint16 else array, 8)
    return Image.fromarray(array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array)


def _stack_by_shape(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate (in a loader worker) decoded items into one batch per shape and kind:
    ``{"batches": [{"indices", "images" (N, C, H, W), "bits"}, ...], "errors": [(index, reason), ...]}``."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    errors = []
    for item in items:
        if item["error"]:
            errors.append((item["index"], item["error"]))
        else:
            groups.setdefault((item["tensor"].dtype, *item["tensor"].shape), []).append(item)
    batches = [{"indices": [item["index"] for item in group], "images": torch.stack([item["tensor"] for item in group]),
                "bits": [item["bits"] for item in group]} for group in groups.values()]
    return {"batches": batches, "errors": errors}


def _merge(batches: list[dict[str, Any]]) -> dict[str, Any]:
    if len(batches) == 1:
        return batches[0]
    return {"indices": [i for batch in batches for i in batch["indices"]],
            "images": torch.cat([batch["images"] for batch in batches]),
            "bits": [b for batch in batches for b in batch["bits"]]}


def _delivered(loaded: dict[str, Any]) -> list[int]:
    return [i for batch in loaded["batches"] for i in batch["indices"]] + [i for i, _ in loaded["errors"]]


def _batches_by_shape(loader: Iterable[dict[str, Any]], batch_size: int, unreadable: Callable[[int, str], None],
                      decoded: BoundedBatches | None = None) -> Iterator[dict[str, Any]]:
    """Batches of ``batch_size`` same-shaped images (fewer at the end, or when many sizes are waiting, or when
    they are large), from the loader's per-shape pieces, however many each holds; sizes vary in a folder, and
    memory stays bounded: ``decoded`` learns the images' sizes, and its budget bounds the images waiting here
    too."""
    waiting: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    budget = decoded.budget if decoded is not None else None
    held = 0  # bytes waiting
    for loaded in map(received, loader):
        for index, reason in loaded["errors"]:
            unreadable(index, reason)
        for batch in loaded["batches"]:
            images = batch["images"]
            if decoded is not None:
                decoded.seen(images[0].numel() * images.element_size())
            key = (images.dtype, *images.shape[1:])
            group = waiting.setdefault(key, [])
            group.append(batch)
            held += _bytes([batch])
            if sum(len(b["indices"]) for b in group) >= batch_size:  # batch_size of them, whatever the pieces
                whole = _merge(waiting.pop(key))
                first, rest = _split(whole, batch_size)
                held -= _bytes([first])
                if rest is not None:
                    waiting[key] = [rest]
                yield first
            while waiting and (len(waiting) > 4 * batch_size or budget is not None and held > budget):
                oldest = waiting.pop(next(iter(waiting)))  # many different sizes, or large ones: do not hold them
                held -= _bytes(oldest)
                yield _merge(oldest)
    for group in waiting.values():
        yield _merge(group)


def _split(batch: dict[str, Any], size: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The first ``size`` images of a batch, and the rest (``None`` if none)."""
    if len(batch["indices"]) <= size:
        return batch, None
    rest = {key: value[size:] for key, value in batch.items()}
    rest["images"] = rest["images"].clone()  # not a view that keeps the whole batch in memory while it waits
    return {key: value[:size] for key, value in batch.items()}, rest


def _bytes(group: list[dict[str, Any]]) -> int:
    return sum(b["images"].numel() * b["images"].element_size() for b in group)


@dataclass(frozen=True)
class _Job:
    input: Path
    output: Path


def plan_folder(source: str | Path, destination: str | Path, format: str = "png",  # noqa: A002
                unreadable: list[tuple[Path, str]] | None = None, channels: int = 3) -> tuple[list[_Job], int]:
    """Input and output paths of a folder translation, after every safety check; and how many files under
    ``source`` are not images.  One image (``source`` a file) goes into the folder ``destination``, or to the
    file ``destination`` when that is an image's name (its extension, not ``format``, sets the output's).
    Sub-folders of ``source`` that cannot be read go into ``unreadable``.  ``channels``: the translations'."""
    if format not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    source, destination = Path(source), Path(destination)
    if not source.exists():
        raise UserError(f"INPUT: {source} does not exist")
    if not (source.is_file() or source.is_dir()):  # a named pipe: its reader would wait for a writer
        raise UserError(f"INPUT: {source} is {NOT_A_FILE}")
    if source.is_file() and is_image_name(destination) and not destination.is_dir():  # one image to a named file
        if not can_write(destination.suffix):
            raise UserError(f"OUTPUT: cannot write {destination.suffix} files; name the output .png or .jpg")
        if not holds(destination.suffix, channels):
            raise UserError(f"OUTPUT: a {destination.suffix} file cannot hold this model's {CHANNEL_NAMES[channels]} "
                            f"translations; name the output {same_format(destination.suffix, channels)}")
        if checkpoint.within(destination, source):
            raise UserError(f"OUTPUT: translating {source} would replace the input {destination}")
        return [_Job(source, destination)], 0
    if destination.exists() and not destination.is_dir():
        raise UserError(f"OUTPUT: {destination} is a file; give a folder for the translations")
    walked: list[Path] = []  # the folders under INPUT, where its links led too
    if source.is_dir():
        if checkpoint.within(destination, source):
            raise UserError(f"OUTPUT: {destination} lies inside INPUT {source}; choose a folder outside it, "
                            "so that translations never mix with (or replace) the inputs")
        if checkpoint.within(source, destination):  # INPUT's sub-folders would be OUTPUT's too
            raise UserError(f"OUTPUT: {destination} holds INPUT {source}; choose a folder beside it, so that "
                            "translations never mix with (or replace) the inputs")
        files = visible_files(source, unreadable, walked)
        inputs = [p for p in files if is_image_name(p)]
        ignored = len(files) - len(inputs)
        relatives = [p.relative_to(source) for p in inputs]
    else:
        inputs, relatives, ignored = [source], [Path(source.name)], 0
    if not inputs:
        if unreadable:
            path, reason = unreadable[0]
            raise UserError(f"INPUT: {source} holds no images that can be read: {path} is {reason}")
        raise UserError(f"INPUT: {source} holds no images ({', '.join(sorted(image_extensions()))})")
    jobs, claimed = [], {}
    real_inputs = {p.resolve() for p in inputs}
    if source.is_dir():  # links are followed: one may lead into OUTPUT, or to a folder that holds it, whose
        # translations would be read as inputs (at once, or by the same command again, when a run is interrupted)
        inside = next((folder.resolve() for folder in walked[1:] if checkpoint.within(folder, destination)
                       or checkpoint.within(destination, folder)), None)
        real_destination = destination.resolve()
        inside = inside or next((p for p in sorted(real_inputs) if p.is_relative_to(real_destination)), None)
        if inside is not None:
            raise UserError(f"INPUT: {source} leads into OUTPUT {destination} through a link (to {inside}); "
                            "choose a folder outside it, so that translations never mix with the inputs")
    # --format same: each output in its input's format, or where that format is read but not written (GIF, TGA,
    # ...) or cannot hold the translations (a grey PGM's colour translation) in one that can, which one such file
    # among thousands refused, or failed to write, for the whole folder
    suffixes = [{"png": ".png", "jpg": ".jpg"}.get(format, path.suffix.lower()) for path in inputs]
    changed = {suffix: same_format(suffix, channels) for suffix in sorted(set(suffixes))}
    changed = {suffix: written for suffix, written in changed.items() if written != suffix}
    if changed:
        log.warning("--format same: %s", ", ".join(
            f"{suffix} inputs are translated to {written} files" for suffix, written in changed.items()))
        suffixes = [changed.get(suffix, suffix) for suffix in suffixes]
    # inputs whose names differ only in their extensions (photo.jpg and photo.png) would be written to one file:
    # each such translation keeps its input's whole name before its own extension (photo.jpg.png, photo.png.png)
    shared = Counter(relative.with_suffix(suffix) for relative, suffix in zip(relatives, suffixes))
    renamed: list[_Job] = []
    for path, relative, suffix in zip(inputs, relatives, suffixes):
        output = destination / relative.with_suffix(suffix)
        if shared[relative.with_suffix(suffix)] > 1:
            output = destination / relative.parent / (relative.name + suffix)
            renamed.append(_Job(path, output))
        if output in claimed:
            raise UserError(f"INPUT: {claimed[output]} and {path} would both be written to {output}; "
                            "rename one of them")
        if output.resolve() in real_inputs:
            raise UserError(f"OUTPUT: translating {path} would replace the input {output}")
        claimed[output] = path
        jobs.append(_Job(path, output))
    if renamed:
        log.warning("%d inputs share their names but for their extensions; the translation of each keeps its "
                    "whole name (%s → %s)", len(renamed), renamed[0].input, renamed[0].output.name)
    return jobs, ignored


class _ImageFiles(Dataset):
    """Decodes the inputs in loader workers: ``{"index", "tensor", "bits", "error"}``, the tensor ``(C, H, W)``
    uint8 levels or floats in [-1, 1] (see :func:`from_levels`)."""

    def __init__(self, jobs: list[_Job], items: list[int], channels: int, resize: int | None) -> None:
        self.jobs, self.items, self.channels, self.resize = jobs, items, channels, resize

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> dict[str, Any]:
        index = self.items[position]
        try:
            levels, bits = read_image_levels(self.jobs[index].input)
        except UserError as error:
            return _unreadable(index, str(error).split(": ", 1)[-1])
        except Exception as error:  # noqa: BLE001 - e.g. Pillow's DecompressionBombError: skip, say why
            return _unreadable(index, f"not a readable image ({type(error).__name__}: {error})"[:200])
        # 8-bit levels that no resampling or luminance mixes travel as they are (a quarter of float32's bytes)
        mixed = self.resize is not None or (self.channels == 1 and levels.shape[2] > 1)
        if levels.dtype == np.uint8 and not mixed:
            # copied to channels-first (a one-channel array would already be contiguous, and decoders return
            # read-only arrays, which torch warns of)
            levels = convert_channels(levels, self.channels)
            return {"index": index, "tensor": torch.from_numpy(levels.transpose(2, 0, 1).copy()),
                    "bits": bits, "error": ""}
        array = convert_channels(to_unit(levels), self.channels)
        if self.resize is not None:
            import cv2  # noqa: PLC0415

            array = cv2.resize(array, (self.resize, self.resize), interpolation=cv2.INTER_CUBIC)
            array = np.clip(array if array.ndim == 3 else array[:, :, None], 0.0, 1.0)
        return {"index": index, "tensor": to_tensor(array), "bits": bits, "error": ""}


def _unreadable(index: int, reason: str) -> dict[str, Any]:
    return {"index": index, "tensor": torch.zeros(0), "bits": 0, "error": reason}


def _to_array(tensor: Tensor) -> np.ndarray:
    """``(C, H, W)`` in [-1, 1] → ``(H, W, C)`` float32 in [0, 1]."""
    return tensor.float().add(1).div(2).clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def from_levels(images: Tensor) -> Tensor:
    """uint8 levels → floats in [-1, 1], exactly as :func:`~img2img.data.images.to_tensor` maps ``level / 255``;
    float images pass through.  Runs on the translation device, so decoded images cross to it as bytes."""
    if images.dtype != torch.uint8:
        return images
    return images.float().div(255).mul(2).sub(1)


def _upsamples(module: nn.Module) -> bool:
    """Whether ``module`` enlarges its input: a strided transposed convolution, nn.Upsample, a pixel shuffle, or a
    module that says so itself (``upsamples = True``, as CUT's blurred upsampling)."""
    if isinstance(module, nn.ConvTranspose2d):
        return any(stride > 1 for stride in module.stride)
    return isinstance(module, (nn.Upsample, nn.PixelShuffle)) or getattr(module, "upsamples", False) is True


def full_resolution_layers(net: nn.Module) -> list[nn.Module]:
    """A generator's convolutions at its output's full resolution: from its last upsampling on (ResNet, CUT and
    StarGAN: the last upsampling convolution and the output layer), or its output layer alone where that is the
    last upsampling (U-Net, DiscoGAN) or where nothing upsamples; none for a network without a convolution.
    The last of them is the output layer, whose output tanh makes the image."""
    modules = list(net.modules())  # in the order they run, for these generators (a U-Net's outermost up last)
    convolutions = [index for index, m in enumerate(modules) if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    if not convolutions:
        return []
    upsampling = [index for index, m in enumerate(modules) if _upsamples(m)]
    start = min(upsampling[-1] if upsampling else convolutions[-1], convolutions[-1])
    return [modules[index] for index in convolutions if index >= start]


def full_resolution_in_float32(net: nn.Module) -> None:
    """Run the generator's layers at full resolution (:func:`full_resolution_layers`) in float32 under bf16
    autocast.  Their outputs become the image, quantised to 8 (or 16) bits: bf16's 8-bit mantissa alone rounds
    a value in [0.5, 1) by up to a quarter of an 8-bit level, and each bf16 layer adds its rounding to the
    next's.  With the output layer alone in float32, a trained ResNet's bf16 images were up to 3 levels from
    float32's (on an H200 in one test run of two, one value in 34,000 more than 1 level off; on the CPU in two
    of three small trained ResNets, and in both of two ResNet-9s of the official widths); with its last
    upsampling convolution in float32 too, at most 2 levels in all five, and 5 to 20 times fewer values more
    than 1 level off.  The cost: the output layer (3 channels) and,
    in a ResNet-9, the last upsampling convolution, 8% of the network's arithmetic, at float32's rate.  A
    network without a convolution is left as it is."""
    def forward(self: nn.Module, images: Tensor) -> Tensor:
        with torch.autocast(images.device.type, enabled=False):
            return type(self).forward(self, images.float())

    for layer in full_resolution_layers(net):
        layer.forward = types.MethodType(forward, layer)  # deepcopy binds it to the copy


def to_levels(images: Tensor, bits: int) -> Tensor:
    """Floats in [-1, 1] → levels of ``bits`` (8: uint8, 16: int32 holding 0..65535), rounded as
    :func:`~img2img.data.images.quantize` rounds, on the images' device (so results cross back as bytes)."""
    top = 255 if bits == 8 else 65535
    levels = images.float().add(1).div(2).clamp(0, 1).mul(top).round()
    return levels.to(torch.uint8 if bits == 8 else torch.int32)


# what every later output would meet too: no space, over quota, a read-only file system, no file to open
_EVERY_LATER_WRITE_FAILS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EMFILE, errno.ENFILE)


# what _write returns for an output that another process wrote since the translation began (a second translation
# into the same folder): kept, as an output that existed at the start is
APPEARED = "exists (it appeared while translating); kept"


def _write(path: Path, levels: Tensor, bits: int, overwrite: bool) -> str | None:
    """Write one output, ``(C, H, W)`` levels from :func:`to_levels`, atomically (temporary file, then rename);
    never replace a file unless ``overwrite``.  Returns None, or why the file could not be written; raises
    OSError, naming the file, when no file can be written there (a full disk)."""
    temporary = checkpoint.temporary_path(path)
    try:
        if overwrite and os.path.lexists(path) and special_mode(os.lstat(path).st_mode):  # the rename would
            return f"{NOT_A_FILE}; --overwrite replaces files only"  # replace a pipe or a device whole
        array = levels.permute(1, 2, 0).numpy().astype(np.uint8 if bits == 8 else np.uint16, copy=False)
        data = encode_image(array, path.suffix)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):  # it said "File exists", of the output it had not written
            return f"{checkpoint.in_the_way(path)} {checkpoint.NO_FOLDER}"
        with open(temporary, "wb") as handle:
            handle.write(data)
        if overwrite:
            os.replace(temporary, path)
        else:
            try:  # a hard link fails if the name exists: no check-then-write race
                os.link(temporary, path)
            except FileExistsError:
                return APPEARED
            except OSError:  # no hard links here
                if path.exists():
                    return APPEARED
                os.replace(temporary, path)
        return None
    except OSError as error:
        if error.errno in _EVERY_LATER_WRITE_FAILS:  # every file after this one would fail too: stop, naming this one
            raise OSError(error.errno, error.strerror, str(path)) from None
        return error.strerror or str(error)
    except ValueError as error:
        return str(error)
    finally:
        checkpoint.discard(temporary)


def default_workers() -> int:
    """Decoding processes of folder translation when not told: four at most (decoding a 256² JPEG takes under
    a millisecond, so four keep ahead of the network), fewer on smaller machines (or CPU quotas)."""
    return min(4, available_cpus())
