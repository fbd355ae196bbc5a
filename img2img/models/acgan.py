"""AC-GAN (Odena et al. 2017): a conditional generator and a discriminator with an auxiliary classifier.

G(z, c) is DCGAN's generator with the one-hot class joined to the noise; D
is DCGAN's discriminator with two heads over its last map: the source
(real or generated) and the class (``img2img.nn.dcgan``).  With L_S the
log-likelihood of the right source and L_C that of the right class (Eq. 2,
3), D maximises L_S + L_C and G maximises L_C − L_S: here D minimises its
adversarial loss plus the cross-entropy of its class head on real images
(their labels) and on generated ones (the classes asked for), and G its
adversarial loss plus the cross-entropy of the generated images' classes.
``--no-fake-classes`` drops the generated images from D's class term: the
class head is then a classifier of real images that G must satisfy, instead
of one that also learns G's own renderings of each class.

``img2img sample RUN --class 7`` draws one class; the sample grids have one
row per class.  With ``--data DIR``, DIR's sub-folders are the classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from img2img.config import option
from img2img.losses import LOSSES, get_loss, gradient_penalty
from img2img.models.base import Logs, Phase
from img2img.models.mnist_gan import ConvOptions, DigitsConfig, NoiseModel
from img2img.nn import init_weights
from img2img.nn.dcgan import DCGANDiscriminator, DCGANGenerator


@dataclass(frozen=True)
class AcganConfig(ConvOptions, DigitsConfig):
    loss: str = option("non-saturating", "Adversarial loss of the source head.", choices=tuple(LOSSES))
    lambda_cls: float = option(1.0, "Weight of the class terms (L_C).", min=0)
    fake_classes: bool = option(True, "D's class head also learns the classes of generated images, as in the "
                                      "paper; --no-fake-classes trains it on real images only (as StarGAN's), so that "
                                      "G cannot pass with digits that only D reads as their class.")


class Acgan(NoiseModel):
    """AC-GAN: DCGAN networks, G conditioned on the class, D with an auxiliary classifier (Odena et al. 2017)."""

    name = "acgan"
    order = 4
    Config = AcganConfig
    conditional = True
    fixed_size = None
    phases = (Phase("g", ("g",)), Phase("d", ("d",)))
    train_defaults = dict(NoiseModel.train_defaults, steps=3000, ema_decay=0.0)  # as DCGAN

    def __init__(self, config: AcganConfig) -> None:
        super().__init__(config)
        self.adversarial = get_loss(config.loss)
        classes = len(config.classes)
        self.nets["g"] = init_weights(DCGANGenerator(config.noise_dim, config.channels, config.size,
                                                     config.base_channels, classes=classes))
        self.nets["d"] = init_weights(DCGANDiscriminator(config.channels, config.size, config.d_base_channels,
                                                         classes=classes))

    @classmethod
    def resolve(cls, config: AcganConfig) -> AcganConfig:
        get_loss(config.loss)
        return super().resolve(config)

    def phase_loss(self, phase: str, nets: Mapping[str, nn.Module], batch: tuple[Tensor, Tensor],
                   carry: dict[str, Any]) -> tuple[Tensor, Logs]:
        real, labels = batch
        d, weight = nets["d"], self.config.lambda_cls
        if phase == "g":
            wanted = self.random_labels(real.shape[0], real.device)
            fake = nets["g"](self.noise(real.shape[0], real.device), wanted)
            carry["fake"] = fake.detach(), wanted
            scores, classes = d(fake, classes=True)
            adversarial = self.adversarial.generator_loss(scores)
            classification = F.cross_entropy(classes.float(), wanted)
            return adversarial + weight * classification, {"g_loss": adversarial.detach(),
                                                           "g_cls": classification.detach()}
        if phase == "d":
            fake, wanted = carry["fake"]
            real_scores, real_classes = d(real, classes=True)
            fake_scores, fake_classes = d(fake, classes=True)
            adversarial = self.adversarial.discriminator(real_scores.float(), fake_scores.float())
            classification = F.cross_entropy(real_classes.float(), labels)
            if self.config.fake_classes:
                classification = classification + F.cross_entropy(fake_classes.float(), wanted)
            loss = adversarial + weight * classification
            logs = {"d_loss": adversarial.detach(), "d_cls": classification.detach()}
            if self.adversarial.gradient_penalty_weight:
                penalty = gradient_penalty(d, real.float(), fake.float())
                loss = loss + self.adversarial.gradient_penalty_weight * penalty
                logs["gp"] = penalty.detach()
            return loss, logs
        raise KeyError(phase)
