"""`img2img bench`: every target runs its real step on the CPU at a tiny size and reports the documented fields
(no timing is asserted: speed targets are checked by hand on a GPU, see BENCHMARKS.md)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings

import pytest

from img2img.bench import sync_warnings, thread_role

from test_cli import assert_one_line_error, invoke

FIELDS = {"seconds_per_step", "images_per_second", "peak_memory_bytes", "achieved_tflops", "device",
          "torch_version", "settings", "fraction_of_peak", "flops_per_step"}


@pytest.mark.parametrize("target, size", [("mnist-gan", 28), ("pix2pix", 32), ("cyclegan", 32), ("discogan", 16),
                                          ("translate", 16)])
def test_bench_runs_each_target_and_reports_json(target, size):
    only = ["--workers", 0] if target == "translate" else ["--warmup", 0]  # each applies to its kind only
    result, output = invoke("bench", target, "--size", size, "--batch-size", 2, "--steps", 2, *only,
                            "--device", "cpu", "--json")
    assert result.exit_code == 0, output
    report = json.loads(output.strip().splitlines()[-1])
    assert FIELDS <= set(report)
    assert report["settings"]["target"] == target and report["settings"]["batch_size"] == 2
    assert report["seconds_per_step"] > 0 and report["images_per_second"] > 0
    assert report["flops_per_step"] > 0 and report["peak_memory_bytes"] > 0 and report["device"].startswith("cpu")


def test_bench_measures_the_peak_memory_from_before_the_warm_up(monkeypatch):
    """Compiling and CUDA graphs' capture happen in the warm-up, and a graph's pool is taken then (its replays
    allocate nothing): a peak measured from after it left the pool out."""
    from img2img import bench  # noqa: PLC0415
    from img2img.train import Trainer  # noqa: PLC0415

    events, step, reset = [], Trainer.train_step, bench._reset_peak
    monkeypatch.setattr(Trainer, "train_step", lambda self, batch: events.append("step") or step(self, batch))
    monkeypatch.setattr(bench, "_reset_peak", lambda device: events.append("reset") or reset(device))
    bench.bench_training("pix2pix", size=32, batch_size=2, steps=2, warmup=3, device="cpu")
    assert events.count("reset") == 1
    assert events[events.index("reset"):].count("step") >= 3 + 2  # the warm-up's steps, then the timed ones
    assert events[:events.index("reset")] == ["step"]  # the step whose floating-point operations are counted


def test_bench_refuses_sizes_the_networks_cannot_take():
    result, _ = invoke("bench", "discogan", "--size", 48, "--device", "cpu")
    assert_one_line_error(result, "--size", "power of two")
    result, _ = invoke("bench", "cyclegan", "--size", 12, "--device", "cpu")  # the PatchGAN's last map: 1×1
    assert_one_line_error(result, "--size 12", "larger images")
    assert "--n-layers" not in result.output  # an option of train's, not of bench's


@pytest.mark.parametrize("target", ["cyclegan", "translate"])
def test_bench_out_of_memory_is_a_one_line_error(monkeypatch, target):
    """A --size or --batch-size too large for the device gave a traceback from deep in a convolution."""
    from img2img.train import Trainer  # noqa: PLC0415
    from img2img.translate import Translator  # noqa: PLC0415

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 34359738368 bytes. Error code 12")

    if target == "translate":
        monkeypatch.setattr(Translator, "translate_folder", out_of_memory)
    else:
        monkeypatch.setattr(Trainer, "train_step", out_of_memory)
    result, _ = invoke("bench", target, "--size", 32, "--batch-size", 2, "--steps", 1, "--device", "cpu")
    assert_one_line_error(result, f"out of CPU memory (tried to allocate 34359738368 bytes): {target} at --size 32 "
                                  "with --batch-size 2 does not fit")


def test_host_synchronisations_are_the_sync_debug_modes_reports_not_its_notice():
    """CUDA's sync debug mode warns once per process, when first switched on, that it is a prototype
    ("Synchronization debug mode is …"): that notice is no synchronisation (the GPU's first run counted it as one
    a step)."""
    def caught(message, filename, lineno):
        return warnings.WarningMessage(UserWarning(message), UserWarning, filename, lineno)

    notice = caught("Synchronization debug mode is a prototype feature and does not yet detect all synchronizing "
                    "operations (Triggered internally at /pytorch/torch/csrc/cuda/Module.cpp:1003.)",
                    "torch/cuda/__init__.py", 1270)
    sync = caught("called a synchronizing CUDA operation (Triggered internally at "
                  "/pytorch/c10/cuda/CUDAFunctions.cpp:157.)", "img2img/models/pix2pix.py", 170)
    assert sync_warnings([notice]) == (0, [])
    assert sync_warnings([notice, sync, sync]) == (2, ["img2img/models/pix2pix.py:170"])


def test_profile_says_where_the_device_and_the_hosts_time_go(tmp_path):
    """--profile writes the operators' table (torch.profiler) and the host's time by Python function (cProfile),
    where a launch-bound step's time shows."""
    path = tmp_path / "profile.txt"
    result, output = invoke("bench", "pix2pix", "--size", 32, "--batch-size", 2, "--steps", 2, "--warmup", 0,
                            "--device", "cpu", "--profile", path)
    assert result.exit_code == 0, output
    text = path.read_text()
    assert text.startswith("pix2pix training step") and "profiled steps: 10" in text
    assert "aten::convolution" in text  # the operators
    python = text[text.index("host time by Python function over 10 steps"):]
    assert "by time in all" in python and "train_step" in python and "train_phase" in python


