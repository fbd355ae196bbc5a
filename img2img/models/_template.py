"""A template model: copy this file to ``models/<name>.py``, rename, and fill in (cite the paper here).

This one is a complete, working one-way translation GAN, kept small: G maps
domain a to b (a ResNet generator), D judges domain b (a PatchGAN), and G
minimises LSGAN + λ‖G(b) − b‖₁ (an identity term, so that it keeps what
needs no change).  The file is the whole model: defining a class with a
``name`` registers it, ``img2img train <name>`` is generated from its
``Config``, and eval, bench, translate and export read what it declares.
Files whose names start with an underscore (this one) are not registered;
``tests/test_models.py`` trains it all the same, so it stays correct.

The contract, in the order a reader meets it (see ``models/base.py``):

- ``Config``: a frozen dataclass; fields made with ``option(default, help,
  ...)`` become command-line options (flag, choices, range), plain fields are
  settings resolved from the data.  Data fields come from ``UnpairedData``.
- ``phases``: the optimiser steps of one training step and the networks each
  updates; ``phase_loss`` returns each phase's loss.  The trainer freezes the
  rest, runs autocast, DDP, checkpoints and resume.
- ``train_defaults``, ``epoch_schedule``: training defaults of this model.
- ``evaluation``, ``default_metric``: the protocol of ``img2img eval``.
- ``synthetic``: the configuration and batch ``img2img bench`` times.
- ``translation_networks``: what a translation takes and which network does it
  (override ``translation`` for a conditional generator).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from img2img.config import option
from img2img.errors import UserError
from img2img.losses import LOSSES, get_loss
from img2img.models.base import Logs, Phase, evaluating
from img2img.models.unpaired import UnpairedData, UnpairedModel
from img2img.nn import init_weights
from img2img.nn.patchgan import PatchDiscriminator
from img2img.nn.resnet import ResnetGenerator


@dataclass(frozen=True)
class TemplateConfig(UnpairedData):
    base_channels: int = option(64, "Generator base width.", flag="--ngf", min=1)
    d_base_channels: int = option(64, "Discriminator base width.", flag="--ndf", min=1)
    n_blocks: int = option(6, "Residual blocks of the generator.", min=0)
    loss: str = option("lsgan", "Adversarial loss.", choices=tuple(LOSSES))
    lambda_identity: float = option(5.0, "Weight λ of the identity term ‖G(b) − b‖₁.", min=0)


class TemplateGAN(UnpairedModel):
    """Template: a one-way translation GAN (ResNet G, PatchGAN D, LSGAN + identity) on two unpaired folders."""

    name = "template"
    Config = TemplateConfig
    phases = (Phase("g", ("g",)), Phase("d", ("d",)))
    inference_networks = ("g",)
    translation_networks = {"a2b": "g"}  # one way: translate, export and eval offer a2b only
    default_metric = "fid_a2b"

    def __init__(self, config: TemplateConfig) -> None:
        super().__init__(config)
        if config.channels_a is None or config.channels_b is None:
            raise ValueError("resolve the configuration first (TemplateGAN.resolve)")
        self.adversarial = get_loss(config.loss)
        self.nets["g"] = init_weights(ResnetGenerator(config.channels_a, config.channels_b, config.base_channels,
                                                      config.n_blocks))
        self.nets["d"] = init_weights(PatchDiscriminator(config.channels_b, config.d_base_channels, 3, "instance"))

    @classmethod
    def check_size(cls, size: int) -> None:
        if size % 4 or size < 32:
            raise UserError(f"--size: {size} must be a multiple of 4 and at least 32")

    @classmethod
    def resolve(cls, config: TemplateConfig) -> TemplateConfig:
        cls.check_size(config.size)
        config = cls.resolve_data(config)
        if config.lambda_identity and config.channels_a != config.channels_b:
            return replace(config, lambda_identity=0.0)  # G cannot take b's images
        return config

    def phase_loss(self, phase: str, nets: Mapping[str, nn.Module], batch: dict[str, Tensor],
                   carry: dict[str, Any]) -> tuple[Tensor, Logs]:
        real_a, real_b = batch["a"], batch["b"]
        if phase == "g":
            fake_b = nets["g"](real_a)
            carry["fake_b"] = fake_b.detach()  # what the d phase judges
            gan = self.adversarial.generator_loss(nets["d"](fake_b))
            loss, logs = gan, {"g_gan": gan.detach()}
            if self.config.lambda_identity > 0:
                identity = F.l1_loss(nets["g"](real_b).float(), real_b.float()) * self.config.lambda_identity
                loss, logs["identity"] = loss + identity, identity.detach()
            return loss, {**logs, "g_loss": loss.detach()}
        if phase == "d":
            fake_b = carry.get("fake_b")
            if fake_b is None:
                with torch.no_grad():
                    fake_b = nets["g"](real_a)
            loss, parts = self.adversarial.discriminator_loss(nets["d"], real_b, fake_b)
            return 0.5 * loss, {"d_loss": 0.5 * loss.detach()}
        raise KeyError(phase)

    @torch.no_grad()
    def sample_grid(self, inputs: dict[str, Tensor]) -> tuple[Tensor, int]:
        """Each row: real_a | fake_b | real_b."""
        from img2img.models.pix2pix import as_rgb  # noqa: PLC0415

        with evaluating(self.nets["g"]):
            fake_b = self.nets["g"](inputs["a"]).float()
        columns = [inputs["a"], fake_b, inputs["b"]]
        return torch.stack([as_rgb(c) for c in columns], 1).flatten(0, 1), len(columns)
