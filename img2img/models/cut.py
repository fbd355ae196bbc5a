"""CUT and FastCUT: contrastive unpaired translation (Park et al. 2020), one way, one generator.

G: a → b (anti-aliased ResNet, :class:`~img2img.nn.cut.CutResnetGenerator`),
D judges domain b (anti-aliased 70×70 PatchGAN), and F, a two-layer MLP per
encoder layer, projects patches of G's encoder features for PatchNCE.  As in
the official code (taesungp/contrastive-unpaired-translation, ``cut_model.py``):

    L_D = ½ [(D(b) − 1)² + D(G(a))²]                                      (LSGAN)
    L_G = λ_GAN (D(G(a)) − 1)² + λ_NCE · PatchNCE(G(a), a)                (Eq. 5)
          [CUT:  + λ_NCE · PatchNCE(G(b), b), the two NCE terms averaged]

PatchNCE(y, x) = (1/L) Σ_l mean over patches of ℓ(F(G_enc^l(y)), F(G_enc^l(x)))
over the encoder layers 0, 4, 8, 12 and 16, 256 patches each, τ = 0.07
(:func:`~img2img.nn.cut.patch_nce_loss`).

- CUT: λ_NCE = 1 with the identity term (NCE on G(b) against b).
- FastCUT: λ_NCE = 10, no identity term, and flip-equivariance: with
  probability ½ a step translates the horizontally flipped image, and its
  features are flipped back before they are compared with the input's.

No image pool; Adam 2e-4 (0.5, 0.999) for D, and for G and F together (one
Adam over both is the official two with the same settings); Xavier
initialisation with gain 0.02.  A step updates D first, on fakes of the
generator before its update, then G and F, as the official
``optimize_parameters`` does; D's phase computes those fakes without a graph
and G's phase computes them again with one (the same images: instance norm
is per image).  Schedules: CUT 200 + 200 epochs, FastCUT 150 + 50.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from img2img.config import option
from img2img.errors import UserError
from img2img.losses import LOSSES, get_loss
from img2img.models.base import Logs, Phase, evaluating
from img2img.models.pix2pix import as_rgb
from img2img.models.unpaired import UnpairedData, UnpairedModel
from img2img.nn.cut import CutPatchDiscriminator, CutResnetGenerator, PatchSampleMLP, patch_nce_loss, xavier_init
from img2img.nn.resnet import RESNET_BLOCKS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CutConfig(UnpairedData):
    generator: str = option("resnet_9blocks", "Generator: resnet_9blocks or resnet_6blocks.",
                            choices=tuple(RESNET_BLOCKS))
    base_channels: int = option(64, "Generator base width.", flag="--ngf", min=1, max=4096)  # ngf
    d_base_channels: int = option(64, "Discriminator base width.", flag="--ndf", min=1, max=4096)  # ndf
    n_layers: int = option(3, "PatchGAN layers (3: 70×70 patches).", min=1, max=16)
    loss: str = option("lsgan", "Adversarial loss.", choices=tuple(LOSSES))
    lambda_gan: float = option(1.0, "Weight λ_GAN of the adversarial term.", min=0)
    lambda_nce: float = option(1.0, "Weight λ_NCE of the PatchNCE terms.", min=0)
    nce_idt: bool = option(True, "The identity PatchNCE term on G(b) against b (CUT; FastCUT leaves it out).")
    flip_equivariance: bool = option(False, "Translate a flipped image half the time and compare its features "
                                            "flipped back (FastCUT).")
    num_patches: int = option(256, "Patches sampled per layer for PatchNCE.", min=1)
    nce_temperature: float = option(0.07, "Temperature τ of PatchNCE.", flag="--nce-t", min=0, min_open=True)
    netf_channels: int = option(256, "Width of F's two-layer MLP heads.", flag="--netf-nc", min=1, max=4096)
    nce_layers: tuple[int, ...] = (0, 4, 8, 12, 16)  # indices into G's module sequence (the encoder part)


@dataclass(frozen=True)
class FastCutConfig(CutConfig):
    lambda_nce: float = option(10.0, "Weight λ_NCE of the PatchNCE term.", min=0)
    nce_idt: bool = option(False, "The identity PatchNCE term on G(b) against b (CUT; FastCUT leaves it out).")
    flip_equivariance: bool = option(True, "Translate a flipped image half the time and compare its features "
                                           "flipped back (FastCUT).")


class CUT(UnpairedModel):
    """CUT (one-way: anti-aliased ResNet G, PatchGAN D, LSGAN + PatchNCE with identity) on two unpaired folders."""

    name = "cut"
    order = 40
    Config = CutConfig
    phases = (Phase("d", ("d",)), Phase("g", ("g", "f")))
    inference_networks = ("g",)
    translation_networks = {"a2b": "g"}
    epoch_schedule = (400, 200)  # 200 epochs at the full rate, 200 decaying (official n_epochs, n_epochs_decay)

    def __init__(self, config: CutConfig) -> None:
        super().__init__(config)
        if config.channels_a is None or config.channels_b is None:
            raise ValueError("resolve the configuration first (CUT.resolve)")
        self.adversarial = get_loss(config.loss)
        g = CutResnetGenerator(config.channels_a, config.channels_b, config.base_channels,
                               RESNET_BLOCKS[config.generator])
        self.nets["g"] = xavier_init(g)
        self.nets["d"] = xavier_init(CutPatchDiscriminator(config.channels_b, config.d_base_channels,
                                                           config.n_layers))
        self.nets["f"] = xavier_init(PatchSampleMLP(g.layer_channels(config.nce_layers), config.netf_channels))

    @classmethod
    def check_size(cls, size: int) -> None:
        if size % 4 or size < 32:
            raise UserError(f"--size: {size} must be a multiple of 4 and at least 32 (the PatchGAN's last maps "
                            "need more than one pixel)")

    @classmethod
    def resolve(cls, config: CutConfig) -> CutConfig:
        """As the unpaired models, except that both domains get the same channels: G encodes its own outputs
        for PatchNCE, so it must take images of domain b (the official code reads every image as RGB)."""
        cls.check_size(config.size)
        given = (config.channels_a, config.channels_b)
        config = cls.resolve_data(config)
        if config.channels_a != config.channels_b:
            if None not in given:
                raise UserError(f"--channels-a ({config.channels_a}) and --channels-b ({config.channels_b}) must be "
                                f"equal for {cls.name}: its generator encodes its own outputs")
            channels = given[0] or given[1] or max(config.channels_a, config.channels_b)
            log.info("%s: both domains read as %d-channel images (G encodes its own outputs)", cls.name, channels)
            config = replace(config, channels_a=channels, channels_b=channels)
        return config

    # -- training ---------------------------------------------------------------------------------------
    def _flipped(self, carry: dict[str, Any], device: torch.device) -> Tensor | None:
        """Whether this step translates flipped images (FastCUT): a boolean on the images' device, drawn there once
        per step (so that no choice is made in Python: the step can be one CUDA graph); None without it."""
        if not self.config.flip_equivariance:
            return None
        if "flipped" not in carry:
            carry["flipped"] = torch.rand((), device=device) < 0.5
        return carry["flipped"]

    @staticmethod
    def _flip(images: Tensor, flipped: Tensor | None) -> Tensor:
        """``images`` mirrored left to right where ``flipped`` says so."""
        return images if flipped is None else torch.where(flipped, images.flip(3), images)

    def _inputs(self, real_a: Tensor, real_b: Tensor, flipped: Tensor | None) -> Tensor:
        """What G translates in a step: a (and b, for the identity term), flipped when the step says so."""
        return self._flip(torch.cat([real_a, real_b]) if self.config.nce_idt else real_a, flipped)

    def nce_loss(self, nets: Mapping[str, nn.Module], source: Tensor, output: Tensor,
                 flipped: Tensor | None) -> Tensor:
        """PatchNCE(output, source), averaged over the layers (× λ_NCE)."""
        config, layers = self.config, self.config.nce_layers
        # the output was made from the flipped source when the step flips: its features are flipped back into place
        queries = [self._flip(feature, flipped) for feature in nets["g"](output, layers)]
        with torch.no_grad():  # the keys are detached in the loss: no graph needed on their side
            keys, locations = nets["f"](nets["g"](source, layers), config.num_patches)
        queries, _ = nets["f"](queries, config.num_patches, locations)
        total = sum(patch_nce_loss(q, k, source.shape[0], config.nce_temperature).mean() for q, k in zip(queries, keys))
        return total * config.lambda_nce / len(layers)

    def phase_loss(self, phase: str, nets: Mapping[str, nn.Module], batch: dict[str, Tensor],
                   carry: dict[str, Any]) -> tuple[Tensor, Logs]:
        real_a, real_b = batch["a"], batch["b"]
        config = self.config
        flipped = self._flipped(carry, real_a.device)
        if phase == "d":
            with torch.no_grad():
                fake_b = nets["g"](self._flip(real_a, flipped))
            loss, parts = self.adversarial.discriminator_loss(nets["d"], real_b, fake_b)
            loss = 0.5 * loss
            return loss, {"d_loss": loss.detach(), **parts}
        if phase == "g":
            fake = nets["g"](self._inputs(real_a, real_b, flipped))
            fake_b = fake[:real_a.shape[0]]
            gan = self.adversarial.generator_loss(nets["d"](fake_b)) * config.lambda_gan
            logs: Logs = {"g_gan": gan.detach()}
            nce = self.nce_loss(nets, real_a, fake_b, flipped)
            logs["nce"] = nce.detach()
            if config.nce_idt:
                nce_identity = self.nce_loss(nets, real_b, fake[real_a.shape[0]:], flipped)
                logs["nce_idt"] = nce_identity.detach()
                nce = (nce + nce_identity) * 0.5
            loss = gan + nce
            logs["g_loss"] = loss.detach()
            return loss, logs
        raise KeyError(phase)

    @torch.no_grad()
    def sample_grid(self, inputs: dict[str, Tensor]) -> tuple[Tensor, int]:
        """Each row: real_a | fake_b | real_b [| G(real_b), when G can take b's images]."""
        g = self.nets["g"]
        with evaluating(g):
            columns = [inputs["a"], g(inputs["a"]).float(), inputs["b"]]
            if self.config.channels_a == self.config.channels_b:  # else G cannot take b's images
                columns.append(g(inputs["b"]).float())
        return torch.stack([as_rgb(c) for c in columns], 1).flatten(0, 1), len(columns)


class FastCUT(CUT):
    """FastCUT (CUT with λ_NCE 10, no identity term, flip-equivariance; half its cost) on two unpaired folders."""

    name = "fastcut"
    order = 41
    Config = FastCutConfig
    epoch_schedule = (200, 50)  # official FastCUT: 150 epochs at the full rate, 50 decaying