def test_translate_profile_says_where_the_threads_were(tmp_path):
    """bench translate --profile: the folder translated once more while each thread is sampled; the file says
    where the main thread was (translating, or waiting for decoded batches) and what the writers did.  Before,
    --profile was refused for translate, whose figure (the folder pipeline's) is the one the GPU hosts missed."""
    path = tmp_path / "profile.txt"
    result, output = invoke("bench", "translate", "--size", 32, "--steps", 24, "--io-only", "--workers", 1,
                            "--device", "cpu", "--profile", path)
    assert result.exit_code == 0, output
    text = path.read_text()
    assert text.startswith("folder translation of 24 32² JPEGs to PNGs, batch 8, 1 decoding processes: ")
    sections = {block.split(":")[0]: block for block in text.split("\n\n")[1:] if block.strip()}
    assert "main" in sections and "writers (thread pool)" in sections, list(sections)
    assert "1.0 threads on average" in sections["main"] and "translate.py:" in sections["main"]
    shares = [float(line.split("%")[0]) for line in sections["main"].splitlines()[1:]]
    assert shares and all(0 < share <= 100 for share in shares) and sum(shares) <= 100.5
    refused, said = invoke("bench", "translate", "--ladder", "--device", "cpu", "--profile", path)
    assert refused.exit_code == 2 and "--profile applies to a single run, not to --ladder" in said


def test_thread_roles_name_the_pipelines_threads():
    assert thread_role("MainThread") == "main"
    assert thread_role("ThreadPoolExecutor-0_13") == "writers (thread pool)"
    assert thread_role("Thread-3 (_pin_memory_loop)") == "pin memory"
    assert thread_role("QueueFeederThread") == "QueueFeederThread" and thread_role("Thread-12") == "Thread"


def test_profiling_on_the_cpu_prints_nothing_of_the_profilers_own(tmp_path):
    """A CUDA build of torch on a machine with no GPU (what pip installs by default): torch.profiler's library
    printed "ERROR:<date> ... DeviceProperties.cpp:56] gpuGetDeviceCount failed with code 35" above the summary.
    A fresh process: the library reads its level once, at its first use."""
    result = subprocess.run([sys.executable, "-m", "img2img.cli", "bench", "mnist-gan", "--steps", "1", "--warmup", "0",
                             "--device", "cpu", "--profile", str(tmp_path / "p.txt")], capture_output=True, text=True,
                            timeout=300, env={k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "p.txt").exists()
    own = [line for line in (result.stdout + result.stderr).splitlines() if re.match(r"[A-Z]+:\d{4}-\d\d-\d\d ", line)]
    assert own == [], own


def test_a_full_temporary_folder_is_named_with_the_option_that_filled_it(tmp_path, monkeypatch):
    """bench translate writes --steps synthetic JPEGs under TMPDIR; on a full disk it ended in "Error: No space
    left on device", naming neither the folder nor the option (Pillow's error names no file)."""
    import errno  # noqa: PLC0415

    from PIL import Image  # noqa: PLC0415

    save, written = Image.Image.save, []

    def fill_up(image, path, *args, **kwargs):
        if str(path).endswith(".jpg") and len(written) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(path)
        return save(image, path, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", fill_up)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # read TMPDIR again
    result, _ = invoke("bench", "translate", "--size", 32, "--steps", 10, "--io-only", "--device", "cpu")
    assert_one_line_error(result, f"--steps 10: {tmp_path} (TMPDIR), where the synthetic JPEGs are written, refused "
                          "JPEG 4 of 10: No space left on device; use fewer --steps, or set TMPDIR")
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone
