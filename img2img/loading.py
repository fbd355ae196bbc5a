"""Rebuilding a model from a checkpoint: the one loader that every reader uses.

Translate, sample, eval, export, import and ``--resume`` all open a
checkpoint here.  A checkpoint holds its run configuration, so the model's
class comes from the registry by name and is built from the saved options
alone; the trainer builds its models through :func:`build_model` too.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from img2img import checkpoint
from img2img.config import RunConfig, TrainConfig, from_dict
from img2img.errors import UserError, say_once

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` means CUDA when a GPU is present that this torch build can use, else the CPU (saying why, once,
    where a GPU is there but cannot be used); anything else must exist here and work."""
    if name == "auto":
        available, problem = _cuda_state()
        if available:
            problem = cuda_problem(_own_index())
            if problem is None:
                return torch.device("cuda")
        if problem is not None:
            say_once(log, logging.WARNING, f"--device auto: {problem}; running on the CPU")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device: {name!r} is not a device (try auto, cpu or cuda)") from None
    if device.type == "cuda":
        available, problem = _cuda_state()
        if not available:
            raise UserError(f"--device: {name} asked for, but " + (problem or "CUDA is not available on this machine"))
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device: {name} asked for, but there are {torch.cuda.device_count()} CUDA devices")
        problem = cuda_problem(_own_index() if device.index is None else device.index)
        if problem is not None:
            raise UserError(f"--device: {name}: {problem}; --device cpu runs on the CPU")
    elif device.type != "cpu":
        raise UserError(f"--device: {name!r} is not supported (auto, cpu or cuda)")
    return device


def _own_index() -> int:
    """The GPU this process will use for ``cuda``: its LOCAL_RANK's under torchrun (img2img.distributed), so that
    no rank makes a CUDA context on another's GPU (each costs hundreds of MB there); else the first."""
    try:
        index = int(os.environ.get("LOCAL_RANK", 0))
    except ValueError:
        return 0
    return index if 0 <= index < torch.cuda.device_count() else 0


GET_TORCH = "https://pytorch.org/get-started/locally/"


@functools.cache  # torch warns once per process
def _cuda_state() -> tuple[bool, str | None]:
    """Whether CUDA is available, and where a GPU is there but torch cannot use it, why, in one line: torch says
    so in a warning of its own (a driver older than this build's CUDA), which would print as two lines of
    Python's warning format while the command went on on the CPU without a word of its own."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    said = [str(warning.message).strip() for warning in caught if "CUDA" in str(warning.message)]
    if available:
        return True, None
    if not said:
        if torch.version.cuda is None and torch.version.hip is None and nvidia_gpu_present():
            return False, f"this torch build ({torch.__version__}) has no CUDA, though an NVIDIA GPU is here; " \
                          f"install a CUDA build of torch ({GET_TORCH})"
        return False, None
    first = said[0].splitlines()[0]
    reason = first.split(". Please")[0].removeprefix("CUDA initialization: ").rstrip(".")
    reason = reason[:1].lower() + reason[1:]
    return False, f"a GPU is there, but CUDA cannot be used ({reason}); update the GPU's driver, or install a " \
                  f"torch build for it ({GET_TORCH})"


def nvidia_gpu_present() -> bool:
    """Whether the NVIDIA driver reports a GPU on this machine (Linux: /proc/driver/nvidia/gpus), whatever torch
    was built for: a CPU-only torch beside a GPU trained on the CPU without a word."""
    try:
        return any(Path("/proc/driver/nvidia/gpus").iterdir())
    except OSError:
        return False


def _probe(index: int) -> None:
    """One kernel on CUDA device ``index``, waited for: it fails where the build has no kernels for the GPU."""
    if (torch.ones(2, device=f"cuda:{index}") * 2).sum().item() != 4:
        raise RuntimeError("CUDA computed a wrong sum")


@functools.cache
def cuda_problem(index: int) -> str | None:
    """Why CUDA device ``index`` cannot run this torch build's kernels, in one line; None where it can.

    A GPU older than the build supports (torch for CUDA 13 has kernels from compute capability 7.5 on: a P100
    or a V100 has none) passes ``torch.cuda.is_available()``; torch then printed a warning of a dozen lines and
    the first kernel failed with "no kernel image is available for execution on the device", a traceback."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own account, of many lines: said here in one
        try:
            _probe(index)
            return None
        except RuntimeError as error:  # (torch.AcceleratorError is one)
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        try:
            gpu = f"{torch.cuda.get_device_name(index)} (compute capability " \
                  f"{'.'.join(map(str, torch.cuda.get_device_capability(index)))})"
        except (RuntimeError, AssertionError, AttributeError):
            gpu = f"cuda:{index}"
    if "no kernel image" in reason:
        built = ", ".join(arch for arch in torch.cuda.get_arch_list() if arch.startswith("sm_"))
        return f"this torch build ({torch.__version__}) has no CUDA kernels for the GPU {gpu}, only for {built}; " \
               f"install a torch build for it ({GET_TORCH})"
    return f"the GPU {gpu} cannot run CUDA work ({reason})"


def run_config_from_dict(values: dict[str, Any], what: str = "config") -> RunConfig:
    """Rebuild a :class:`RunConfig` from its dict form (as in config.json or a checkpoint)."""
    from img2img.models import get_model_class  # noqa: PLC0415 - the registry imports every model

    try:
        model_class = get_model_class(values["model"])
    except UserError as error:
        raise UserError(f"{what}: {error}") from None
    train = dict(values["train"])
    if isinstance(train.get("cuda_graph"), bool):  # written before --cuda-graph took auto
        train["cuda_graph"] = "on" if train["cuda_graph"] else "off"
    return RunConfig(model=values["model"], train=from_dict(TrainConfig, train, what),
                     options=from_dict(model_class.Config, values["options"], what))


def build_model(run: RunConfig) -> Any:
    """A freshly initialised model of a (resolved) run."""
    from img2img.models import get_model_class  # noqa: PLC0415

    return get_model_class(run.model)(run.options)


def open_checkpoint(path: str | Path, option: str = "checkpoint") -> tuple[dict[str, Any], RunConfig]:
    """The payload of an img2img checkpoint file (or run folder's last.ckpt) and the run it describes."""
    payload = checkpoint.read(path, option)
    return payload, run_config_from_dict(payload["config"], f"{option}: {payload['path']}")


def load_model(path: str | Path | dict[str, Any], device: str | torch.device = "cpu", option: str = "checkpoint",
               use_ema: bool = True, partial: bool = False) -> tuple[Any, RunConfig, dict[str, Any]]:
    """Rebuild a model from a checkpoint file, run folder or already-read payload, in evaluation mode.

    When the run kept weight averages (--ema), those replace the raw weights
    of the inference networks unless ``use_ema`` is false.  ``partial``:
    networks the file does not hold (an imported checkpoint has generators
    only) keep their initial weights; the caller checks that what it uses was
    there (``payload["networks"]``).
    """
    if isinstance(path, dict):
        payload = path
        run = run_config_from_dict(payload["config"], f"{option}: {payload['path']}")
    else:
        payload, run = open_checkpoint(path, option)
    model = build_model(run)
    averages = payload.get("ema", {}) if use_ema else {}
    for name, net in model.nets.items():
        weights = averages.get(name, payload["networks"].get(name))
        if weights is None and partial:
            continue
        why = f"no weights for {name}" if weights is None else checkpoint.unfit_weights(weights, net.state_dict())
        if why:
            raise UserError(f"{option}: {payload['path']} does not match its {run.model} model ({name}: {why})")
        net.load_state_dict(weights)
    return model.to(device).eval(), run, payload
