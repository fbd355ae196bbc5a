"""The conditional GAN (Mirza & Osindero 2014): G and D both see the label y.

G(z, y) and D(x, y) are the MNIST GAN's MLPs with the one-hot label joined
to their inputs (``img2img.nn.mlp``): z ⊕ y for G, the flattened image ⊕ y
for D.  Each step draws labels uniformly for the generated half; D judges
real images with their own labels and generated ones with the labels they
were made for, so it learns to reject an image that does not fit its label:

min_G max_D E_{x,y}[log D(x, y)] + E_{z,y}[log(1 − D(G(z, y), y))]  (Eq. 2).

``img2img sample RUN --class 7`` draws one class; the sample grids have one
row per class.  With ``--data DIR``, DIR's sub-folders are the classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from img2img.config import option
from img2img.errors import UserError
from img2img.losses import LOSSES, get_loss
from img2img.models.base import Logs, Phase
from img2img.models.mnist_gan import DigitsConfig, NoiseModel
from img2img.nn import MLPDiscriminator, MLPGenerator, init_weights

# a gradient penalty would mix real and generated images whose labels differ: the conditional models leave it out
CONDITIONAL_LOSSES = tuple(name for name, loss in LOSSES.items() if not loss.gradient_penalty_weight)


@dataclass(frozen=True)
class CganConfig(DigitsConfig):
    loss: str = option("non-saturating", "Adversarial loss.", choices=CONDITIONAL_LOSSES)


class Cgan(NoiseModel):
    """Conditional GAN: MLP G and D that both take the digit's label (Mirza & Osindero 2014); sample --class N."""

    name = "cgan"
    order = 3
    Config = CganConfig
    conditional = True
    phases = (Phase("g", ("g",)), Phase("d", ("d",)))

    def __init__(self, config: CganConfig) -> None:
        super().__init__(config)
        self.adversarial = get_loss(config.loss)
        shape, classes = (config.channels, config.size, config.size), len(config.classes)
        self.nets["g"] = init_weights(MLPGenerator(config.noise_dim, image_shape=shape, classes=classes))
        self.nets["d"] = init_weights(MLPDiscriminator(shape, classes=classes))

    @classmethod
    def resolve(cls, config: CganConfig) -> CganConfig:
        if config.loss not in CONDITIONAL_LOSSES:
            raise UserError(f"--loss: a {cls.name} model takes {', '.join(CONDITIONAL_LOSSES)}, not {config.loss}")
        return super().resolve(config)

    def phase_loss(self, phase: str, nets: Mapping[str, nn.Module], batch: tuple[Tensor, Tensor],
                   carry: dict[str, Any]) -> tuple[Tensor, Logs]:
        real, labels = batch
        if phase == "g":
            wanted = self.random_labels(real.shape[0], real.device)
            fake = nets["g"](self.noise(real.shape[0], real.device), wanted)
            carry["fake"] = fake.detach(), wanted
            loss = self.adversarial.generator_loss(nets["d"](fake, wanted))
            return loss, {"g_loss": loss.detach()}
        if phase == "d":
            fake, wanted = carry["fake"]
            loss = self.adversarial.discriminator(nets["d"](real, labels).float(), nets["d"](fake, wanted).float())
            return loss, {"d_loss": loss.detach()}
        raise KeyError(phase)
