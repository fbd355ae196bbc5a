"""Generators saved by the official pytorch-CycleGAN-and-pix2pix code: read, recognise, rebuild.

The official code saves each network as a bare state dict
(``latest_net_G_A.pth``, ``latest_net_G_B.pth``, ``latest_net_G.pth``).  Such a
file does not say which network it holds, but its parameter names and shapes
do: a ResNet generator has ``model.N.conv_block`` keys (their count is the
number of blocks), a U-Net nests ``model.1.model.3.model...`` once per
downsampling; convolution biases exist only with instance norm and running
statistics only with batch norm; the first convolution's shape gives the base
width (``--ngf``) and the input channels.  Because img2img's generators use
the official layer structure and names, the weights then load unchanged.

Files are read with ``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from img2img import checkpoint
from img2img.errors import UserError
from img2img.nn.resnet import RESNET_BLOCKS, ResnetGenerator
from img2img.nn.unet import UNET_DEPTHS, UnetGenerator

ARCHITECTURES = (*RESNET_BLOCKS, *UNET_DEPTHS)


@dataclass(frozen=True)
class OfficialGenerator:
    """What an official generator file holds, as recognised from its weights."""

    kind: str  # "resnet" or "unet"
    depth: int  # residual blocks (resnet) or downsamplings (unet)
    norm: str  # batch, instance or none
    base_channels: int  # ngf
    in_channels: int
    out_channels: int
    dropout: bool  # a ResNet's dropout layers shift its parameter names; a U-Net's do not

    @property
    def arch(self) -> str:
        """The official ``--netG`` name (``resnet_9blocks``, ``unet_256``...), or a descriptive one."""
        return f"resnet_{self.depth}blocks" if self.kind == "resnet" else f"unet_{2 ** self.depth}"

    def describe(self) -> str:
        return (f"official {self.arch} ({self.norm} norm, {self.base_channels} wide, "
                f"{self.in_channels}→{self.out_channels} channels)")

    def build(self) -> nn.Module:
        if self.kind == "resnet":
            return ResnetGenerator(self.in_channels, self.out_channels, self.base_channels, self.depth, self.norm,
                                   self.dropout)
        return UnetGenerator(self.in_channels, self.out_channels, self.depth, self.base_channels, self.norm,
                             self.dropout)


def is_state_dict(payload: object) -> bool:
    """A bare ``{name: tensor}`` dict, as the official code saves (and not an img2img checkpoint)."""
    return (isinstance(payload, dict) and bool(payload) and "format" not in payload
            and all(isinstance(key, str) and isinstance(value, Tensor) for key, value in payload.items()))


def read_state_dict(path: str | Path, option: str = "CHECKPOINT") -> dict[str, Tensor]:
    """Load an official generator file without running code (``torch.load(weights_only=True)``)."""
    file = checkpoint.resolve(path, option)
    payload = checkpoint.load_file(file, option)
    if not is_state_dict(payload):
        raise UserError(f"{option}: {file} is not a state dict of generator weights")
    return payload


def recognise(state: dict[str, Tensor], source: str) -> OfficialGenerator:
    """The official generator that ``state`` belongs to; :class:`UserError` naming ``source`` if none."""
    if "model.1.weight" in state and state["model.1.weight"].dim() == 4 and state["model.1.weight"].shape[-1] == 7:
        blocks = {int(m.group(1)) for key in state if (m := re.match(r"model\.(\d+)\.conv_block\.", key))}
        if not blocks:
            raise UserError(f"{source}: a ResNet generator without residual blocks is not an official generator")
        first = state["model.1.weight"]
        last_index = max(int(m.group(1)) for key in state if (m := re.match(r"model\.(\d+)\.weight$", key)))
        block = min(blocks)
        return OfficialGenerator(
            kind="resnet", depth=len(blocks),
            norm=_norm(state, bias_key="model.1.bias", stats_key="model.2.running_mean"),
            base_channels=first.shape[0], in_channels=first.shape[1],
            out_channels=state[f"model.{last_index}.weight"].shape[0],
            dropout=f"model.{block}.conv_block.6.weight" in state)
    if "model.model.0.weight" in state:
        # the outermost level holds the next at index 1; every middle level holds its inner one at index 3
        depth, prefix = 1, "model.model.1.model."
        if any(key.startswith(prefix) for key in state):
            depth = 2
            while any(key.startswith(prefix + "3.model.") for key in state):
                depth, prefix = depth + 1, prefix + "3.model."
        first = state["model.model.0.weight"]
        up = state.get("model.model.3.weight")
        if up is None or depth < 5:
            raise UserError(f"{source}: a U-Net with {depth} levels is not an official generator (5 or more)")
        return OfficialGenerator(
            kind="unet", depth=depth,
            norm=_norm(state, bias_key="model.model.1.model.1.bias", stats_key="model.model.1.model.2.running_mean"),
            base_channels=first.shape[0], in_channels=first.shape[1], out_channels=up.shape[1], dropout=True)
    raise UserError(f"{source}: the weights are not those of an official ResNet or U-Net generator "
                    f"(first keys: {', '.join(list(state)[:3])})")


def _norm(state: dict[str, Tensor], bias_key: str, stats_key: str) -> str:
    # the official rule: convolutions carry a bias only when instance norm follows them
    if bias_key in state:
        return "instance"
    return "batch" if stats_key in state else "none"


def check_options(found: OfficialGenerator, source: str, arch: str | None, norm: str | None,
                  base_channels: int | None) -> None:
    """Options given on the command line must agree with what the weights are."""
    if arch is not None:
        if arch not in ARCHITECTURES:
            raise UserError(f"--arch must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
        kind = "resnet" if arch.startswith("resnet") else "unet"
        depth = RESNET_BLOCKS.get(arch) or UNET_DEPTHS[arch]
        if (kind, depth) != (found.kind, found.depth):
            raise UserError(f"--arch {arch}: {source} holds a {found.arch} generator")
    if norm is not None and norm != found.norm:
        raise UserError(f"--norm {norm}: {source} holds a generator with {found.norm} norm")
    if base_channels is not None and base_channels != found.base_channels:
        raise UserError(f"--ngf {base_channels}: {source} holds a generator {found.base_channels} channels wide")


def load_generator(path: str | Path, arch: str | None = None, norm: str | None = None,
                   base_channels: int | None = None, option: str = "CHECKPOINT") -> tuple[nn.Module, OfficialGenerator]:
    """Rebuild an official generator from its weights file, checked against any options given."""
    return generator_from_state(read_state_dict(path, option), str(path), arch, norm, base_channels, option)


def generator_from_state(state: dict[str, Tensor], name: str, arch: str | None = None, norm: str | None = None,
                         base_channels: int | None = None,
                         option: str = "CHECKPOINT") -> tuple[nn.Module, OfficialGenerator]:
    """:func:`load_generator` for a state dict already read from the file ``name``."""
    state = {key.removeprefix("module."): value for key, value in state.items()}
    source = f"{option}: {name}"
    found = recognise(state, source)
    check_options(found, source, arch, norm, base_channels)
    net = found.build()
    if found.norm == "instance":
        # files from old PyTorch versions carry running statistics for instance norm, which has none now
        state = {key: value for key, value in state.items()
                 if not key.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    mismatch = checkpoint.unfit_weights(state, net.state_dict())
    if mismatch:
        raise UserError(f"{source} does not fit a {found.arch} generator ({mismatch})")
    net.load_state_dict(state)
    return net, found


def to_checkpoint(a2b: str | Path, b2a: str | Path | None, out: str | Path, arch: str | None = None,
                  norm: str | None = None, base_channels: int | None = None, overwrite: bool = False) -> Path:
    """Write official generator weights as a self-describing img2img checkpoint at ``out``.

    A ResNet becomes a ``cyclegan`` checkpoint (``a2b`` is G_A, ``b2a`` the
    optional G_B), a U-Net a ``pix2pix`` one.  It holds the generators only
    (no discriminators, optimiser state or step): it translates and exports,
    but cannot resume training.
    """
    from img2img.config import RunConfig, TrainConfig  # noqa: PLC0415
    from img2img.models.cyclegan import CycleGANConfig  # noqa: PLC0415 - the models import the networks
    from img2img.models.pix2pix import Pix2PixConfig  # noqa: PLC0415

    out = Path(out)
    checkpoint.check_replaceable(out, "--out", overwrite)
    checkpoint.refuse_replacing(out, "--out", {"WEIGHTS": a2b, "WEIGHTS_B": b2a})
    net_ab, found = load_generator(a2b, arch, norm, base_channels, "WEIGHTS")
    networks = {}
    if found.kind == "resnet":
        options: Any = CycleGANConfig(
            generator=found.arch if found.arch in ARCHITECTURES else "auto", n_blocks=found.depth,
            base_channels=found.base_channels, norm=found.norm, dropout=found.dropout,
            channels_a=found.in_channels, channels_b=found.out_channels, bits_a=8, bits_b=8, size=256,
            load_size=286, lambda_identity=0.5 if found.in_channels == found.out_channels else 0.0)
        networks["g_ab"] = net_ab.state_dict()
        if b2a is not None:
            net_ba, found_ba = load_generator(b2a, arch, norm, base_channels, "WEIGHTS_B")
            expected = (found.kind, found.depth, found.norm, found.base_channels, found.out_channels,
                        found.in_channels)
            if (found_ba.kind, found_ba.depth, found_ba.norm, found_ba.base_channels, found_ba.in_channels,
                    found_ba.out_channels) != expected:
                raise UserError(f"WEIGHTS_B: {b2a} holds an {found_ba.describe()}, which is not the reverse of "
                                f"{a2b}'s {found.describe()}")
            networks["g_ba"] = net_ba.state_dict()
        model = "cyclegan"
    else:
        if b2a is not None:
            raise UserError(f"WEIGHTS_B: {a2b} holds a U-Net (pix2pix), which translates one way only")
        size = 2 ** found.depth
        options = Pix2PixConfig(generator=found.arch if found.arch in ARCHITECTURES else "auto",
                                num_downs=found.depth, base_channels=found.base_channels, norm=found.norm,
                                channels_a=found.in_channels, channels_b=found.out_channels, bits_a=8, bits_b=8,
                                size=size, load_size=round(size * 286 / 256))
        networks["g"] = net_ab.state_dict()
        model = "pix2pix"
    run = RunConfig(model, TrainConfig(), options)
    payload = {"format": checkpoint.FORMAT, "format_version": checkpoint.FORMAT_VERSION, "config": run.to_dict(),
               "step": 0, "networks": networks, "imported_from": [str(a2b)] + ([str(b2a)] if b2a else [])}
    out.parent.mkdir(parents=True, exist_ok=True)
    return checkpoint.atomic_save(payload, out)
