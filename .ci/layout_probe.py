"""Where a CycleGAN generator loses the channels_last layout on this device, for .ci/gpu.sh's machine.log.

With --channels-last, the seventh H200 run's CycleGAN step lost cuDNN's layout conversions and gained as many
copies (ATen's elementwise copy kernel, 165 a step), for no gain.  On the CPU, InstanceNorm2d returns an NCHW
tensor for a channels_last one.  This says, on the GPU, which layers of a ResNet-9 generator return which layout
(bf16 autocast, as training runs it), and whether ``F.group_norm`` with one group per channel (the same
normalisation) keeps channels_last there, against ``F.instance_norm``: its layout, its difference, and the time of
a forward and backward pass of each.
"""
from __future__ import annotations

import time
from collections import Counter

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from img2img.nn import init_weights
from img2img.nn.resnet import ResnetGenerator


def layout(tensor: Tensor) -> str:
    return "NHWC" if tensor.is_contiguous(memory_format=torch.channels_last) else "NCHW"


def through_generator(device: torch.device) -> str:
    net = init_weights(ResnetGenerator(3, 3, 64, 9, "instance")).to(device, memory_format=torch.channels_last)
    seen: Counter[tuple[str, str, str]] = Counter()

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        seen[(type(module).__name__, layout(inputs[0]), layout(output))] += 1

    for module in net.modules():
        if not list(module.children()):
            module.register_forward_hook(hook)
    images = torch.randn(1, 3, 256, 256, device=device).to(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        net(images).mean().backward()
    return "; ".join(f"{name} {before}->{after} x{count}" for (name, before, after), count in sorted(seen.items()))


def timed(norm: object, features: Tensor, repeats: int = 50) -> tuple[float, str]:
    """Milliseconds for a forward and backward pass of ``norm`` on ``features``, and its output's layout."""
    def once() -> Tensor:
        features.grad = None
        output = norm(features)
        output.sum().backward()
        return output

    output = once()
    if features.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        once()
    if features.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1000, layout(output)


def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"layouts through a ResNet-9 generator, channels_last, on {device}: {through_generator(device)}")
    features = torch.randn(1, 256, 64, 64, device=device).to(memory_format=torch.channels_last).requires_grad_()
    norms = {"instance_norm": F.instance_norm, "group_norm": lambda t: F.group_norm(t, t.shape[1])}
    difference = (norms["instance_norm"](features) - norms["group_norm"](features)).abs().max().item()
    results = {name: timed(norm, features) for name, norm in norms.items()}
    print("a channels_last (1, 256, 64, 64) map: " + "; ".join(
        f"{name} -> {out}, {ms:.3f} ms forward and backward" for name, (ms, out) in results.items())
        + f"; largest difference {difference:.2e}")


if __name__ == "__main__":
    main()
