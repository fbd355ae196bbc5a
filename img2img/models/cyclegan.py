"""CycleGAN: unpaired translation with cycle consistency (Zhu et al. 2017).

G_ab: a → b and G_ba: b → a (ResNet generators), D_a and D_b (70×70
PatchGANs; ``d_b`` judges domain b).  The generators minimise (Eq. 3)

    L = L_GAN(G_ab, D_b) + L_GAN(G_ba, D_a) + λ_a ‖G_ba(G_ab(a)) - a‖_1 + λ_b ‖G_ab(G_ba(b)) - b‖_1
        + λ_id (λ_b ‖G_ab(b) - b‖_1 + λ_a ‖G_ba(a) - a‖_1)      (identity term, Sec. 5.2)

with the least-squares GAN loss by default.  Each discriminator's loss is
halved and sees fakes from an image pool of 50 (:mod:`img2img.nn.pool`).

Without batch norm (the default instance norm), every network maps each
image on its own, so calls that do not depend on each other share one
batch: G_ab(a, b) gives the fake and the identity image together, G_ba(b,
G_ab(a), a) the fake, the reconstruction and the identity, and each D scores
real and pooled fake images in one call.  The losses are the same; on a GPU
at batch 1 the kernels are fuller and fewer (BENCHMARKS.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from img2img.config import option
from img2img.errors import UserError
from img2img.losses import LOSSES, get_loss
from img2img.models.base import Logs, Phase
from img2img.models.unpaired import UnpairedData, UnpairedModel
from img2img.nn import init_weights
from img2img.nn.norm import NORMS
from img2img.nn.patchgan import PatchDiscriminator
from img2img.nn.pool import ImagePool
from img2img.nn.resnet import RESNET_BLOCKS, ResnetGenerator

log = logging.getLogger(__name__)
GENERATORS = ("auto", *RESNET_BLOCKS)


def resnet_blocks(generator: str, size: int) -> int:
    """Residual blocks of the generator: the named official one's, or for ``auto`` 9 above 128 pixels, else 6
    (the paper's choice for 256² and 128² images)."""
    return RESNET_BLOCKS.get(generator, 9 if size > 128 else 6)


@dataclass(frozen=True)
class CycleGANConfig(UnpairedData):
    generator: str = option("auto", "resnet_9blocks, resnet_6blocks, or auto: 9 blocks above 128 pixels, else 6.",
                            choices=GENERATORS)
    n_blocks: int | None = None  # resolved from generator and size
    base_channels: int = option(64, "Generator base width.", flag="--ngf", min=1, max=4096)  # ngf
    d_base_channels: int = option(64, "Discriminator base width.", flag="--ndf", min=1, max=4096)  # ndf
    n_layers: int = option(3, "PatchGAN layers (3: 70×70 patches).", min=1, max=16)
    norm: str = option("instance", "Normalisation layers.", choices=tuple(NORMS))
    dropout: bool = False
    loss: str = option("lsgan", "Adversarial loss.", choices=tuple(LOSSES))
    lambda_a: float = option(10.0, "Weight of the a→b→a cycle term.", min=0)
    lambda_b: float = option(10.0, "Weight of the b→a→b cycle term.", min=0)
    lambda_identity: float = option(0.5, "Identity term, relative to the cycle weights (0: off).", min=0)
    pool_size: int = option(50, "Generated images kept for D (0: none).", min=0)


class CycleGAN(UnpairedModel):
    """CycleGAN (ResNet G, PatchGAN D, LSGAN + cycle + identity) on two unpaired folders."""

    name = "cyclegan"
    order = 20
    Config = CycleGANConfig
    phases = (Phase("g", ("g_ab", "g_ba")), Phase("d", ("d_a", "d_b")))

    def __init__(self, config: CycleGANConfig) -> None:
        super().__init__(config)
        if config.channels_a is None or config.channels_b is None or config.n_blocks is None:
            raise ValueError("resolve the configuration first (CycleGAN.resolve)")
        self.adversarial = get_loss(config.loss)
        width, norm = config.base_channels, config.norm
        self.nets["g_ab"] = init_weights(ResnetGenerator(config.channels_a, config.channels_b, width,
                                                         config.n_blocks, norm, config.dropout))
        self.nets["g_ba"] = init_weights(ResnetGenerator(config.channels_b, config.channels_a, width,
                                                         config.n_blocks, norm, config.dropout))
        self.nets["d_a"] = init_weights(PatchDiscriminator(config.channels_a, config.d_base_channels,
                                                           config.n_layers, norm))
        self.nets["d_b"] = init_weights(PatchDiscriminator(config.channels_b, config.d_base_channels,
                                                           config.n_layers, norm))
        self.pool_a, self.pool_b = ImagePool(config.pool_size), ImagePool(config.pool_size)
        # each image's output depends on it alone (no batch norm): independent calls may share a batch
        self.joint = config.norm != "batch"

    @classmethod
    def resolve(cls, config: CycleGANConfig) -> CycleGANConfig:
        if config.generator not in GENERATORS:
            raise UserError(f"--generator must be one of {', '.join(GENERATORS)}")
        if config.norm not in NORMS:
            raise UserError(f"--norm must be one of {', '.join(NORMS)}")
        cls.check_size(config.size)
        config = cls.resolve_data(config)
        blocks = resnet_blocks(config.generator, config.size)
        identity = config.lambda_identity
        if identity and config.channels_a != config.channels_b:
            log.warning("identity loss off: domain a has %d channels and b %d, so G_ab cannot take b's images",
                        config.channels_a, config.channels_b)
            identity = 0.0
        return replace(config, n_blocks=blocks, lambda_identity=identity)

    @classmethod
    def synthetic(cls, size: int, batch_size: int, generator: torch.Generator) -> tuple[CycleGANConfig, Any]:
        config, batch = super().synthetic(size, batch_size, generator)
        return replace(config, n_blocks=resnet_blocks("auto", size)), batch

    @classmethod
    def check_size(cls, size: int) -> None:
        if size % 4:
            raise UserError(f"--size: {size} must be a multiple of 4 (two downsamplings)")

    def phase_loss(self, phase: str, nets: Mapping[str, nn.Module], batch: dict[str, Tensor],
                   carry: dict[str, Any]) -> tuple[Tensor, Logs]:
        real_a, real_b = batch["a"], batch["b"]
        config = self.config
        if phase == "g":
            use_identity = config.lambda_identity > 0
            if self.joint:
                n = len(real_a)
                ab = nets["g_ab"](torch.cat([real_a, real_b]) if use_identity else real_a)
                fake_b = ab[:n]
                ba = nets["g_ba"](torch.cat([real_b, fake_b, real_a] if use_identity else [real_b, fake_b]))
                fake_a, rec_a = ba[:n], ba[n:2 * n]
                rec_b = nets["g_ab"](fake_a)
                same_b, same_a = (ab[n:], ba[2 * n:]) if use_identity else (None, None)
            else:
                fake_b = nets["g_ab"](real_a)
                fake_a = nets["g_ba"](real_b)
                rec_a, rec_b = nets["g_ba"](fake_b), nets["g_ab"](fake_a)
                same_b, same_a = (nets["g_ab"](real_b), nets["g_ba"](real_a)) if use_identity else (None, None)
            carry["fake_a"], carry["fake_b"] = fake_a.detach(), fake_b.detach()
            gan_ab = self.adversarial.generator_loss(nets["d_b"](fake_b))
            gan_ba = self.adversarial.generator_loss(nets["d_a"](fake_a))
            cycle_a = F.l1_loss(rec_a.float(), real_a.float()) * config.lambda_a
            cycle_b = F.l1_loss(rec_b.float(), real_b.float()) * config.lambda_b
            loss = gan_ab + gan_ba + cycle_a + cycle_b
            logs = {"g_gan_ab": gan_ab.detach(), "g_gan_ba": gan_ba.detach(), "cycle_a": cycle_a.detach(),
                    "cycle_b": cycle_b.detach()}
            if use_identity:
                idt_b = F.l1_loss(same_b.float(), real_b.float()) * config.lambda_b
                idt_a = F.l1_loss(same_a.float(), real_a.float()) * config.lambda_a
                identity = (idt_a + idt_b) * config.lambda_identity
                loss = loss + identity
                logs["identity"] = identity.detach()
            logs["g_loss"] = loss.detach()
            return loss, logs
        if phase == "d":
            fake_a, fake_b = carry.get("fake_a"), carry.get("fake_b")
            if fake_a is None or fake_b is None:
                with torch.no_grad():
                    fake_b, fake_a = nets["g_ab"](real_a), nets["g_ba"](real_b)
            loss_b, parts_b = self.adversarial.discriminator_loss(nets["d_b"], real_b, self.pool_b.query(fake_b),
                                                                  joint=self.joint)
            loss_a, parts_a = self.adversarial.discriminator_loss(nets["d_a"], real_a, self.pool_a.query(fake_a),
                                                                  joint=self.joint)
            loss = 0.5 * (loss_a + loss_b)
            return loss, {"d_loss": loss.detach(), "d_a": 0.5 * loss_a.detach(), "d_b": 0.5 * loss_b.detach()}
        raise KeyError(phase)

    def extra_state(self) -> dict[str, Any]:
        return {"pool_a": self.pool_a.state(), "pool_b": self.pool_b.state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        device = next(self.parameters()).device
        self.pool_a.load(state.get("pool_a", torch.zeros(0)), device)
        self.pool_b.load(state.get("pool_b", torch.zeros(0)), device)
