"""DistributedDataParallel through torchrun, two CPU processes with gloo."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image

from img2img import checkpoint
from img2img.train import load_model, resume

from test_pix2pix import smooth_images

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="this PyTorch build has no gloo backend to start CPU processes with")
WORKER = Path(__file__).with_name("distributed_worker.py")


def torchrun(*args, cwd=None, processes=2):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=600)
    if result.returncode != 0 and "Address already in use" in result.stderr:
        pytest.skip("could not open a local port for the process group")
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _colour_folders(root):
    for side, seed in (("a", 1), ("b", 2)):
        (root / side).mkdir(parents=True)
        for index, image in enumerate(smooth_images(4, seed=seed)):
            Image.fromarray(image.astype(np.uint8)).convert("RGB").save(root / side / f"{index}.png")
    return root


@pytest.mark.parametrize("model", ["mnist-gan", "cyclegan"])
def test_ranks_hold_identical_weights_after_every_step_and_see_different_data(model, tmp_path):
    data = _colour_folders(tmp_path / "data") if model == "cyclegan" else None
    out = tmp_path / "run"
    torchrun(WORKER, model, out, *([data] if data else []))
    report = json.loads((out / "ranks.json").read_text())
    assert report["world_size"] == 2
    assert report["identical"] == [True] * 4
    assert all(report["data_differs"])
    payload = checkpoint.read(out)
    assert len(payload["rng_ranks"]) == 2
    assert not any(key.startswith("module.") for net in payload["networks"].values() for key in net)


def test_torchrun_cli_run_writes_once_loads_in_a_single_process_and_every_rank_resumes(tmp_path):
    out = tmp_path / "run"
    result = torchrun("-m", "img2img.cli", "train", "mnist-gan", "--steps", "6", "--batch-size", "4", "--device",
                      "cpu", "--save-every", "3", "--out", out)
    assert result.stdout.count("checkpoint:") == 1  # only rank 0 reports
    assert sorted(p.name for p in out.iterdir()) == [".lock", "checkpoints", "config.json", "last.ckpt",
                                                     "metrics.jsonl", "samples", "train.log"]
    assert (out / "train.log").read_text().count("finished at step 6") == 1
    assert "8 global" in (out / "train.log").read_text()
    model, run, payload = load_model(out)
    assert payload["world_size"] == 2 and model.nets["g"](torch.randn(2, 100)).shape == (2, 1, 28, 28)
    alone = tmp_path / "alone"
    shutil.copytree(out, alone)
    assert resume(alone, steps=8).step == 8  # a single process continues the distributed run
    torchrun("-m", "img2img.cli", "train", "mnist-gan", "--resume", out, "--steps", "8")  # and so do both ranks
    assert checkpoint.read(out)["step"] == 8
