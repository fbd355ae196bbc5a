"""The models img2img trains, by name.

Every module of this package is imported here, and each model class with a
``name`` registers itself when defined (:class:`~img2img.models.base.GANModel`),
so a new model is one new file: nothing else names it.  Modules whose names
start with an underscore (the template) are skipped.
"""

from __future__ import annotations

import importlib
import pkgutil

from img2img.errors import UserError
from img2img.models.base import REGISTRY, GANModel, Phase

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

MODELS: dict[str, type[GANModel]] = dict(sorted(REGISTRY.items(), key=lambda item: item[1].order))


def get_model_class(name: str) -> type[GANModel]:
    """The model class registered as ``name`` (also one defined after this package was imported)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


__all__ = ["MODELS", "GANModel", "Phase", "get_model_class"]
