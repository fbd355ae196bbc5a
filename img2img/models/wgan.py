"""WGAN (Arjovsky et al. 2017): a critic kept Lipschitz by clipping its weights, trained with RMSprop.

The critic D estimates the Wasserstein-1 distance as E[D(x)] − E[D(G(z))];
it minimises the negative of that, and after each update every weight is
clipped to [−c, c] (Algorithm 1; c = ``--clip`` 0.01).  G updates once
every ``--n-critic`` 5 critic updates and minimises −E[D(G(z))].  RMSprop
with learning rate 5e-5 and batch 64, as the paper (momentum-based
optimisers made the critic unstable there).  The networks are DCGAN's, as
in the paper's experiments.  Beside it, ``--loss wgan-gp`` of the MNIST GAN
and DCGAN is the gradient-penalty form (Gulrajani et al. 2017).  Left out:
the paper's 100 critic updates for the first 25 and every 500th generator
update.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from img2img.config import TrainConfig, option
from img2img.losses import wasserstein_discriminator, wasserstein_generator
from img2img.models.base import Logs, Phase
from img2img.models.mnist_gan import ConvOptions, DigitsConfig, NoiseModel
from img2img.nn import init_weights
from img2img.nn.dcgan import DCGANDiscriminator, DCGANGenerator


@dataclass(frozen=True)
class WganConfig(ConvOptions, DigitsConfig):
    clip: float = option(0.01, "Every critic weight is clipped to [-c, c] after each update.", min=0, min_open=True)
    n_critic: int = option(5, "The generator updates once every N critic updates.", min=1, max=100)


class Wgan(NoiseModel):
    """WGAN: weight-clipped critic, RMSprop, five critic updates per generator update (Arjovsky et al. 2017)."""

    name = "wgan"
    order = 2
    Config = WganConfig
    fixed_size = None
    phases = (Phase("d", ("d",)), Phase("g", ("g",)))
    train_defaults = dict(NoiseModel.train_defaults, steps=5000, batch_size=64, lr=5e-5, ema_decay=0.0)

    def __init__(self, config: WganConfig) -> None:
        super().__init__(config)
        self.nets["g"] = init_weights(DCGANGenerator(config.noise_dim, config.channels, config.size,
                                                     config.base_channels))
        self.nets["d"] = init_weights(DCGANDiscriminator(config.channels, config.size, config.d_base_channels))

    def make_optimizer(self, phase: Phase, params: list[nn.Parameter], train: TrainConfig) -> torch.optim.Optimizer:
        """RMSprop with the run's --lr (5e-5 by default), as the paper."""
        return torch.optim.RMSprop(params, lr=train.lr)

    @torch.no_grad()
    def after_phase(self, phase: str) -> None:
        if phase == "d":
            for parameter in self.nets["d"].parameters():
                parameter.clamp_(-self.config.clip, self.config.clip)

    def phase_loss(self, phase: str, nets: Mapping[str, nn.Module], batch: tuple[Tensor, Tensor],
                   carry: dict[str, Any]) -> tuple[Tensor, Logs]:
        real = batch[0]
        if phase == "d":
            with torch.no_grad():
                fake = nets["g"](self.noise(real.shape[0], real.device))
            real_scores, fake_scores = nets["d"](real).float(), nets["d"](fake).float()
            loss = wasserstein_discriminator(real_scores, fake_scores)
            return loss, {"d_loss": loss.detach(), "wasserstein": (real_scores.mean() - fake_scores.mean()).detach()}
        if phase == "g":
            loss = wasserstein_generator(nets["d"](nets["g"](self.noise(real.shape[0], real.device))).float())
            return loss, {"g_loss": loss.detach()}
        raise KeyError(phase)
