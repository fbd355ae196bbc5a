"""img2img: image-to-image translation with GANs on one shared core.

The library behind the ``img2img`` command: adversarial losses
(:mod:`img2img.losses`), networks (:mod:`img2img.nn`), models
(:mod:`img2img.models`), data (:mod:`img2img.data`) and the one training
loop (:mod:`img2img.train`).
"""

__version__ = "0.1.0"
