"""Weight initialisation as the GAN papers do it (Radford et al. 2016; Isola et al. 2017).

Convolution and linear weights ~ N(0, 0.02), biases 0; normalisation scales
~ N(1, 0.02), shifts 0.
"""

from __future__ import annotations

from torch import nn

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm2d, nn.SyncBatchNorm)


def init_weights(module: nn.Module, std: float = 0.02) -> nn.Module:
    """Initialise every submodule of ``module`` in place and return it."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(layer.weight, 0.0, std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, _NORMS) and layer.weight is not None:
            nn.init.normal_(layer.weight, 1.0, std)
            nn.init.zeros_(layer.bias)
    return module
