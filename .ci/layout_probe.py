"""Where a CycleGAN generator loses the channels_last layout on this device, for .ci/gpu.sh's machine.log.

With --channels-last, the seventh H200 run's CycleGAN step lost cuDNN's layout conversions and gained as many
copies (ATen's elementwise copy kernel, 165 a step), for no gain.  On the CPU, InstanceNorm2d returns an NCHW
tensor for a channels_last one.  This says, on the GPU, which layers of a ResNet-9 generator return which layout
(bf16 autocast, as training runs it), and whether ``F.group_norm`` with one group per channel (the same
normalisation) keeps channels_last there, against ``F.instance_norm``: its layout, its difference, and the time of
a forward and backward pass of each.  Then the whole generator's forward and backward pass (bf16 autocast, cuDNN
autotuning, as training runs it), eager and replayed as CUDA graphs (as the default step is), in each layout with
each way of normalising: ``instance_norm``; ``group_norm`` with one group per channel; and by hand in float32
(mean and variance over H and W, elementwise ops that keep the layout), with each one's largest difference from
the first.  Which of them, if any, is worth building into the networks for the stretch target: a lead, not a
verdict, as the default step also compiles its networks (inductor's own kernels between the convolutions), so a
winner here is then timed in ``img2img bench``.
"""
from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Callable

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


class Norm(nn.Module):
    """Instance norm (no affine parameters, no running statistics, as CycleGAN's) computed one of three ways."""

    def __init__(self, how: str, eps: float) -> None:
        super().__init__()
        self.how, self.eps = how, eps

    def forward(self, x: Tensor) -> Tensor:
        if self.how == "group_norm":
            return F.group_norm(x, x.shape[1], eps=self.eps)
        if self.how == "by_hand":
            wide = x.float()
            mean = wide.mean((2, 3), keepdim=True)
            variance = (wide - mean).square().mean((2, 3), keepdim=True)
            return ((wide - mean) * torch.rsqrt(variance + self.eps)).to(x.dtype)
        return F.instance_norm(x, eps=self.eps)


def with_norms(net: nn.Module, how: str) -> nn.Module:
    net = copy.deepcopy(net)
    for module in list(net.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.InstanceNorm2d):
                setattr(module, name, Norm(how, child.eps))
    return net


def generator_variants(device: torch.device, size: int, repeats: int) -> list[str]:
    """Milliseconds of a ResNet-9 generator's forward and backward pass at ``size``², eager and graphed (CUDA
    only), per layout and norm, and each one's largest difference in output from NCHW instance_norm."""
    torch.backends.cudnn.benchmark = device.type == "cuda"
    cuda = device.type == "cuda"
    base = init_weights(ResnetGenerator(3, 3, 64, 9, "instance")).to(device)
    images = torch.randn(1, 3, size, size, device=device)
    lines, reference = [], None
    for layout_name, fmt in (("NCHW", torch.contiguous_format), ("NHWC", torch.channels_last)):
        for how in ("instance_norm", "group_norm", "by_hand"):
            net = with_norms(base, how).to(memory_format=fmt)
            x = images.contiguous(memory_format=fmt)

            def step(run: Callable[[Tensor], Tensor], x: Tensor = x) -> Tensor:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda, cache_enabled=False):
                    output = run(x)
                output.float().mean().backward()
                return output

            def clock(run: Callable[[Tensor], Tensor]) -> float:
                for _ in range(3):
                    step(run)
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(repeats):
                    step(run)
                if cuda:
                    torch.cuda.synchronize()
                return (time.perf_counter() - start) / repeats * 1000

            output = step(net).detach().float()
            reference = output if reference is None else reference
            line = (f"{layout_name} {how}: output {layout(output)}, eager {clock(net):.3f} ms, "
                    f"largest difference {(output - reference).abs().max().item():.2e}")
            if cuda:
                try:
                    with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
                        graphed = torch.cuda.make_graphed_callables(net, (x.clone().requires_grad_(False),))
                    line += f", graphed {clock(graphed):.3f} ms"
                except Exception as error:  # noqa: BLE001 - a probe says what failed and goes on
                    line += f", graphed failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
            lines.append(line)
    return lines


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
    size = 256 if device.type == "cuda" else 64  # on the CPU, a quick look that the probe runs
    print(f"a ResNet-9 generator's forward and backward pass, (1, 3, {size}, {size}):")
    for line in generator_variants(device, size, repeats=20 if device.type == "cuda" else 2):
        print("  " + line)


if __name__ == "__main__":
    main()
