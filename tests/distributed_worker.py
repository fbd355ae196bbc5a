"""Run by tests/test_distributed.py under torchrun: train a few steps, compare every rank's weights after each."""

import gc
import json
import sys
from pathlib import Path

import torch

from img2img.config import RunConfig, TrainConfig
from img2img.distributed import from_environment, gather, teardown
from img2img.models.cyclegan import CycleGAN, CycleGANConfig
from img2img.models.mnist_gan import MnistGanConfig
from img2img.train import Trainer


def main(model: str, out: str, data: str | None, steps: int = 4) -> None:
    train = TrainConfig(steps=steps, batch_size=2, device="cpu", num_workers=0, save_every_steps=steps)
    if model == "mnist-gan":
        run = RunConfig("mnist-gan", train, MnistGanConfig())
    else:
        options = CycleGAN.resolve(CycleGANConfig(a=f"{data}/a", b=f"{data}/b", size=32, load_size=32,
                                                  base_channels=4, d_base_channels=4))
        run = RunConfig("cyclegan", train, options)
    job = from_environment()
    trainer = Trainer(run, out, job=job)
    batches = trainer.data.iterate(0)
    identical, data_differs = [], []
    for _ in range(steps):
        batch = trainer.model.move_batch(next(batches), trainer.device)
        first = batch if isinstance(batch, torch.Tensor) else batch[0] if isinstance(batch, tuple) else batch["a"]
        trainer.train_step(batch)
        weights = torch.cat([p.detach().flatten() for p in trainer.model.nets.parameters()])
        every = gather(weights, job)
        identical.append(all(torch.equal(every[0], other) for other in every[1:]))
        inputs = gather(first.sum().item(), job)
        data_differs.append(len(set(inputs)) == len(inputs))
    trainer.save()
    if job.is_main:
        Path(out, "ranks.json").write_text(json.dumps({"world_size": job.world_size, "identical": identical,
                                                       "data_differs": data_differs}))
    # the trainer's DistributedDataParallel reducers go before the process group, as in img2img.train.train:
    # freed after it (when main returned), a reducer's gloo group joined its threads holding the GIL that one of
    # them waited for, and rank 0 never exited (seen on torch 2.4.1, and 2.8.0 with older kornia and tqdm)
    del trainer, batches
    gc.collect()
    teardown(job)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
