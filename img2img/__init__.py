"""img2img: image-to-image translation with GANs on one shared core.

The library behind the ``img2img`` command: adversarial losses
(:mod:`img2img.losses`), networks (:mod:`img2img.nn`), models
(:mod:`img2img.models`), data (:mod:`img2img.data`) and the one training
loop (:mod:`img2img.train`).  ``img2img.load(checkpoint)`` gives a
:class:`~img2img.translate.Translator` for notebooks.
"""

__version__ = "0.1.0"

from img2img.translate import Translator, load  # noqa: E402 - the notebook API: img2img.load(ckpt).translate(x)

__all__ = ["Translator", "__version__", "load"]
