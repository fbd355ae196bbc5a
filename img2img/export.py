"""Exporting a generator to ONNX, for inference without PyTorch.

The exported graph is the generator alone: one target (direction), input ``image``
``(N, C_in, H, W)`` in [-1, 1], output ``translated`` ``(N, C_out, H, W)``
in [-1, 1], with the batch size and both sides dynamic.  A model whose one
generator takes its target (StarGAN) is exported, unless ``--to`` fixes one,
with a second input ``domain``: the target's one-hot ``(N, domains)``, in the
order that the metadata's ``img2img.domains`` lists.  A model that makes images
from noise (the MNIST GAN, DCGAN, ...) exports its generator: input ``noise``
(and ``label``, one-hot, for a conditional one), output ``images``.  Sides must be
multiples of the generator's ``size_multiple`` (recorded in the model's
metadata with the channels); pad and crop around it as
:mod:`img2img.translate` does.  Uses PyTorch's ``torch.export``-based
exporter, which needs the ``onnx`` and ``onnxscript`` packages and torch 2.8 or
newer (the ``export`` extra).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from img2img.checkpoint import (check_replaceable, check_writable, discard, refuse_replacing, resolve,
                                temporary_path)
from img2img.errors import UserError
from img2img.interrupt import held
from img2img.translate import checkpoint_model, load_generator

OPSET = 18
# the oldest torch whose exporter converts every img2img generator (2.6 and 2.7 fail on CUT's, StarGAN's and the
# noise models' batch norms; img2img itself runs on 2.6)
EXPORTER_TORCH = "2.8"


def export_onnx(checkpoint_path: str | Path, out: str | Path, target: str | None = None, arch: str | None = None,
                norm: str | None = None, base_channels: int | None = None, use_ema: bool = True,
                overwrite: bool = False) -> Path:
    """Export what translates to ``target`` (a direction; by default the model's first) in a checkpoint (or official
    weights file) to the ONNX file ``out``; for a model that makes images from noise, its generator."""
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:  # optional: the `export` extra; torch's exporter needs both
        raise UserError(f"--format onnx needs the onnx and onnxscript packages ({', '.join(missing)} missing): "
                        'pip install "img2img[export]"')
    if torch.__version__ < EXPORTER_TORCH:  # a TorchVersion compares as a version
        raise UserError(f"--format onnx needs torch {EXPORTER_TORCH} or newer, whose exporter converts these "
                        f"networks (this is torch {torch.__version__}): pip install -U \"img2img[export]\"")
    out = Path(out)
    check_replaceable(out, "--out", overwrite)
    refuse_replacing(out, "--out", {"CHECKPOINT": resolve(checkpoint_path, "CHECKPOINT")})
    check_writable(out, "--out")  # before the conversion, which takes a while
    model = None if arch or norm or base_channels else checkpoint_model(checkpoint_path, use_ema)
    if model is not None and hasattr(model, "generate"):
        if target is not None:
            raise UserError(f"--direction: a {model.name} model makes images from noise; it has no direction to "
                            "choose")
        return _write(*_noise_graph(model), out)
    net, info = load_generator(checkpoint_path, target, arch, norm, base_channels, use_ema)
    conditional = None if target is not None or model is None else model.conditional_generator()
    side = max(info.min_size, info.size_multiple) * 2
    example = torch.zeros(2, info.in_channels, side, side)
    batch = torch.export.Dim("batch", min=1)
    image_dims = {0: batch, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    dynamic: Any = (image_dims,)  # by position: whatever the forward's parameters are called
    inputs, names, extra = (example,), ["image"], {"img2img.target": info.target}
    if conditional is not None:  # the target domain as a second input: a one-hot (N, domains), in this order
        net, domains = conditional
        inputs, names = (example, torch.eye(len(domains))[[0, 1]]), ["image", "domain"]
        dynamic = (image_dims, {0: batch})
        extra = {"img2img.target": "the one-hot input 'domain'", "img2img.domains": ",".join(domains)}
    metadata = {"img2img.source": info.description, **extra, "img2img.in_channels": info.in_channels,
                "img2img.out_channels": info.out_channels, "img2img.size_multiple": info.size_multiple,
                "img2img.range": "[-1, 1]"}
    return _write(net, inputs, names, "translated", dynamic, metadata, out)


def _noise_graph(model: Any) -> tuple[torch.nn.Module, tuple, list[str], str, Any, dict[str, Any]]:
    """A noise-to-image generator as a graph: input ``noise`` ``(N, noise_dim)`` (and, when conditional, ``label``,
    the class as a one-hot ``(N, classes)`` in the order of the metadata's ``img2img.classes``), output ``images``
    ``(N, C, S, S)`` in [-1, 1]."""
    config = model.config
    batch = torch.export.Dim("batch", min=1)
    noise = model.noise(2, torch.device("cpu"), torch.Generator().manual_seed(0))
    inputs, names, dynamic = (noise,), ["noise"], ({0: batch},)
    metadata: dict[str, Any] = {"img2img.source": f"{model.name} generator", "img2img.noise": model.noise_law(),
                                "img2img.out_channels": config.channels, "img2img.range": "[-1, 1]"}
    if model.conditional:
        classes = len(config.classes)
        inputs, names, dynamic = (noise, torch.eye(classes)[[0, 1]]), ["noise", "label"], ({0: batch}, {0: batch})
        metadata["img2img.classes"] = ",".join(config.classes)
    return model.nets["g"], inputs, names, "images", dynamic, metadata


def _write(net: torch.nn.Module, inputs: tuple, names: list[str], output: str, dynamic: Any,
           metadata: dict[str, Any], out: Path) -> Path:
    """Export ``net`` on ``inputs`` to ``out`` (through a temporary file, renamed when whole) with ``metadata``."""
    net = net.float().eval()
    temporary = temporary_path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # Ctrl-C (or SIGTERM) waits for the exporter, which a KeyboardInterrupt raised inside it can crash
        with held("the export") as stop_if_asked, contextlib.redirect_stdout(io.StringIO()), \
                warnings.catch_warnings():  # it reports each stage
            warnings.filterwarnings("ignore", message=".*The axis name")  # the inputs share their batch axis
            import onnx  # noqa: PLC0415

            torch.onnx.export(net, inputs, str(temporary), dynamo=True, input_names=names, output_names=[output],
                              dynamic_shapes=dynamic, opset_version=OPSET, external_data=False, verbose=False)
            stop_if_asked()  # before anything is written where it is asked for
        model = onnx.load(str(temporary))
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, str(value)
        onnx.save(model, str(temporary))
        os.replace(temporary, out)
    except OSError as error:
        if error.filename is None or Path(error.filename) != temporary:
            raise
        raise OSError(error.errno, error.strerror, str(out)) from None  # the file asked for, not its temporary
    finally:
        discard(temporary)
    return out
