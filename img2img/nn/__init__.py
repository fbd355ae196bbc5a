"""Network building blocks and the networks built from them."""

from img2img.nn.init import init_weights
from img2img.nn.mlp import MLPDiscriminator, MLPGenerator
from img2img.nn.norm import recompute_batch_norm

__all__ = ["MLPDiscriminator", "MLPGenerator", "init_weights", "recompute_batch_norm"]
