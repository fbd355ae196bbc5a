"""Normalisation helpers."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def recompute_batch_norm(net: nn.Module, inputs: Iterable[Tensor | tuple[Tensor, ...]]) -> None:
    """Set every batch norm's running statistics of ``net`` to their exact average over ``inputs``.

    Weights averaged over training (EMA) never produced the running
    statistics that the live network accumulated, so those are recomputed
    for the averaged weights: a forward pass in training mode with a
    cumulative average (``momentum=None``).  Parameters are left untouched.
    """
    norms = [m for m in net.modules() if isinstance(m, _BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    was_training = net.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    net.train()
    try:
        for batch in inputs:  # a tuple is the network's arguments (noise and labels, say)
            net(*batch) if isinstance(batch, tuple) else net(batch)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        net.train(was_training)


NORMS = ("batch", "instance", "none")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """The 2-D normalisation the official pix2pix/CycleGAN code builds for ``--norm kind``.

    batch: BatchNorm2d with affine parameters and running statistics;
    instance: InstanceNorm2d without either (so it has no state at all);
    none: identity.
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")


def conv_bias(kind: str) -> bool:
    """Whether convolutions followed by this norm carry a bias (the official rule: only with instance norm)."""
    return kind == "instance"
