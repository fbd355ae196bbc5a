"""The models img2img trains, by name."""

from __future__ import annotations

from img2img.errors import UserError
from img2img.models.base import GANModel, Phase
from img2img.models.cyclegan import CycleGAN
from img2img.models.discogan import DiscoGAN
from img2img.models.mnist_gan import MnistGan
from img2img.models.pix2pix import Pix2Pix

MODELS: dict[str, type[GANModel]] = {
    MnistGan.name: MnistGan,
    Pix2Pix.name: Pix2Pix,
    CycleGAN.name: CycleGAN,
    DiscoGAN.name: DiscoGAN,
}


def get_model_class(name: str) -> type[GANModel]:
    try:
        return MODELS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


__all__ = ["MODELS", "GANModel", "Phase", "get_model_class"]
