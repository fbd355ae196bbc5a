"""Adversarial losses as plain functions, and the registry that selects them by name.

Every loss works on raw discriminator outputs (logits, or critic scores for
WGAN-GP); a probability output ``D(x) = sigmoid(logit)`` is never formed, so
``log D`` is computed stably as ``-softplus(-logit)``.

Conventions (x real, G(z) fake, s = D's raw output):

* discriminator losses sum their real and fake terms; models that follow the
  official pix2pix/CycleGAN code halve that sum themselves;
* generator losses are what the generator minimises.

References: Goodfellow et al. 2014 (minimax and non-saturating), Mao et al.
2017 (least squares), Gulrajani et al. 2017 (WGAN-GP), Lim & Ye 2017 / Miyato
et al. 2018 (hinge).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from img2img.errors import UserError

Critic = Callable[[Tensor], Tensor]


def bce_discriminator(real: Tensor, fake: Tensor) -> Tensor:
    """Binary cross-entropy discriminator loss (Goodfellow et al. 2014, Eq. 1).

    L_D = -E[log D(x)] - E[log(1 - D(G(z)))]
        = E[softplus(-s_real)] + E[softplus(s_fake)]
    """
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def minimax_generator(fake: Tensor) -> Tensor:
    """Saturating minimax generator loss (Goodfellow et al. 2014, Eq. 1).

    G minimises L_G = E[log(1 - D(G(z)))] = -E[softplus(s_fake)].
    Its gradient vanishes when D confidently rejects the fakes.
    """
    return -F.softplus(fake).mean()


def non_saturating_generator(fake: Tensor) -> Tensor:
    """Non-saturating generator loss (Goodfellow et al. 2014, Sec. 3).

    G maximises E[log D(G(z))], i.e. minimises L_G = E[softplus(-s_fake)].
    """
    return F.softplus(-fake).mean()


def least_squares_discriminator(real: Tensor, fake: Tensor) -> Tensor:
    """Least-squares discriminator loss (Mao et al. 2017, Eq. 9 with a=0, b=1).

    L_D = E[(D(x) - 1)^2] + E[D(G(z))^2]   (the paper's 1/2 is left to the model).
    """
    return (real - 1).pow(2).mean() + fake.pow(2).mean()


def least_squares_generator(fake: Tensor) -> Tensor:
    """Least-squares generator loss (Mao et al. 2017, Eq. 9 with c=1).

    L_G = E[(D(G(z)) - 1)^2]
    """
    return (fake - 1).pow(2).mean()


def wasserstein_discriminator(real: Tensor, fake: Tensor) -> Tensor:
    """Wasserstein critic loss without its penalty (Gulrajani et al. 2017, Eq. 3).

    L_D = E[D(G(z))] - E[D(x)]; see :func:`gradient_penalty` for the λ term.
    """
    return fake.mean() - real.mean()


def wasserstein_generator(fake: Tensor) -> Tensor:
    """Wasserstein generator loss: L_G = -E[D(G(z))]."""
    return -fake.mean()


def hinge_discriminator(real: Tensor, fake: Tensor) -> Tensor:
    """Hinge discriminator loss (Lim & Ye 2017; Miyato et al. 2018, Eq. 16).

    L_D = E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]
    """
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def hinge_generator(fake: Tensor) -> Tensor:
    """Hinge generator loss: L_G = -E[D(G(z))]."""
    return -fake.mean()


def gradient_penalty(critic: Critic, real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """WGAN-GP gradient penalty (Gulrajani et al. 2017, Eq. 3), without λ.

    GP = E_x̂[(‖∇_x̂ D(x̂)‖_2 - 1)^2], x̂ = ε x + (1 - ε) G(z), ε ~ U[0, 1] per sample.
    The penalty is differentiable with respect to the critic's parameters
    (``create_graph=True``), so it trains the critic.

    Args:
        critic: maps a batch ``(N, ...)`` to scores ``(N, ...)``.
        real, fake: batches of the same shape ``(N, ...)``.
    """
    epsilon = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype,
                         generator=generator)
    mixed = (epsilon * real.detach() + (1 - epsilon) * fake.detach()).requires_grad_(True)
    scores = critic(mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


@dataclass(frozen=True)
class AdversarialLoss:
    """One adversarial objective: its two halves and, for WGAN-GP, the penalty weight."""

    name: str
    discriminator: Callable[[Tensor, Tensor], Tensor]
    generator: Callable[[Tensor], Tensor]
    gradient_penalty_weight: float = 0.0

    def discriminator_loss(self, critic: Critic, real: Tensor, fake: Tensor,
                           joint: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        """The discriminator's full loss on ``real`` and (detached) ``fake`` inputs, with its parts for logging.

        ``joint``: score both in one call of ``critic`` (one batch of twice the size: fewer, fuller kernels on a
        GPU).  Only for a critic that scores each image on its own (no batch norm), for which it is the same."""
        fake = fake.detach()
        if joint:
            scores = critic(torch.cat([real, fake]))
            real_scores, fake_scores = scores[:len(real)], scores[len(real):]
        else:
            real_scores, fake_scores = critic(real), critic(fake)
        loss = self.discriminator(real_scores.float(), fake_scores.float())
        parts = {"d_real": real_scores.float().mean().detach(), "d_fake": fake_scores.float().mean().detach()}
        if self.gradient_penalty_weight:
            penalty = gradient_penalty(critic, real.float(), fake.float())
            loss = loss + self.gradient_penalty_weight * penalty
            parts["gp"] = penalty.detach()
        return loss, parts

    def generator_loss(self, fake_scores: Tensor) -> Tensor:
        return self.generator(fake_scores.float())


LOSSES: dict[str, AdversarialLoss] = {
    "minimax": AdversarialLoss("minimax", bce_discriminator, minimax_generator),
    "non-saturating": AdversarialLoss("non-saturating", bce_discriminator, non_saturating_generator),
    "lsgan": AdversarialLoss("lsgan", least_squares_discriminator, least_squares_generator),
    "wgan-gp": AdversarialLoss("wgan-gp", wasserstein_discriminator, wasserstein_generator, gradient_penalty_weight=10.0),
    "hinge": AdversarialLoss("hinge", hinge_discriminator, hinge_generator),
}


def get_loss(name: str) -> AdversarialLoss:
    """The adversarial loss called ``name``; a :class:`UserError` naming the choices otherwise."""
    try:
        return LOSSES[name]
    except KeyError:
        raise UserError(f"--loss: unknown loss {name!r}; choose one of {', '.join(LOSSES)}") from None


# -- losses with no discriminator, and the generator's alternatives ------------------------------------------
def mmd2(x: Tensor, y: Tensor, bandwidths: tuple[float, ...]) -> Tensor:
    """The squared maximum mean discrepancy between samples ``x`` ``(N, ...)`` and ``y`` ``(M, ...)`` (Gretton et
    al. 2012; GMMN, Li et al. 2015, Eq. 2), biased (V-statistic) form, with a sum of Gaussian kernels
    k(a, b) = Σ_σ exp(−‖a − b‖² / (2σ²)):

    MMD² = mean k(x, x′) + mean k(y, y′) − 2 mean k(x, y) ≥ 0, and 0 when the two samples are the same.
    """
    x, y = x.flatten(1).float(), y.flatten(1).float()
    joined = torch.cat([x, y])
    squares = joined.pow(2).sum(1)
    distances = (squares[:, None] + squares[None, :] - 2 * joined @ joined.T).clamp_min(0)
    kernel = sum(torch.exp(-distances / (2 * sigma ** 2)) for sigma in bandwidths)
    n = len(x)
    return (kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()).clamp_min(0)


def feature_matching(real_features: Tensor, fake_features: Tensor) -> Tensor:
    """Feature matching (Salimans et al. 2016, §3.1): the generator's loss ‖E f(x) − E f(G(z))‖²₂ over the
    discriminator's hidden features f, in place of its adversarial loss."""
    return (real_features.detach().float().flatten(1).mean(0)
            - fake_features.float().flatten(1).mean(0)).pow(2).sum()
