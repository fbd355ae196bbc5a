"""Speed settings shared by training and translation: memory layout, cuDNN autotuning, ``torch.compile``.

None of them changes what is computed, only how: the same networks and
losses, to within floating-point rounding.

* ``channels_last``: networks and image batches in NHWC layout, which
  tensor-core convolution kernels prefer.
* ``cudnn_benchmark``: cuDNN times its convolution algorithms on the first
  batch of each shape and keeps the fastest (CUDA only; training sees one
  shape, so it pays once).
* ``amp``: bf16 autocast, on GPUs that compute in bf16 (:func:`bf16_autocast`).
* ``compile``: networks go through ``torch.compile`` (TorchInductor); the
  modes ``reduce-overhead`` and ``max-autotune`` also replay each step as
  CUDA graphs, which removes the per-kernel launch cost that dominates at
  batch 1.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from img2img.config import COMPILE_MODES  # noqa: F401 - also what callers import from here
from img2img.errors import UserError, say_once

log = logging.getLogger(__name__)
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
# the compiler behind torch.compile; tests swap in "aot_eager" (the same graph capture, no code generation)
BACKEND = "inductor"


def check_compile_mode(mode: str, option: str = "--compile") -> str:
    if mode not in COMPILE_MODES:
        raise UserError(f"{option} must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    return mode


def bf16_autocast(amp: bool, device: torch.device) -> bool:
    """Whether ``--amp`` means bf16 autocast on ``device``: on CUDA GPUs that compute in bf16 (compute capability
    8.0 on, and AMD's); never on the CPU.  An older GPU (a T4, a GTX 16xx or RTX 20xx) only emulates bf16, slower
    than float32, and cuDNN has no bf16 convolutions for it, so these networks ran slower or not at all there;
    it computes in float32, said once in one line."""
    if not amp or device.type != "cuda":
        return False
    capability = torch.cuda.get_device_capability(device)
    if torch.version.hip or capability >= (8, 0):
        return True
    say_once(log, logging.INFO, f"bf16 autocast left off: {torch.cuda.get_device_name(device)} (compute capability "
                                f"{capability[0]}.{capability[1]}) does not compute in bf16 (from 8.0 on); float32")
    return False


def configure_device(device: torch.device, cudnn_benchmark: bool) -> None:
    """Process-wide settings for ``device``: cuDNN autotuning on CUDA."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cudnn_benchmark


@contextlib.contextmanager
def cudnn_autotuning(enabled: bool) -> Iterator[None]:
    """cuDNN's autotuning on or off for a block (translation decides per input shape), then as it was."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def to_layout(value: Any, channels_last: bool) -> Any:
    """Image batches (4-D tensors, also inside dicts, lists and tuples) in the chosen layout; others as they are."""
    if not channels_last:
        return value
    if isinstance(value, Tensor):
        return value.contiguous(memory_format=torch.channels_last) if value.dim() == 4 else value
    if isinstance(value, dict):
        return {key: to_layout(item, channels_last) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_layout(item, channels_last) for item in value)
    return value


def check_compiler(mode: str, device: torch.device, option: str = "--compile") -> None:
    """On the CPU, TorchInductor builds C++: say so in one line when there is no compiler, before any work."""
    if mode != "off" and device.type == "cpu" and BACKEND == "inductor" and not any(
            shutil.which(name) for name in ("g++", "c++", "clang++")):
        raise UserError(f"{option} {mode} on the CPU needs a C++ compiler (g++ or clang++), and none is on PATH; "
                        f"install one or leave {option} off")


class CompileFault(UserError):
    """``torch.compile``, or the code it made, failed: the message names the option and the way out;
    ``reason`` says only what failed (for a caller that finds its own way out, such as ``--compile auto``)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@contextlib.contextmanager
def compile_errors(mode: str, option: str = "--compile", channels_last: bool = False) -> Iterator[None]:
    """Turn a failure of the compiler behind ``torch.compile``, or of the code it made, into a
    :class:`CompileFault`: one line naming the option.

    The code TorchInductor makes checks that each operator it calls out to returns tensors of the sizes and
    strides that torch's shape functions ("fake" kernels) predicted.  Some of those predictions are wrong about
    memory layout in current torch (``replication_pad2d_backward`` with channels_last inputs on the CPU; on
    CUDA, ``convolution_backward`` for DCGAN's float32 networks, measured with torch 2.11), and the check fails
    at the first step with an ``AssertionError`` whose message names the operator."""
    if mode == "off":
        yield
        return
    try:
        yield
    except torch._dynamo.exc.BackendCompilerFailed as error:
        reason = f"torch.compile failed ({_compiler_failure(error)[:200]})"
        raise CompileFault(f"{option} {mode}: {reason}; run without {option}", reason) from None
    except AssertionError as error:
        operator = re.search(r"Error in op: (\S+)", str(error))
        if operator is None:
            raise
        reason = (f"the compiled code's call to {operator[1]} returned tensors laid out otherwise than torch "
                  f"{torch.__version__} predicts ({str(error).split(';')[0][:100]}), a fault of torch's compiler "
                  f"with these networks")
        raise CompileFault(f"{option} {mode}: {reason}; run with {option} off"
                           + (" or without --channels-last" if channels_last else ""), reason) from None


def _compiler_failure(error: BaseException) -> str:
    """What a failure of torch's compiler says, in a line: the C++ compiler's first error where there is one
    (TorchInductor's report quotes the whole command and output, and the cause comes near the end: "fatal error:
    error writing to /tmp/ccX.s: No space left on device", where it said "Command:"), else the first line under
    torch's heading ("backend='inductor' raised:")."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if diagnostic := re.search(r"\b((?:fatal )?error: .+)", line):
            return diagnostic[1]
    lines = [line for line in lines if not line.startswith("backend=")]
    return lines[0] if lines else type(error).__name__


def compile_module(module: nn.Module, mode: str, device: torch.device) -> nn.Module:
    """``module`` (on ``device``) through ``torch.compile`` in ``mode`` (``off``: the module itself; ``auto`` is
    resolved by the caller, see :func:`resolve_compile`), after checking the mode and, on the CPU, that there is
    a compiler.

    The compiled wrapper shares the module's parameters, so optimisers,
    checkpoints and state dicts keep using the plain module.
    """
    if check_compile_mode(mode) == "off":
        return module
    if mode == "auto":
        raise ValueError("resolve the compile mode auto first (speed.resolve_compile)")
    check_compiler(mode, device)
    return torch.compile(module, mode=None if mode == "default" else mode, backend=BACKEND)


def resolve_compile(mode: str, device: torch.device, training: bool = True, supported: bool = True,
                    distributed: bool = False, step_graphs: bool = False) -> str:
    """The compile mode ``auto`` stands for: ``reduce-overhead`` (compiled networks replayed as CUDA graphs)
    for training on one CUDA device, where it pays most (BENCHMARKS.md: CycleGAN 4x, pix2pix 2x at 256²,
    batch 1), unless the model cannot be compiled (``supported``), and ``default`` there when the whole step is
    captured as one CUDA graph (``step_graphs``, --cuda-graph), which holds the compiled kernels; ``off`` on the
    CPU, where compiling does not pay for training, for translation, where it gains under 10% for a minute of
    compiling, and under torchrun, whose DDP buckets are not captured in CUDA graphs here.  Other modes are
    returned as given."""
    if check_compile_mode(mode) != "auto":
        return mode
    if device.type == "cuda" and training and supported and not distributed:
        return "default" if step_graphs else "reduce-overhead"
    return "off"


def uses_cuda_graphs(mode: str, device: torch.device) -> bool:
    return device.type == "cuda" and mode in CUDA_GRAPH_MODES and BACKEND == "inductor"


def mark_step(mode: str, device: torch.device) -> None:
    """Tell the CUDA-graph runtime that a new training step begins (outputs of the last one may be reused)."""
    if uses_cuda_graphs(mode, device):
        torch.compiler.cudagraph_mark_step_begin()
