"""img2img: image-to-image translation with GANs on one shared core.

The library behind the ``img2img`` command: adversarial losses
(:mod:`img2img.losses`), networks (:mod:`img2img.nn`), models
(:mod:`img2img.models`), data (:mod:`img2img.data`) and the one training
loop (:mod:`img2img.train`).  ``img2img.load(checkpoint)`` gives a
:class:`~img2img.translate.Translator` for notebooks.
"""

__version__ = "0.1.0"

__all__ = ["Translator", "__version__", "load"]


def __getattr__(name: str):
    """``img2img.load`` and ``img2img.Translator`` (the notebook API), imported on first use so that
    ``import img2img`` stays light."""
    if name in ("Translator", "load"):
        from img2img import translate  # noqa: PLC0415

        return getattr(translate, name)
    raise AttributeError(f"module 'img2img' has no attribute {name!r}")
