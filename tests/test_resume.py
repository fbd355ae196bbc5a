"""An interrupted and resumed run ends bit for bit where an uninterrupted one does (CPU)."""

import os
import signal
import subprocess
import sys
import time

import torch

from img2img import checkpoint
from img2img.train import Trainer, resume, train


def _weights_and_optimizers(path):
    payload = checkpoint.read(path)
    return payload["step"], {**payload["networks"], **{f"ema.{k}": v for k, v in payload["ema"].items()}}, \
        payload["optimizers"]


def _assert_same(a, b):
    step_a, nets_a, opts_a = a
    step_b, nets_b, opts_b = b
    assert step_a == step_b
    for name in nets_a:
        assert all(torch.equal(nets_a[name][k], nets_b[name][k]) for k in nets_a[name]), name
    for name in opts_a:
        state_a, state_b = opts_a[name]["state"], opts_b[name]["state"]
        assert all(torch.equal(state_a[i][k], state_b[i][k]) for i in state_a for k in state_a[i]), name


def test_resumed_run_equals_uninterrupted_run(tmp_path, mnist_run):
    run = mnist_run(steps=25, save_every_steps=10, decay_steps=10, ema_decay=0.9)
    train(run, tmp_path / "whole")
    interrupted = tmp_path / "parts"
    interrupted.mkdir()
    (interrupted / "config.json").write_text(run.to_json())
    Trainer(run, interrupted).fit(stop_after_steps=13)  # saves at 10 and at the stop, 13
    assert checkpoint.read(interrupted)["step"] == 13
    resume(interrupted)
    _assert_same(_weights_and_optimizers(tmp_path / "whole"), _weights_and_optimizers(interrupted))


def test_resume_from_an_older_step_checkpoint_file(tmp_path, mnist_run):
    run = mnist_run(steps=20, save_every_steps=10)
    train(run, tmp_path / "whole")
    parts = tmp_path / "parts"
    train(run, parts)
    older = parts / "checkpoints" / "step-00000010.ckpt"
    resume(older)
    _assert_same(_weights_and_optimizers(tmp_path / "whole"), _weights_and_optimizers(parts))


def test_sigkilled_cli_run_resumes_bit_identically(tmp_path):
    """The real thing: SIGKILL a training process after its first checkpoint, resume it, compare."""
    command = [sys.executable, "-m", "img2img.cli", "train", "mnist-gan", "--steps", "600", "--batch-size", "8",
               "--save-every", "50", "--sample-every", "600", "--device", "cpu", "--seed", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command + ["--out", str(tmp_path / "whole")], check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    process = subprocess.Popen(command + ["--out", str(killed)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / "last.ckpt").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    step_at_kill = checkpoint.read(killed)["step"]
    resumed = subprocess.run([sys.executable, "-m", "img2img.cli", "train", "mnist-gan", "--resume", str(killed)],
                             env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert step_at_kill < 600, "the process finished before it could be killed"
    _assert_same(_weights_and_optimizers(tmp_path / "whole"), _weights_and_optimizers(killed))
