"""DiscoGAN: discovering cross-domain relations without pairs (Kim et al. 2017).

G_ab, G_ba: convolutional encoder-decoders; D_a, D_b: strided classifiers
that also return their intermediate features.  Losses as in the paper's
official code (SKTBrain/DiscoGAN ``discogan_image_translation.py``), with
``d_b`` judging domain b:

    L_G = (0.1 L_GAN(G_ab) + 0.9 L_FM(D_b)) (1 - r) + r ‖G_ba(G_ab(a)) - a‖²
        + (0.1 L_GAN(G_ba) + 0.9 L_FM(D_a)) (1 - r) + r ‖G_ab(G_ba(b)) - b‖²
    L_D = ½ BCE(D(real), 1) + ½ BCE(D(fake), 0), for D_a and D_b

L_FM = Σ_layers mean((E[f(real)] - E[f(fake)])²) matches the batch means of
the discriminator's features.  The reconstruction weight r is
``default_rate`` (0.5), or ``starting_rate`` (0.01) for the first
``curriculum_steps`` steps: the paper code's schedule (10,000 steps there;
off by default here).  As in that code, the discriminators take one step
every ``update_interval`` steps and the generators the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from img2img.config import MAX_SIDE, option
from img2img.errors import UserError
from img2img.losses import LOSSES, get_loss
from img2img.models.base import Logs, Phase
from img2img.models.unpaired import UnpairedData, UnpairedModel
from img2img.nn import init_weights
from img2img.nn.discogan import DiscoDiscriminator, DiscoGenerator


@dataclass(frozen=True)
class DiscoGANConfig(UnpairedData):
    size: int = option(64, "Image side (a power of two).", min=16, max=MAX_SIDE)
    base_channels: int = option(64, "Generator base width.", flag="--ngf", min=1, max=4096)
    d_base_channels: int = option(64, "Discriminator base width.", flag="--ndf", min=1, max=4096)
    loss: str = option("non-saturating", "Adversarial loss.", choices=tuple(LOSSES))  # the paper code's BCE
    gan_weight: float = 0.1  # of the GAN term within the adversarial part; the rest is feature matching
    default_rate: float = option(0.5, "Reconstruction weight after.", min=0, max=1)  # weight r of the reconstruction
    starting_rate: float = option(0.01, "Reconstruction weight at first.", min=0, max=1)
    curriculum_steps: int = option(0, "Steps with the low starting reconstruction rate first (the paper code: "
                                      "10000).", min=0)
    update_interval: int = option(3, "The discriminators step once in this many steps, the generators the others.",
                                  min=2)
    weight_decay: float = 1e-5


def feature_matching(real: list[Tensor], fake: list[Tensor]) -> Tensor:
    """Σ_layers mean over units of (batch-mean real feature - batch-mean fake feature)²."""
    return sum((r.float().mean(0) - f.float().mean(0)).pow(2).mean() for r, f in zip(real, fake))


class DiscoGAN(UnpairedModel):
    """DiscoGAN (encoder-decoder G, feature-matching D, BCE + MSE reconstruction) on two unpaired folders."""

    name = "discogan"
    order = 30
    Config = DiscoGANConfig
    phases = (Phase("g", ("g_ab", "g_ba")), Phase("d", ("d_a", "d_b")))

    def __init__(self, config: DiscoGANConfig) -> None:
        super().__init__(config)
        if config.channels_a is None or config.channels_b is None:
            raise ValueError("resolve the configuration first (DiscoGAN.resolve)")
        self.adversarial = get_loss(config.loss)
        size, width = config.size, config.base_channels
        self.nets["g_ab"] = init_weights(DiscoGenerator(config.channels_a, config.channels_b, size, width))
        self.nets["g_ba"] = init_weights(DiscoGenerator(config.channels_b, config.channels_a, size, width))
        self.nets["d_a"] = init_weights(DiscoDiscriminator(config.channels_a, size, config.d_base_channels))
        self.nets["d_b"] = init_weights(DiscoDiscriminator(config.channels_b, size, config.d_base_channels))

    @classmethod
    def check_size(cls, size: int) -> None:
        if size < 16 or size & (size - 1):
            raise UserError(f"--size: {size} must be a power of two of at least 16 for DiscoGAN")

    @classmethod
    def resolve(cls, config: DiscoGANConfig) -> DiscoGANConfig:
        cls.check_size(config.size)
        if config.update_interval < 2:
            raise UserError("--update-interval must be at least 2 (one discriminator step in that many)")
        return cls.resolve_data(config)

    def phases_at(self, step: int) -> tuple[Phase, ...]:
        return (self.phases[1],) if step % self.config.update_interval == 0 else (self.phases[0],)

    def graph_key(self, step: int) -> tuple[Any, ...]:
        return (*super().graph_key(step), self.reconstruction_rate(step))

    def optimizer_options(self) -> dict[str, Any]:
        return {"weight_decay": self.config.weight_decay}

    def reconstruction_rate(self, step: int) -> float:
        config = self.config
        return config.starting_rate if step < config.curriculum_steps else config.default_rate

    def phase_loss(self, phase: str, nets: Mapping[str, nn.Module], batch: dict[str, Tensor],
                   carry: dict[str, Any]) -> tuple[Tensor, Logs]:
        real_a, real_b = batch["a"], batch["b"]
        if phase == "g":
            rate = self.reconstruction_rate(carry.get("step", 0))
            fake_b, fake_a = nets["g_ab"](real_a), nets["g_ba"](real_b)
            rec_a, rec_b = nets["g_ba"](fake_b), nets["g_ab"](fake_a)
            total = real_a.new_zeros((), dtype=torch.float32)
            logs: Logs = {}
            for domain, real, fake, rec, original in (("b", real_b, fake_b, rec_a, real_a),
                                                      ("a", real_a, fake_a, rec_b, real_b)):
                d = nets[f"d_{domain}"]
                with torch.no_grad():
                    _, real_features = d.forward_with_features(real)
                fake_scores, fake_features = d.forward_with_features(fake)
                gan = self.adversarial.generator_loss(fake_scores)
                matching = feature_matching(real_features, fake_features)
                reconstruction = F.mse_loss(rec.float(), original.float())
                weight = self.config.gan_weight
                total = total + (weight * gan + (1 - weight) * matching) * (1 - rate) + reconstruction * rate
                logs[f"g_gan_{domain}"], logs[f"fm_{domain}"] = gan.detach(), matching.detach()
                logs[f"rec_{'a' if domain == 'b' else 'b'}"] = reconstruction.detach()
            logs["g_loss"] = total.detach()
            return total, logs
        if phase == "d":
            with torch.no_grad():
                fake_b, fake_a = nets["g_ab"](real_a), nets["g_ba"](real_b)
            loss_a, _ = self.adversarial.discriminator_loss(nets["d_a"], real_a, fake_a)
            loss_b, _ = self.adversarial.discriminator_loss(nets["d_b"], real_b, fake_b)
            loss = 0.5 * (loss_a + loss_b)
            return loss, {"d_loss": loss.detach()}
        raise KeyError(phase)
