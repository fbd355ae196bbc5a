"""The CUDA paths, checked on a GPU (every test here is marked ``cuda`` and skipped where there is none).

bf16 autocast and cuDNN autotuning in training, every model's phases on the
GPU, bf16 translation against float32, ``torch.compile`` and its CUDA-graph
mode against eager, the out-of-memory → tiles fallback, checkpoints moving
between the GPU and the CPU, host synchronisations per step, pinned uint8
transfers in folder translation, and NCCL under torchrun.  ``.ci/gpu.sh``
runs them (``pytest -m cuda``) with the README's commands and the benchmarks.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import socket
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

from img2img import checkpoint, speed
from img2img.bench import SpeedSettings, bench_training, refusal
from img2img.distributed import Distributed, teardown
from img2img.errors import UserError
from img2img.loading import open_checkpoint
from img2img.models import MODELS
from img2img.nn import init_weights
from img2img.nn.resnet import ResnetGenerator
from img2img.nn.unet import UnetGenerator
from img2img.train import Trainer, seed_everything
from img2img.translate import Translator, generator_info, to_levels

from test_distributed import torchrun
from test_models import NAMES, check_phases, tiny_size, tiny_trainer
from test_unpaired import cyclegan_trainer, write_unpaired

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
LEVEL = 2 / 255  # one 8-bit level in [-1, 1]


@pytest.fixture(autouse=True)
def _fresh_compiler():
    torch.compiler.reset()
    yield
    torch.compiler.reset()


def compiles(name: str) -> bool:
    """Whether torch.compile can run the model's training step (StarGAN's gradient penalty: not)."""
    return refusal(name, tiny_size(MODELS[name]), "compile") is None


def smooth_batch(count: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Smooth random colour images ``(count, 3, height, width)`` in [-1, 1] (photographs vary slowly too)."""
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand(count, 3, max(2, height // 16), max(2, width // 16), generator=generator)
    return F.interpolate(low, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1) * 2 - 1


def trained_generator(kind: str) -> nn.Module:
    """A small generator trained on the GPU (float32) to map images to a colour transform, so that its outputs
    span [-1, 1] as a trained model's do (an untrained one's stay near 0 and would hide rounding)."""
    torch.manual_seed(0)
    if kind == "resnet":
        net = init_weights(ResnetGenerator(3, 3, 32, 6, "instance"))
    else:
        net = init_weights(UnetGenerator(3, 3, 6, 32, "batch", dropout=False))
    net = net.cuda().train()
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3, betas=(0.5, 0.999))
    for step in range(150):
        images = smooth_batch(8, 64, 64, seed=step).cuda()
        target = torch.stack([-images[:, 2], images[:, 0], 0.8 * images[:, 1] - 0.1], 1)  # channel mix, inverted
        loss = F.l1_loss(net(images), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2, f"the {kind} generator did not learn its mapping (L1 {loss.item():.3f})"
    return net.eval()


# -- training -----------------------------------------------------------------------------------------------
def phase_results(trainer: Trainer, batch, extra: dict, autocast: bool, calls: int = 1
                  ) -> dict[str, tuple[float, dict[str, torch.Tensor]]]:
    """One step's phases as train_step runs them (layout, the phase's networks, compiled or not), without the
    optimiser, from the model state ``extra`` (CycleGAN's image pools) and torch's seed 1: each phase's loss and,
    for each network it updates, all its gradients in one vector.  ``calls``: compute it this many times and keep
    the last (compiled code runs eagerly on a new graph's first call, records it on the second, replays it from
    the third)."""
    model = trainer.model
    batch = speed.to_layout(model.prepare_batch(batch), trainer.config.channels_last)
    for _ in range(calls):
        model.load_extra_state(extra)
        seed_everything(1)
        speed.mark_step(trainer.compile_mode, trainer.device)
        carry, results = {"step": trainer.step}, {}
        for phase in model.phases:
            for name, net in model.nets.items():
                net.requires_grad_(name in phase.networks)
                net.zero_grad(set_to_none=True)
            with torch.autocast(trainer.device.type, dtype=torch.bfloat16, enabled=autocast):
                loss, _ = model.phase_loss(phase.name, trainer.phase_nets[phase.name], batch, carry)
            loss.backward()
            results[phase.name] = float(loss.detach()), {
                name: torch.cat([p.grad.double().flatten() for p in model.nets[name].parameters()])
                for name in phase.networks}
    return results


def relative_error(have: torch.Tensor, want: torch.Tensor) -> float:
    return float((have.double() - want.double()).norm() / want.double().norm())


# the slowest to compile first (CycleGAN's and CUT's networks, twice each): .ci/gpu.sh runs the tests side by side,
# and pytest-xdist hands them out in this order
SLOWEST_FIRST = ("cyclegan", "cut", "fastcut")


@pytest.mark.parametrize("name, mode, channels_last", [
    ("cyclegan", "default", True), ("pix2pix", "default", True),  # the bench ladder's compiled rungs
    *[(name, "reduce-overhead", False)  # what --compile auto is
      for name in sorted(NAMES, key=lambda name: name not in SLOWEST_FIRST) if compiles(name)]])
def test_compiled_and_cuda_graph_training_match_eager(name, mode, channels_last, tmp_path):
    """torch.compile (and its CUDA graphs, what --compile auto uses on CUDA) computes what eager mode computes."""
    import torch._inductor.config as inductor  # noqa: PLC0415 - torch's compiler, imported only where it runs

    with inductor.patch(fallback_random=True):
        compare_compiled_with_eager(name, mode, tmp_path, "cuda", channels_last=channels_last)


SHORTER = {"cyclegan": {"n_blocks": 2}, "cut": {"generator": "resnet_6blocks"}, "fastcut": {"generator": "resnet_6blocks"}}


# The models whose compiled float32 step failed TorchInductor's check of convolution_backward's output strides on
# an H200 with torch 2.11 (DCGAN's networks; bf16, the default, passed): speed.compile_errors makes that one line.
FLOAT32_LAYOUT_FAULT = {"acgan", "dcgan", "wgan"}


def compare_compiled_with_eager(name: str, mode: str, tmp_path, device: str, batch_size: int = 8,
                                channels_last: bool = False) -> None:
    """Ten bf16 training steps of the compiled networks first (every phase runs, and CUDA graphs are recorded
    and replayed).  Then eager networks with the same weights and the compiled ones compute one step's losses
    and gradients from the same random draws (compiled code draws through torch's generators here), in float32
    (no TF32) and in bf16 (the CUDA default), and so does an eager float64 twin, the reference: losses agree
    within bf16's rounding, and compiled gradients may be no further from float64's than eager ones are, by
    twice as much, and a little more: 1% of their size in float32, 10% in bf16.  Compiled code may lay
    tensors out otherwise and get another convolution algorithm (Winograd, FFT), which rounds more, and its
    fused kernels round bf16 at other points (on the CPU, compiled CUT's G in float32 was 0.29% from float64
    where eager was 0.0001%, and its patch MLP's in bf16 11% where eager was 2.8%); a wrong graph, or a buffer
    read after it was reused, is off by the gradient's whole size.

    The reference is float64, not eager, because a GAN's gradients are ill-conditioned, so that any rounding
    moves them: two computations that round in another order, as fused kernels do, differ as much from each
    other as each does from the exact result.  Measured with torch.compile on the CPU, as relative distances
    from float64 (eager/compiled), at batch 2: the MNIST GAN's G in float32 3.6%/0.03% (its batch norm sees
    two images), in bf16 110%/120%; CGAN's G in bf16 130%/210%.  At batch 8, in bf16: 13%/13% and 11%/9%;
    CycleGAN's G 45%/41% in bf16 and 1.0%/1.5% in float32.

    Whole training runs are not compared: after a few Adam steps, rounding noise in small gradients (a bias
    before instance norm has a true gradient of 0) already moves the two apart."""
    # compiled dropout draws its masks in another order; the ResNet generators are shorter than their defaults
    # (which `test_every_model_trains_on_cuda_with_the_defaults` trains): what is compared is the same, and
    # compiling them twice took CycleGAN's and CUT's comparisons past 195 and 290 s on an H200
    options = {"dropout": False, **SHORTER.get(name, {})}
    fast, batch = tiny_trainer(name, tmp_path / "fast", batch_size, device, options, channels_last=channels_last,
                               compile=mode, cuda_graph="off")  # (step graphs: the test below)
    assert fast.compile_mode == mode
    initial = {net: [p.detach().clone() for p in fast.model.nets[net].parameters()] for net in fast.model.nets}
    batch = fast.model.move_batch(batch, fast.device)
    for _ in range(10):
        logs = fast.train_step(batch)
        assert all(torch.isfinite(value).all() for value in logs.values()), logs
    for net, before in initial.items():
        assert all(not torch.equal(b, a) for b, a in zip(before, fast.model.nets[net].parameters())), net
    extra = fast.model.extra_state()
    twins = {}
    for precision in ("float32", "float64"):
        twin, _ = tiny_trainer(name, tmp_path / precision, batch_size, device, options, compile="off",
                               cuda_graph="off")
        for net_name, net in fast.model.nets.items():
            twin.model.nets[net_name].load_state_dict(net.state_dict())
        twin.step = fast.step
        twins[precision] = twin
    twins["float64"].model.double()
    results = {}
    if fast.autocast:  # first: a compiled step that fails (below) leaves torch's CUDA-graph trees unusable
        results["eager", "bf16"] = phase_results(twins["float32"], batch, extra, autocast=True)
        results["compiled", "bf16"] = phase_results(fast, batch, extra, autocast=True)
    with exact_float32():
        with Float64():
            reference = phase_results(twins["float64"], batch, extra, autocast=False)
        results["eager", "float32"] = phase_results(twins["float32"], batch, extra, autocast=False)
        try:
            with speed.compile_errors(mode):
                results["compiled", "float32"] = phase_results(fast, batch, extra, autocast=False, calls=3)
        except UserError as error:  # the run would stop in this one line
            assert name in FLOAT32_LAYOUT_FAULT and "convolution_backward" in str(error), error
            del results["eager", "float32"]
    for precision, slack in (("float32", 0.01), ("bf16", 0.1)):
        if ("eager", precision) not in results:
            continue
        want, have = results["eager", precision], results["compiled", precision]
        for phase, (loss, gradients) in want.items():
            assert have[phase][0] == pytest.approx(loss, rel=0.05, abs=0.02), (precision, phase, loss, have[phase][0])
            for net, gradient in gradients.items():
                exact = reference[phase][1][net]
                error, eager_error = relative_error(have[phase][1][net], exact), relative_error(gradient, exact)
                assert error <= 2 * eager_error + slack, (
                    f"{precision} {phase}: compiled {net}'s gradient is {error:.2e} of its size from float64's, "
                    f"eager's {eager_error:.2e}")
    assert not any("_orig_mod" in key for net in fast.state()["networks"].values() for key in net)


@pytest.mark.parametrize("name", NAMES)
def test_every_model_trains_on_cuda_with_the_defaults(name, tmp_path):
    """bf16 autocast and cuDNN autotuning (the CUDA defaults): finite losses, a finite gradient on every updated
    parameter, frozen networks unchanged, and then whole steps that stay finite."""
    trainer, batch = tiny_trainer(name, tmp_path, device="cuda")
    assert trainer.autocast and torch.backends.cudnn.benchmark
    assert all(p.is_cuda for p in trainer.model.parameters())
    check_phases(trainer, batch)
    batch = trainer.model.move_batch(batch, trainer.device)
    for _ in range(3):
        logs = trainer.train_step(batch)
        assert all(torch.isfinite(value).all() for value in logs.values()), logs
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


# models whose steps draw nothing at random once dropout is off (CycleGAN's pool draws, but only uses its draws once
# full): a replayed step and an eager one compute the same from the same batch
UNRANDOM = ("cyclegan", "discogan", "pix2pix")


@pytest.mark.parametrize("name", [name for name in NAMES if refusal(name, tiny_size(MODELS[name]), "graph") is None])
def test_a_training_step_captured_as_one_cuda_graph_trains_as_eager_steps_do(name, tmp_path):
    """--cuda-graph: each kind of step runs eagerly on a side stream a few times, is captured, then replayed.  In
    float32 without TF32 and with cuDNN's deterministic algorithms, the replaying trainer's weights follow the
    eager one's over steps on new batches while the learning rate decays (a graph that read a stale batch or
    learning rate would be off by several updates); every model's replayed steps give finite, changing losses.
    The weights compared are the layers' weights, not their biases: a bias just before an instance or batch norm
    has no gradient in exact arithmetic (the norm subtracts it), so its float gradient is rounding noise, which
    Adam scales into steps of the full learning rate with a random sign.  Two correct runs that only round
    differently differ there by whole steps: on the CPU, CycleGAN trained with 1 thread and with 2 differs by
    8.8e-4 over all its parameters (1.3e-3 between replayed and eager steps on an H200), by 2.4e-6 over its
    weights alone, and a step's update is about 1e-2."""
    settings = dict(steps=10, decay_steps=10, amp=False, cudnn_benchmark=False, compile="off",
                    options={"dropout": False})
    with deterministic_float32():
        eager, batch = tiny_trainer(name, tmp_path / "eager", device="cuda", cuda_graph="off", **settings)
        graphed, _ = tiny_trainer(name, tmp_path / "graphed", device="cuda", cuda_graph="on", **settings)
        for net_name, net in eager.model.nets.items():
            graphed.model.nets[net_name].load_state_dict(net.state_dict())
        generator = torch.Generator().manual_seed(3)
        logs = []
        for step in range(10):
            fresh = tree_map(lambda leaf: torch.rand(leaf.shape, generator=generator) * 2 - 1
                             if torch.is_tensor(leaf) and leaf.is_floating_point() else leaf, batch)
            for trainer in (eager, graphed):
                torch.manual_seed(step)
                result = trainer.train_step(trainer.model.move_batch(fresh, trainer.device))
            logs.append(result)
        torch.cuda.synchronize()
    assert graphed.graphs is not None and graphed.graphs.graphs, "no step was captured"
    assert all(torch.isfinite(value).all() for step in logs for value in step.values())
    alike = [(a, b) for a, b in zip(logs[-4:], logs[-3:]) if a.keys() == b.keys()]  # replays of one graph
    assert alike and all(any(not torch.equal(a[key], b[key]) for key in a) for a, b in alike)
    if name in UNRANDOM:
        for net_name, net in eager.model.nets.items():
            replayed = graphed.model.nets[net_name]
            want = torch.cat([p.detach().flatten() for p in net.parameters() if p.dim() > 1])
            have = torch.cat([p.detach().flatten() for p in replayed.parameters() if p.dim() > 1])
            assert relative_error(have, want) <= 1e-3, (net_name, relative_error(have, want))


@pytest.mark.parametrize("name", ["cyclegan", "pix2pix"])
def test_the_fast_step_graph_trains_with_compiled_kernels_and_no_host_sync(name):
    """--cuda-graph auto with what it is for: bf16, channels_last and --compile auto (default: Inductor's kernels
    inside the captured step); auto means on here, and the replayed steps stay finite and wait for nothing."""
    result = bench_training(name, size=tiny_size(MODELS[name]), batch_size=2, steps=3, warmup=1, device="cuda",
                            speed=SpeedSettings(channels_last=True, compile="auto", cuda_graph="auto"))
    assert result["settings"]["compile"] == "default" and result["settings"]["cuda_graph"] == "on"
    assert result["host_syncs_per_step"] == 0, result["host_sync_sites"]


@pytest.mark.parametrize("failure", ["host sync", "out of memory"])
def test_cuda_graph_auto_trains_on_through_a_step_that_cannot_be_captured(failure, tmp_path, monkeypatch, caplog):
    """--cuda-graph auto where a step cannot be captured: here pix2pix's losses ask the host for a value while the
    step is being captured, which CUDA refuses ("operation not permitted when stream is capturing"), or memory
    runs out while it is captured (a step graph's pool is its own).  The step is taken again, uncaptured, from
    what it started with, a warning line says so, and the run trains on without graphs: in float32 without TF32
    and with cuDNN's deterministic algorithms its weights move as an eager run's do, every step after runs on
    the stream it ran on before, and torch's caching allocator knows that the capture is over (else emptying
    its cache fails its own assertion)."""
    settings = dict(steps=8, decay_steps=8, amp=False, cudnn_benchmark=False, compile="off",
                    options={"dropout": False})
    with deterministic_float32():
        eager, batch = tiny_trainer("pix2pix", tmp_path / "eager", device="cuda", cuda_graph="off", **settings)
        auto, _ = tiny_trainer("pix2pix", tmp_path / "auto", device="cuda", cuda_graph="auto", **settings)
        assert auto.step_graphs and auto.graph_fallback and auto.graphs is not None
        for net_name, net in eager.model.nets.items():
            auto.model.nets[net_name].load_state_dict(net.state_dict())
        initial = {net_name: torch.cat([p.detach().flatten() for p in net.parameters()])
                   for net_name, net in eager.model.nets.items()}
        losses = auto.model.phase_loss

        def asking(name, nets, inputs, carry):
            loss, logs = losses(name, nets, inputs, carry)
            if torch.cuda.is_current_stream_capturing():
                if failure == "host sync":
                    float(loss)  # a host synchronisation: no capture may hold one
                else:  # twice what the device holds
                    torch.empty(torch.cuda.get_device_properties(0).total_memory // 2, device="cuda")
            return loss, logs

        monkeypatch.setattr(auto.model, "phase_loss", asking)
        stream = torch.cuda.current_stream()
        with caplog.at_level(logging.WARNING, logger="img2img"):
            for step in range(8):
                for trainer in (eager, auto):
                    torch.manual_seed(step)
                    logs = trainer.train_step(trainer.model.move_batch(batch, trainer.device))
                    assert all(torch.isfinite(value).all() for value in logs.values()), logs
                assert torch.cuda.current_stream() == stream
        torch.cuda.synchronize()
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    said = {"host sync": "this training step cannot be captured",
            "out of memory": "memory ran out while the step was captured as one CUDA graph"}[failure]
    assert len(warnings) == 1 and warnings[0].startswith(f"--cuda-graph auto: {said}"), warnings
    assert "\n" not in warnings[0] and auto.graphs is None and not auto.step_graphs
    assert not any(group.get("capturable") for opt in auto.optimizers.values() for group in opt.param_groups)
    # the caching allocator knows the failed capture is over: it empties its cache, and another capture works
    torch.cuda.empty_cache()
    graph, x = torch.cuda.CUDAGraph(), torch.ones(4, device="cuda")
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        y = x * 2
    graph.replay()
    assert torch.equal(y, torch.full((4,), 2.0, device="cuda"))
    for net_name, net in eager.model.nets.items():
        want = torch.cat([p.detach().flatten() for p in net.parameters()]) - initial[net_name]
        have = torch.cat([p.detach().flatten() for p in auto.model.nets[net_name].parameters()]) - initial[net_name]
        assert want.norm() > 0 and relative_error(have, want) <= 1e-3, (net_name, relative_error(have, want))


class Float64(TorchFunctionMode):
    """Every floating-point tensor that an operation is given, in float64 (a model's noise, images and image
    pools come in float32): with the networks in float64 too, a float64 twin of the computation."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*widen(args), **widen(kwargs or {}))


def widen(value):
    if torch.is_tensor(value):
        return value.double() if value.is_floating_point() and value.dtype != torch.float64 else value
    if isinstance(value, (list, tuple)):
        return type(value)(widen(v) for v in value)
    if isinstance(value, dict):
        return {k: widen(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def deterministic_float32() -> Iterator[None]:
    """:func:`exact_float32` with cuDNN's deterministic algorithms, then as before: two runs of the same float32
    steps agree to rounding."""
    before = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        with exact_float32():
            yield
    finally:
        torch.backends.cudnn.deterministic = before


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """float32 matrix products and convolutions without TF32's shortened mantissa, then as before."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_evaluation_on_cuda_gives_the_cpus_figures(tmp_path, devices=("cpu", "cuda")):
    """img2img eval on the GPU: the generator and the digit classifier run there, and FID's sums and KID's kept
    features (metrics.Distances) are held there, in float64.  A cGAN's figures match the CPU's."""
    from test_cli import invoke  # noqa: PLC0415

    run = tmp_path / "run"
    result, output = invoke("train", "cgan", "--steps", 3, "--batch-size", 8, "--device", "cpu", "--out", run)
    assert result.exit_code == 0, output
    reports = []
    with exact_float32():
        for index, device in enumerate(devices):
            result, output = invoke("eval", run, "--samples", 300, "--device", device, "--json",
                                    tmp_path / f"{index}.json")
            assert result.exit_code == 0, output
            reports.append(json.loads((tmp_path / f"{index}.json").read_text())["metrics"])
    cpu, cuda = reports
    assert sum(cuda["class_counts"]) == 300
    assert sum(abs(a - b) for a, b in zip(cpu["class_counts"], cuda["class_counts"])) <= 6  # near a boundary
    assert cuda["class_agreement"] == pytest.approx(cpu["class_agreement"], abs=0.02)
    for name in ("fid", "kid", "fid_over_floor", "nn_distance_to_train"):
        assert cuda[name] == pytest.approx(cpu[name], rel=0.02), name


def test_compile_auto_means_cuda_graphs_for_training_on_cuda(tmp_path):
    trainer, _ = tiny_trainer("pix2pix", tmp_path, device="cuda")  # every step one CUDA graph, kernels compiled
    assert trainer.config.cuda_graph == "auto" and trainer.step_graphs
    assert trainer.config.compile == "auto" and trainer.compile_mode == "default"
    ungraphed, _ = tiny_trainer("pix2pix", tmp_path / "off", device="cuda", cuda_graph="off")
    assert not ungraphed.step_graphs and ungraphed.compile_mode == "reduce-overhead"  # a CUDA graph per network
    for name, options in (("pix2pix", {"loss": "wgan-gp"}), ("stargan", {})):
        penalised, _ = tiny_trainer(name, tmp_path / name, device="cuda", options=options)
        assert penalised.compile_mode == "off"  # the gradient penalty's double backward cannot be compiled


@pytest.mark.parametrize("name, graphs", [*((name, "off") for name in sorted(FLOAT32_LAYOUT_FAULT)),
                                          ("dcgan", "auto")])
def test_compile_auto_trains_on_through_a_fault_of_torchs_compiler(name, graphs, tmp_path, caplog):
    """DCGAN's networks in float32 meet a fault of torch 2.11's compiler (convolution_backward's strides) at their
    first compiled step.  Under --compile auto, the CUDA default, the run goes on uncompiled, saying so in one
    line, and its weights move as an eager run's do (float32 without TF32, deterministic cuDNN, the same draws:
    a step lost or taken twice would be a sixth of the updates); should a torch fix the fault, it trains
    compiled, with no warning.  With --cuda-graph auto the fault comes in a step's first run on the graphs' side
    stream, which the restored weights must wait for; the steps are then captured from eager networks."""
    settings = dict(steps=6, amp=False, cudnn_benchmark=False, options={"dropout": False})
    try:
        with deterministic_float32():
            auto, batch = tiny_trainer(name, tmp_path / "auto", device="cuda", cuda_graph=graphs, **settings)
            eager, _ = tiny_trainer(name, tmp_path / "eager", device="cuda", compile="off", cuda_graph="off",
                                    **settings)
            assert auto.compile_mode == ("default" if graphs == "auto" else "reduce-overhead")
            for net_name, net in auto.model.nets.items():
                eager.model.nets[net_name].load_state_dict(net.state_dict())
            initial = {net_name: torch.cat([p.detach().flatten() for p in net.parameters()])
                       for net_name, net in eager.model.nets.items()}
            with caplog.at_level(logging.WARNING, logger="img2img"):
                for step in range(6):  # WGAN's G steps once in 5
                    for trainer in (auto, eager):
                        torch.manual_seed(step)
                        logs = trainer.train_step(trainer.model.move_batch(batch, trainer.device))
                        assert all(torch.isfinite(value).all() for value in logs.values()), logs
            torch.cuda.synchronize()
    finally:
        torch.compiler.reset()
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    if graphs == "auto":  # the steps after the warm-up are replays, whose noise draws eager steps need not match
        assert auto.graphs is not None and len(auto.graphs.graphs) == 1, "no step was captured"
    if auto.compile_mode == "off":
        assert len(warnings) == 1 and warnings[0].startswith("--compile auto: ") and "\n" not in warnings[0]
        assert "convolution_backward" in warnings[0], warnings[0]
        for net_name, net in eager.model.nets.items():
            if graphs == "auto":
                moved = torch.cat([p.detach().flatten() for p in auto.model.nets[net_name].parameters()])
                assert torch.isfinite(moved).all() and not torch.equal(moved, initial[net_name]), net_name
                continue
            want = torch.cat([p.detach().flatten() for p in net.parameters()]) - initial[net_name]
            have = torch.cat([p.detach().flatten() for p in auto.model.nets[net_name].parameters()]) - initial[net_name]
            assert want.norm() > 0 and relative_error(have, want) <= 1e-3, (net_name, relative_error(have, want))
    else:
        assert auto.compile_mode == ("default" if graphs == "auto" else "reduce-overhead") and not warnings, warnings


def test_the_benchmarks_peak_memory_counts_a_step_graphs_pool():
    """A step replayed as one CUDA graph allocates nothing: its activations live in the graph's pool, taken
    while it was captured in the warm-up.  The peak counted the replays' tensors alone (0.48 GiB for CycleGAN at
    256², its weights and optimiser state); it now counts what the allocator held from the warm-up on."""
    size = tiny_size(MODELS["pix2pix"]) * 4
    eager = bench_training("pix2pix", size=size, batch_size=4, steps=2, warmup=1, device="cuda",
                           speed=SpeedSettings(amp=False, cuda_graph="off"))
    graphed = bench_training("pix2pix", size=size, batch_size=4, steps=2, warmup=1, device="cuda",
                             speed=SpeedSettings(amp=False, cuda_graph="on"))
    assert graphed["settings"]["cuda_graph"] == "on"
    # the graph's pool holds the step's activations, as the eager step's tensors did at their peak
    assert graphed["peak_memory_bytes"] >= eager["peak_tensor_bytes"], (eager, graphed)
    # the device's memory in use (as nvidia-smi counts it, as other code's figures are usually given) holds all
    # that the allocator held, and the CUDA context beside it
    for result in (eager, graphed):
        assert result["device_in_use_bytes"] > result["peak_memory_bytes"], result


@pytest.mark.parametrize("name", ["cyclegan", "pix2pix"])
def test_no_host_synchronisation_in_a_training_step(name):
    result = bench_training(name, size=tiny_size(MODELS[name]), batch_size=2, steps=2, warmup=1, device="cuda")
    assert result["host_syncs_per_step"] == 0, result["host_sync_sites"]


# -- translation ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["resnet", "unet"])
def test_bf16_translation_is_within_two_levels_of_float32(kind):
    net = trained_generator(kind)
    info = generator_info(net, 3, 3)
    images = smooth_batch(4, 256, 256, seed=99)
    exact = to_levels(Translator(net, info, "cuda", amp=False).translate_tensor(images), 8).int()
    fast = to_levels(Translator(net, info, "cuda", amp=True).translate_tensor(images), 8).int()
    difference = (fast - exact).abs()
    report = (f"{kind}: bf16 against float32 in levels: max {int(difference.max())}, mean "
              f"{difference.float().mean():.4f}, share off by more than 1: {(difference > 1).float().mean():.2e}")
    print(report)
    assert float(exact.float().std()) > 30, "outputs should span the range, as a trained model's do"
    assert int(difference.max()) <= 2, report


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_translation_matches_eager(mode):
    net = trained_generator("resnet")
    info = generator_info(net, 3, 3)
    eager = Translator(net, info, "cuda", batch_size=4, cuda_graph="off")
    fast = Translator(net, info, "cuda", batch_size=4, channels_last=True, compile=mode, cuda_graph="off")
    for height, width in ((64, 64), (64, 64), (48, 80), (64, 64)):  # a repeated shape replays its graph
        images = smooth_batch(6, height, width, seed=height + width)  # 6 = a full batch and a partial one
        want = to_levels(eager.translate_tensor(images), 8).int()
        have = to_levels(fast.translate_tensor(images), 8).int()
        assert int((want - have).abs().max()) <= 2, (mode, height, width)


def test_cuda_graph_translation_matches_eager():
    """translate --cuda-graph: each batch shape's forward pass replayed as a CUDA graph from its third batch."""
    net = trained_generator("resnet")
    info = generator_info(net, 3, 3)
    eager = Translator(net, info, "cuda", batch_size=4, cuda_graph="off")
    graphed = Translator(net, info, "cuda", batch_size=4)  # --cuda-graph auto, the default: on CUDA, on
    assert graphed.cuda_graph and not eager.cuda_graph
    for height, width in ((64, 64), (64, 64), (48, 80), (64, 64), (64, 64)):
        images = smooth_batch(6, height, width, seed=height + width)  # 6 = a full batch and a partial one
        want = to_levels(eager.translate_tensor(images), 8).int()
        have = to_levels(graphed.translate_tensor(images), 8).int()
        assert int((want - have).abs().max()) <= 1, (height, width)
    # the 64² batches of 4 and of 2 (each met once per 64² call): captured in the third such call, then replayed
    assert len(graphed._graphs.graphs) == 2


def test_the_python_api_checks_cuda_tensors_and_returns_them_on_their_device():
    """translate(tensor) of a tensor on the GPU, bf16 included: its range is checked there (0..255 levels refused
    in one line) and the result comes back on its device, as the CPU's does."""
    net = init_weights(ResnetGenerator(3, 3, 8, 2, "instance"))
    translator = Translator(net, generator_info(net, 3, 3), "cuda", batch_size=4)
    image = smooth_batch(2, 32, 32, seed=1).cuda()
    for kind in (torch.float32, torch.bfloat16):
        result = translator.translate(image.to(kind))
        assert result.device.type == "cuda" and result.shape == (2, 3, 32, 32)
    with pytest.raises(UserError, match="this one spans 0 to 255"):
        translator.translate(torch.linspace(0, 255, 3 * 32 * 32, device="cuda").view(3, 32, 32))
    with pytest.raises(UserError, match="not finite"):
        translator.translate(torch.full((3, 8, 8), float("nan"), device="cuda"))


def test_folder_translation_on_cuda_equals_the_cpu(tmp_path, monkeypatch):
    """Decoded files cross to the GPU and back as pinned uint8 levels: the outputs match the CPU's.  On the GPU the
    main thread works with one intra-op thread (resources.host_threads), on the CPU with all of them, and after
    either as before."""
    from img2img import translate  # noqa: PLC0415

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = []
    to_floats = translate.from_levels
    monkeypatch.setattr(translate, "from_levels", lambda images: (threads.append(torch.get_num_threads()),
                                                                   to_floats(images))[1])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    source = tmp_path / "in"
    source.mkdir()
    sizes = [(40, 56), (64, 64), (33, 47), (64, 64), (100, 72)]
    for index, (height, width) in enumerate(sizes):
        levels = ((smooth_batch(1, height, width, seed=index)[0].permute(1, 2, 0).numpy() + 1) * 127.5).round()
        Image.fromarray(levels.astype(np.uint8)).save(source / f"{index}.{'png' if index % 2 else 'jpg'}")
    torch.manual_seed(0)
    net = init_weights(ResnetGenerator(3, 3, 16, 2, "instance")).eval()
    info = generator_info(net, 3, 3)
    outputs = {}
    for device in ("cpu", "cuda"):
        summary = Translator(net, info, device, amp=False, batch_size=2).translate_folder(
            source, tmp_path / device, progress=False, workers=2)
        assert summary.ok and len(summary.translated) == len(sizes)
        outputs[device] = {p.name: np.asarray(Image.open(p)).astype(int) for p in (tmp_path / device).iterdir()}
        assert set(threads) == {2 if device == "cpu" else 1} and torch.get_num_threads() == 2
        threads.clear()
    torch.set_num_threads(before)
    for name, expected in outputs["cpu"].items():
        assert outputs["cuda"][name].shape == expected.shape
        assert np.abs(outputs["cuda"][name] - expected).max() <= 1, name  # cuDNN (TF32) against the CPU's float32


def _settled_batch_norm_net() -> nn.Module:
    """A ResNet with batch norm in evaluation mode: convolution is local, so tiles can equal the whole image."""
    torch.manual_seed(0)
    net = init_weights(ResnetGenerator(3, 3, 16, 1, "batch"))
    with torch.no_grad():
        for _ in range(3):
            net(smooth_batch(4, 64, 64))
    return net.eval()


@pytest.fixture
def float32_convolutions():
    """Exact float32 in cuDNN (no TF32), so that tiles and whole images differ only by summation order."""
    with exact_float32():
        yield


def test_a_small_memory_budget_makes_translation_tile_and_match_the_whole_image(float32_convolutions):
    net = _settled_batch_norm_net()
    info = generator_info(net, 3, 3)
    image = smooth_batch(1, 2048, 2048, seed=5)
    whole = Translator(net, info, "cuda", amp=False).translate_tensor(image).cpu()
    # the budget read off the free memory: too small for the image, so it goes through tiles by itself
    tight = Translator(net, info, "cuda", amp=False, max_pixels=512 * 512, tile_overlap=128)
    calls = []
    forward = tight._forward
    tight._forward = lambda batch: calls.append(tuple(batch.shape)) or forward(batch)
    assert torch.allclose(tight.translate_tensor(image).cpu(), whole, atol=1e-3)
    assert calls and all(shape[-1] <= 512 for shape in calls)
    # the GPU itself runs out of memory: the whole image fails, and translation retries in smaller tiles.  That
    # translator's CUDA graph (its batches of 8 tiles) goes first: its pool, 390 MiB on an H200, is memory the
    # cap counts and no other translator can use, and the retries ran out beside it in two leases
    del tight, forward
    gc.collect()  # the stand-in forward above refers to the translator: a cycle
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    # the cap counts what the allocator holds from the device (reserved), not what tensors use (allocated)
    fraction = (torch.cuda.memory_reserved() + (1 << 30)) / total  # 1 GiB more than is held now
    unbounded = Translator(net, info, "cuda", amp=False, max_pixels=1 << 40, tile_overlap=256)
    big = smooth_batch(1, 4096, 4096, seed=6)
    reference = Translator(net, info, "cuda", amp=False, tile=2048, tile_overlap=256).translate_tensor(big).cpu()
    torch.cuda.empty_cache()
    messages = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("img2img.translate")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    torch.cuda.set_per_process_memory_fraction(fraction)
    try:
        result = unbounded.translate_tensor(big).cpu()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert any(m.startswith("out of memory: translating in") for m in messages), messages
    assert torch.allclose(result, reference, atol=1e-3)


# -- checkpoints, distributed -------------------------------------------------------------------------------
@pytest.mark.parametrize("first, then", [("cuda", "cpu"), ("cpu", "cuda")])
def test_a_checkpoint_written_on_one_device_resumes_on_the_other(first, then, tmp_path):
    root = write_unpaired(tmp_path)
    trainer = cyclegan_trainer(root, tmp_path, steps=6, train={"device": first, "save_every_steps": 3})
    trainer.fit(stop_after_steps=3)
    saved = {name: {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
             for name, net in trainer.model.nets.items()}
    payload, run = open_checkpoint(tmp_path / "run")
    assert payload["step"] == 3 and (first != "cuda" or "cuda" in payload["rng"])
    resumed = Trainer(run.replace_train(device=then), tmp_path / "run", resume=payload)
    assert resumed.device.type == then
    for name, net in resumed.model.nets.items():  # the weights arrive bit for bit
        for key, value in net.state_dict().items():
            assert value.device.type == then and torch.equal(value.cpu(), saved[name][key]), (name, key)
    for optimizer in resumed.optimizers.values():
        for state in optimizer.state.values():
            assert all(t.device.type == then for t in state.values() if torch.is_tensor(t) and t.dim())
    assert all(image.device.type == then for image in resumed.model.pool_a.images)
    result = resumed.fit()
    assert result.step == 6
    final = checkpoint.read(tmp_path / "run")
    assert all(torch.isfinite(v).all() for net in final["networks"].values() for v in net.values())


def test_torchrun_trains_on_the_local_ranks_gpu(tmp_path):
    out = tmp_path / "run"
    result = torchrun("-m", "img2img.cli", "train", "mnist-gan", "--steps", "20", "--batch-size", "16",
                      "--device", "cuda", "--out", out, processes=1)
    assert result.stdout.count("checkpoint:") == 1
    log = (out / "train.log").read_text()
    assert "on cuda" in log and "finished at step 20" in log
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(value) for record in records for value in record.values()
               if isinstance(value, float))


def test_nccl_process_group_with_ddp_networks(tmp_path, monkeypatch):
    """One GPU holds one NCCL rank (NCCL refuses two ranks on one device), so the distributed path runs here
    as a job of one: NCCL process group, DDP-wrapped networks, the RNG gather of every save, the barrier."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(Distributed, "enabled", property(lambda self: True))
    root = write_unpaired(tmp_path)
    trainer = cyclegan_trainer(root, tmp_path, steps=4, train={"device": "cuda", "save_every_steps": 2})
    try:
        assert dist.get_backend() == "nccl"
        assert isinstance(trainer.wrapped["g_ab"], DistributedDataParallel)
        result = trainer.fit()
    finally:
        teardown(trainer.job)
    assert result.step == 4 and len(checkpoint.read(tmp_path / "run")["rng_ranks"]) == 1


def test_speed_settings_apply_on_cuda(tmp_path):
    trainer, _ = tiny_trainer("cyclegan", tmp_path, device="cuda", channels_last=True, cudnn_benchmark=False)
    assert not torch.backends.cudnn.benchmark
    conv = trainer.model.nets["g_ab"].model[1]
    assert conv.weight.is_cuda and conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert speed.uses_cuda_graphs("reduce-overhead", trainer.device)
    torch.backends.cudnn.benchmark = True


def test_auto_chooses_this_gpu_after_one_kernel_ran_on_it(monkeypatch):
    """The device check (img2img.loading.cuda_problem) runs a kernel: on a GPU this torch build has kernels for,
    it passes, and the probe's kernel is what would fail on one it has none for."""
    from img2img import loading  # noqa: PLC0415

    loading.cuda_problem.cache_clear()
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert loading.cuda_problem(0) is None
    assert loading.resolve_device("auto") == torch.device("cuda") == loading.resolve_device("cuda")
    major, minor = torch.cuda.get_device_capability(0)
    assert any(arch.startswith(f"sm_{major}") for arch in torch.cuda.get_arch_list())


def test_amp_means_bf16_autocast_on_a_gpu_that_computes_in_bf16(tmp_path):
    from img2img.speed import bf16_autocast  # noqa: PLC0415

    device = torch.device("cuda")
    assert bf16_autocast(True, device) == (torch.cuda.get_device_capability(device) >= (8, 0))
    trainer, _ = tiny_trainer("pix2pix", tmp_path, device="cuda")
    assert trainer.autocast == bf16_autocast(True, device)
