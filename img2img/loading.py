"""Rebuilding a model from a checkpoint: the one loader that every reader uses.

Translate, sample, eval, export, import and ``--resume`` all open a
checkpoint here.  A checkpoint holds its run configuration, so the model's
class comes from the registry by name and is built from the saved options
alone; the trainer builds its models through :func:`build_model` too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from img2img import checkpoint
from img2img.config import RunConfig, TrainConfig, from_dict
from img2img.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` means CUDA when a GPU is present, else the CPU; anything else must exist here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device: {name!r} is not a device (try auto, cpu or cuda)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device: {name} asked for, but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device: {name} asked for, but there are {torch.cuda.device_count()} CUDA devices")
    elif device.type != "cpu":
        raise UserError(f"--device: {name!r} is not supported (auto, cpu or cuda)")
    return device


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
