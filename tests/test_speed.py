"""Speed settings (channels_last, torch.compile, cuDNN benchmark) change how a step runs, not what it computes;
the folder pipeline moves images as bytes without changing a level; the bench ladder reports each mean.
Nothing here is timed: speed is measured by `img2img bench` (see BENCHMARKS.md)."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
import torch

from img2img import errors, speed
from img2img.bench import SpeedSettings, bench_training
from img2img.checkpoint import read
from img2img.data.images import quantize, read_image_bits, to_tensor
from img2img.errors import UserError
from img2img.train import Trainer, load_model, train
from img2img.translate import GeneratorInfo, Translator, _to_array, from_levels, to_levels

from test_cli import assert_one_line_error, invoke
from test_stargan import _domains
from test_translate import photos  # noqa: F401 - fixture
from test_unpaired import cyclegan_trainer, write_unpaired


@pytest.fixture
def aot_eager(monkeypatch):
    """torch.compile with the same graph capture and autograd tracing but no code generation (seconds, not a
    minute, on the CPU); the inductor path itself is exercised by one MNIST test below."""
    monkeypatch.setattr(speed, "BACKEND", "aot_eager")
    torch.compiler.reset()
    yield
    torch.compiler.reset()


def steps_of(trainer, count):
    batches = trainer.data.iterate(0)
    return [{key: float(value) for key, value in trainer.train_step(next(batches)).items()} for _ in range(count)]


@pytest.mark.parametrize("settings", [dict(channels_last=True), dict(compile="default"),
                                      dict(channels_last=True, compile="default")])
def test_speed_settings_train_the_same_cyclegan(settings, aot_eager, tmp_path):
    root = write_unpaired(tmp_path)
    torch.manual_seed(0)
    plain = cyclegan_trainer(root, tmp_path / "plain", steps=2)
    initial = {name: [p.detach().clone() for p in net.parameters()] for name, net in plain.model.nets.items()}
    expected = steps_of(plain, 2)
    torch.manual_seed(0)
    fast = cyclegan_trainer(root, tmp_path / "fast", steps=2, train=settings)
    assert fast.config.channels_last == settings.get("channels_last", False)
    got = steps_of(fast, 2)
    for want, have in zip(expected, got):
        assert want.keys() == have.keys()
        for key in want:
            assert have[key] == pytest.approx(want[key], rel=1e-3, abs=1e-4), key
    for name, net in fast.model.nets.items():  # every parameter of all four networks was trained
        moved = [not torch.equal(p, q) for p, q in zip(net.parameters(), initial[name])]
        assert all(moved), name
    if settings.get("channels_last"):
        conv = fast.model.nets["g_ab"].model[1]
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert list(fast.state()["networks"]["g_ab"]) == list(plain.state()["networks"]["g_ab"])  # no wrapper names


def test_inductor_compiled_training_saves_plain_checkpoints_that_load_and_resume(tmp_path, mnist_run):
    torch.compiler.reset()
    result = train(mnist_run(steps=2, batch_size=8, compile="default", channels_last=True), tmp_path / "run")
    payload = read(result.checkpoint)
    assert payload["config"]["train"]["compile"] == "default"
    assert not any("_orig_mod" in key for net in payload["networks"].values() for key in net)
    model, run, _ = load_model(result.checkpoint)
    assert run.train.compile == "default" and model.nets["g"](torch.randn(2, 100)).shape[0] == 2
    torch.compiler.reset()
    result, output = invoke("train", "mnist-gan", "--resume", tmp_path / "run", "--steps", 3, "--compile", "off",
                            "--no-channels-last")
    assert result.exit_code == 0, output
    resumed = read(tmp_path / "run" / "last.ckpt")
    assert resumed["step"] == 3 and resumed["config"]["train"]["compile"] == "off"
    assert not resumed["config"]["train"]["channels_last"]


def test_foreach_adam_is_there_for_comparison(tmp_path, mnist_run):
    fused = train(mnist_run(steps=1), tmp_path / "fused")
    foreach = train(mnist_run(steps=1, fused_adam=False), tmp_path / "foreach")
    assert read(fused.checkpoint)["optimizers"]["g"]["param_groups"][0]["fused"]
    group = read(foreach.checkpoint)["optimizers"]["g"]["param_groups"][0]
    assert group["foreach"] and not group["fused"]


def test_resume_accepts_speed_options_and_still_refuses_model_changes(tmp_path, mnist_run):
    train(mnist_run(steps=2, batch_size=4), tmp_path / "run")
    result, _ = invoke("train", "mnist-gan", "--resume", tmp_path / "run", "--lr", "0.1")
    assert result.exit_code == 2 and "--lr cannot be changed when resuming" in result.output
    result, output = invoke("train", "mnist-gan", "--resume", tmp_path / "run", "--steps", 3, "--channels-last")
    assert result.exit_code == 0, output
    assert read(tmp_path / "run" / "last.ckpt")["config"]["train"]["channels_last"]


def test_an_unknown_compile_mode_is_a_one_line_error(tmp_path):
    result, _ = invoke("train", "mnist-gan", "--compile", "fastest", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "--compile" in result.output and "Traceback" not in result.output
    with pytest.raises(Exception, match="--compile must be one of"):
        speed.check_compile_mode("fastest")


def test_compiling_without_a_compiler_or_with_a_failing_one_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(speed.shutil, "which", lambda name: None)
    result, _ = invoke("train", "mnist-gan", "--compile", "default", "--steps", 1, "--device", "cpu",
                       "--out", tmp_path / "r")
    assert_one_line_error(result, "--compile default", "C++ compiler")
    monkeypatch.undo()

    def failing(graph, inputs):  # as TorchInductor reports g++ failing (a full TMPDIR): it said "(Command:)"
        raise RuntimeError("CppCompileError: C++ compile error\n\nCommand:\ng++ /tmp/k.cpp -O3 -o /tmp/k.so\n\n"
                           "Output:\n/tmp/k.cpp:26:27: warning: variable 'a' set but not used\n/tmp/k.cpp:256:1: "
                           "fatal error: error writing to /tmp/ccX.s: No space left on device\ncompilation "
                           "terminated.\n")

    monkeypatch.setattr(speed, "BACKEND", failing)
    torch.compiler.reset()
    result, _ = invoke("train", "mnist-gan", "--compile", "default", "--steps", 1, "--device", "cpu",
                       "--out", tmp_path / "r2", "--batch-size", 4)
    reason = "torch.compile failed (fatal error: error writing to /tmp/ccX.s: No space left on device)"
    assert_one_line_error(result, f"Error: --compile default: {reason}; run without --compile")
    translator = Translator(torch.nn.Conv2d(3, 3, 1), GeneratorInfo(3, 3, 1), compile="default")
    with pytest.raises(UserError, match=re.escape(reason)):
        translator.translate_tensor(torch.zeros(1, 3, 8, 8))
    torch.compiler.reset()


def compiler_failing_at(count, monkeypatch):
    """--compile auto compiling on the CPU as on CUDA (``default``), with a compiler that fails at the ``count``-th
    network it compiles (and passes the others through as they are); the list of what it was given."""
    compiled = []

    def failing(graph, inputs):
        compiled.append(graph)
        if len(compiled) == count:
            raise RuntimeError("the compiler broke")
        return graph.forward

    monkeypatch.setattr(speed, "BACKEND", failing)
    monkeypatch.setattr(speed, "resolve_compile", lambda mode, device, **settings: "default" if mode == "auto"
                        else mode)  # what auto stands for on CUDA
    torch.compiler.reset()
    return compiled


def test_a_compile_fault_under_compile_auto_retakes_the_step_eagerly_and_costs_nothing(tmp_path, mnist_run,
                                                                                       monkeypatch, caplog):
    """--compile auto compiles on its own (CUDA, training), so a fault of torch's compiler must not stop the run:
    here the compiler fails at the third network it compiles, in the MNIST GAN's D phase, after G's phase has
    already stepped.  The step is taken again from what it started with, eagerly, and the run goes on eager: it
    ends bit for bit where an eager run ends, saying so in one line.  An explicit mode stops at the same fault."""
    eager = Trainer(mnist_run(steps=3, batch_size=4, compile="off"), tmp_path / "eager")
    eager_logs = steps_of(eager, 3)
    compiled = compiler_failing_at(3, monkeypatch)
    auto = Trainer(mnist_run(steps=3, batch_size=4), tmp_path / "auto")
    assert auto.config.compile == "auto" and auto.compile_mode == "default"
    with caplog.at_level(logging.WARNING, logger="img2img"):
        auto_logs = steps_of(auto, 3)
    assert len(compiled) == 3 and auto.compile_mode == "off"  # nothing compiled after the fault
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert warnings[0].startswith("--compile auto: torch.compile failed (") and "the compiler broke" in warnings[0]
    assert warnings[0].endswith("training goes on without compiling (as with --compile off)")
    assert auto_logs == eager_logs
    for name, net in eager.model.nets.items():
        for (key, want), have in zip(net.state_dict().items(), auto.model.nets[name].state_dict().values()):
            assert torch.equal(want, have), (name, key)
    for name, optimizer in eager.optimizers.items():
        want, have = optimizer.state_dict()["state"], auto.optimizers[name].state_dict()["state"]
        assert all(torch.equal(want[i][k], have[i][k]) for i in want for k in want[i]), name

    compiled.clear()  # bench says what it timed
    torch.compiler.reset()
    with caplog.at_level(logging.WARNING, logger="img2img"):
        timed = bench_training("mnist-gan", size=28, batch_size=4, steps=1, warmup=1, device="cpu",
                               speed=SpeedSettings(compile="auto"))
    assert timed["settings"]["compile"] == "off" and len(compiled) == 3

    compiled.clear()  # asked for by name, the same fault stops the run in one line
    torch.compiler.reset()
    result, _ = invoke("train", "mnist-gan", "--compile", "default", "--steps", 2, "--batch-size", 4,
                       "--device", "cpu", "--out", tmp_path / "explicit")
    assert_one_line_error(result, "--compile default", "torch.compile failed", "the compiler broke")
    torch.compiler.reset()


def test_levels_cross_as_bytes_without_changing_a_value():
    levels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).repeat(2, 3, 1, 1)
    array = levels[0].permute(1, 2, 0).numpy().astype(np.float32) / 255.0  # what the file reader gives
    assert torch.equal(from_levels(levels)[0], to_tensor(array))  # bit for bit the float path's input
    outputs = torch.rand(2, 3, 40, 40) * 2.2 - 1.1  # beyond [-1, 1] too: clamped
    for bits in (8, 16):
        expected = np.stack([quantize(_to_array(out), bits) for out in outputs])
        assert np.array_equal(to_levels(outputs, bits).permute(0, 2, 3, 1).numpy(), expected)


def test_decoding_workers_ship_levels_only_when_no_conversion_mixes_them(tmp_path):
    from PIL import Image  # noqa: PLC0415

    from img2img.translate import _ImageFiles, _Job  # noqa: PLC0415

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(np.full((4, 4), 0.25, np.float32), mode="F").save(tmp_path / "float.tif")
    jobs = [_Job(tmp_path / name, tmp_path / "out" / name) for name in ("grey.png", "float.tif")]
    every = list(range(len(jobs)))
    as_rgba = _ImageFiles(jobs, every, 4, None)[0]["tensor"]  # grey repeated, opaque alpha: still levels
    assert as_rgba.dtype == torch.uint8 and torch.equal(as_rgba[0], torch.from_numpy(grey))
    assert bool((as_rgba[3] == 255).all()) and torch.equal(as_rgba[1], as_rgba[2])
    resized = _ImageFiles(jobs, every, 3, 8)[0]["tensor"]  # resampling mixes levels: floats in [-1, 1]
    assert resized.dtype == torch.float32 and resized.shape == (3, 8, 8)
    floating = _ImageFiles(jobs, every, 1, None)[1]["tensor"]  # a floating-point file is never rounded to 8 bits
    assert floating.dtype == torch.float32 and torch.allclose(floating, torch.full((1, 4, 4), -0.5))


def test_folder_translation_matches_single_images_with_and_without_speed_settings(photos, tmp_path, aot_eager):  # noqa: F811
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(8, 3, 1),
                              torch.nn.Tanh())
    info = GeneratorInfo(3, 3, 1)
    plain = Translator(net, info, batch_size=2)
    fast = Translator(net, info, batch_size=2, channels_last=True, compile="default")
    plain.translate_folder(photos, tmp_path / "plain", progress=False, workers=2)
    fast.translate_folder(photos, tmp_path / "fast", progress=False, workers=0)
    for name in ("a.png", "sub/b.png", "sub/deeper/c.png"):
        one = plain.translate(photos / name.replace("sub/b.png", "sub/b.jpg"))
        folder_plain = read_image_bits(tmp_path / "plain" / name)[0]
        folder_fast = read_image_bits(tmp_path / "fast" / name)[0]
        assert np.array_equal(quantize(folder_plain), one), name  # the folder pipeline changes no level
        assert np.abs(quantize(folder_fast).astype(int) - one).max() <= 1, name


def test_bench_ladder_reports_each_rung_on_the_cpu(aot_eager, monkeypatch):
    result, output = invoke("bench", "pix2pix", "--size", 32, "--steps", 1, "--warmup", 0, "--device", "cpu",
                            "--ladder", "--json")
    assert result.exit_code == 0, output
    rungs = json.loads(output.strip().splitlines()[-1])["ladder"]
    assert [r["rung"] for r in rungs] == ["float32, eager, foreach Adam", "+ fused Adam", "+ channels_last",
                                         "+ torch.compile"]  # no CUDA rungs on the CPU
    assert rungs[0]["speedup_over_first"] == 1.0 and all(r["seconds_per_step"] > 0 for r in rungs)
    assert not rungs[0]["settings"]["fused_adam"] and rungs[1]["settings"]["fused_adam"]
    assert rungs[2]["settings"]["channels_last"] and rungs[3]["settings"]["compile"] == "default"
    assert rungs[3]["flops_per_step"] == rungs[0]["flops_per_step"]  # same work, counted eagerly
    # each rung is reported as it is measured (on stderr), so that a ladder cut short still tells its figures
    progress = [line for line in output.splitlines() if " ms per step, " in line]
    assert [line.split(":")[0] for line in progress] == [r["rung"] for r in rungs]
    assert progress[0].endswith(f"{rungs[0]['seconds_per_step'] * 1000:.2f} ms per step, "
                                f"{rungs[0]['images_per_second']:.1f} images/s")
    # without --json, the same rungs as a table (measured once: the ladder itself is the one above)
    from img2img import bench  # noqa: PLC0415

    monkeypatch.setattr(bench, "ladder", lambda *args, progress, **kwargs: [progress(r) or r for r in rungs])
    result, output = invoke("bench", "pix2pix", "--size", 32, "--steps", 1, "--warmup", 0, "--device", "cpu",
                            "--ladder")
    assert result.exit_code == 0, output
    rows = [line for line in output.splitlines() if line.startswith("| ") and " ms per " not in line]
    assert [row.split(" | ")[0][2:] for row in rows[1:]] == [r["rung"] for r in rungs], output
    assert all(f"| {r['seconds_per_step'] * 1000:.2f} | {r['images_per_second']:.1f} |" in row
               for r, row in zip(rungs, rows[1:])), output


def test_bench_io_only_measures_the_folder_pipeline(aot_eager):
    result, output = invoke("bench", "translate", "--size", 32, "--steps", 8, "--device", "cpu", "--workers", 0,
                            "--io-only", "--json")
    assert result.exit_code == 0, output
    report = json.loads(output.strip().splitlines()[-1])
    assert report["settings"]["generator"].startswith("1x1") and report["images_per_second"] > 0
    result, output = invoke("bench", "translate", "--size", 16, "--steps", 2, "--device", "cpu", "--workers", 0,
                            "--io-only", "--ladder", "--json")
    rungs = json.loads(output.strip().splitlines()[-1])["ladder"]
    assert [r["rung"] for r in rungs] == ["float32, eager", "+ channels_last", "+ torch.compile"]  # no optimiser
    result, _ = invoke("bench", "cyclegan", "--io-only", "--device", "cpu")
    assert_one_line_error(result, "--io-only")


def test_a_compile_mode_is_refused_for_a_gradient_penalty(tmp_path, aot_eager, monkeypatch):
    """StarGAN's penalty and --loss wgan-gp's differentiate D's gradient: compiled autograd refuses that double
    backward, so an explicit --compile is refused in one line before training (--compile auto leaves it off),
    and the bench ladder leaves out its compiled rungs."""
    data = _domains(tmp_path / "domains")
    for args in (["train", "stargan", "--data", data, "--size", 16], ["train", "mnist-gan", "--loss", "wgan-gp"]):
        result, _ = invoke(*args, "--steps", 2, "--batch-size", 2, "--device", "cpu", "--compile", "default",
                           "--out", tmp_path / "r")
        assert_one_line_error(result, "--compile default", "double backward", "--compile off")
        assert not (tmp_path / "r").exists()  # refused before the run folder is made
    result, _ = invoke("bench", "stargan", "--size", 32, "--steps", 1, "--device", "cpu", "--compile", "default")
    assert_one_line_error(result, "--compile default", "double backward")
    result, output = invoke("bench", "stargan", "--size", 32, "--batch-size", 2, "--steps", 1, "--warmup", 0,
                            "--device", "cpu", "--ladder", "--json")
    assert result.exit_code == 0, output
    assert "the compiled rungs are left out: StarGAN's gradient penalty" in output
    rungs = json.loads(output.strip().splitlines()[-1])["ladder"]
    assert [r["rung"] for r in rungs] == ["float32, eager, foreach Adam", "+ fused Adam", "+ channels_last"]
    # the refusal is real: compiled, the penalty's backward fails
    from img2img.models import MODELS  # noqa: PLC0415

    monkeypatch.setattr(MODELS["stargan"], "compile_refusal", classmethod(lambda cls, config: None))
    with pytest.raises(RuntimeError, match="double backward"):
        invoke("train", "stargan", "--data", data, "--steps", 1, "--batch-size", 2, "--size", 16, "--device", "cpu",
               "--compile", "default", "--out", tmp_path / "compiled")


def test_a_layout_fault_in_torchs_compiled_code_is_one_line_naming_the_option():
    """TorchInductor's code checks each operator's output strides against torch's predictions, and some are
    wrong (replication padding's backward with channels_last inputs, in torch 2.14 on the CPU): the run stops
    with one line that names the option and the operator, not an AssertionError from generated code.  Should a
    torch fix the prediction, the compiled network must instead compute what the eager one does."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.ReplicationPad2d(1), torch.nn.Conv2d(4, 4, 3))
    net = net.to(memory_format=torch.channels_last)
    compiled = speed.compile_module(net, "default", torch.device("cpu"))
    images = torch.randn(2, 4, 8, 8).to(memory_format=torch.channels_last).requires_grad_()
    torch.compiler.reset()
    try:
        with speed.compile_errors("default", channels_last=True):
            compiled(images).sum().backward()
    except UserError as error:
        message = str(error)
        assert message.startswith("--compile default: the compiled code's call to ")
        assert "replication_pad2d_backward" in message and "\n" not in message
        assert message.endswith("run with --compile off or without --channels-last")
    else:
        got = images.grad.clone()
        images.grad = None
        net(images).sum().backward()
        assert torch.allclose(got, images.grad, atol=1e-5)
    finally:
        torch.compiler.reset()


def test_bf16_autocast_only_on_gpus_that_compute_in_bf16(monkeypatch, logged, caplog):
    """A T4 (compute capability 7.5; torch's CUDA 13 builds still have kernels for it) only emulates bf16, and
    cuDNN has no bf16 convolutions for it: --amp, the default, made every network slower or failed there."""
    capability = {"cuda:0": (7, 5), "cuda:1": (8, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: capability[str(device)])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "Tesla T4")
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(errors, "_SAID", set())
    caplog.set_level(logging.INFO, logger="img2img")  # (an info line, as the CLI shows it)
    t4, a100 = torch.device("cuda", 0), torch.device("cuda", 1)
    assert not speed.bf16_autocast(True, t4) and not speed.bf16_autocast(True, t4)
    assert logged == ["bf16 autocast left off: Tesla T4 (compute capability 7.5) does not compute in bf16 (from 8.0 "
                      "on); float32"]  # once
    assert speed.bf16_autocast(True, a100) and not speed.bf16_autocast(False, a100)
    assert not speed.bf16_autocast(True, torch.device("cpu"))
    assert SpeedSettings().in_effect(t4, training=True)["amp"] is False
    assert SpeedSettings().in_effect(a100, training=True)["amp"] is True
    assert len(logged) == 1
