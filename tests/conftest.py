"""Shared fixtures: tiny, seeded, CPU-only configurations."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from img2img.config import RunConfig, TrainConfig
from img2img.models.mnist_gan import MnistGanConfig


def pytest_runtest_logreport(report):
    """With IMG2IMG_FAILURES=FILE, write each failure to FILE as it happens (a run cut short by its time limit,
    as on a lent GPU machine, still says what failed and why): where in the test, and the error.  Under
    pytest-xdist the process that ran the test writes it (the report it forwards has a ``node``)."""
    path = os.environ.get("IMG2IMG_FAILURES")
    if path and report.failed and getattr(report, "node", None) is None:
        text = report.longreprtext
        if len(text) > 7000:
            text = f"{text[:2500]}\n[…]\n{text[-4500:]}"
        with open(path, "a") as handle:
            handle.write(f"== {report.nodeid} ({report.when})\n{text}\n\n")


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture
def logged(monkeypatch):
    """The messages logged under ``img2img`` during the test, however the logger is set up (the CLI stops its
    propagation, so ``caplog`` misses them): a handler added to a copy of its handlers, which the test's end drops."""
    import logging  # noqa: PLC0415

    messages: list[str] = []
    logger = logging.getLogger("img2img")
    monkeypatch.setattr(logger, "handlers", [*logger.handlers])
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger.addHandler(handler)
    return messages


def tiny_mnist_run(steps: int = 20, batch_size: int = 8, loss: str = "non-saturating", **train) -> RunConfig:
    settings = dict(steps=steps, batch_size=batch_size, device="cpu", save_every_steps=10, sample_every_steps=10,
                    log_every_steps=5, num_workers=0)
    settings.update(train)
    return RunConfig("mnist-gan", TrainConfig(**settings), MnistGanConfig(loss=loss))


@pytest.fixture
def mnist_run():
    return tiny_mnist_run


@pytest.fixture(scope="session")
def cyclegan_run(tmp_path_factory):
    """A tiny CycleGAN run of two steps, shared by the tests that only read it (translate, eval, export)."""
    from test_unpaired import cyclegan_trainer, write_unpaired  # noqa: PLC0415

    root = write_unpaired(tmp_path_factory.mktemp("cyclegan"))
    cyclegan_trainer(root, root, steps=2).fit()
    return root / "run"


@pytest.fixture(scope="session")
def demo_task(tmp_path_factory):
    """``demo_task(kind, destination, test_count, train_count)``: a demo task's folders (``cyclegan``, ``pix2pix``,
    ``stargan``), with the first ``test_count`` held-out and ``train_count`` training images of each folder, and
    the demo's mark, which evaluation's ground-truth checks read.  Each demo (thousands of files, seconds to
    write) is written once a session and copied from."""
    from img2img.data import demo  # noqa: PLC0415

    writers = {"cyclegan": demo.write_colour_digits, "pix2pix": demo.write_skeleton_pairs,
               "stargan": demo.write_style_digits}
    written: dict[str, Path] = {}

    def copy(kind: str, destination: Path, test_count: int, train_count: int) -> Path:
        if kind not in written:
            written[kind] = tmp_path_factory.mktemp(f"demo-{kind}") / "demo"
            writers[kind](written[kind])
        source = written[kind]

        def left_out(folder: str, names: list[str]) -> list[str]:
            split = Path(folder).relative_to(source).parts[:1]
            keep = {("test",): test_count, ("train",): train_count}.get(split)
            files = sorted(name for name in names if os.path.isfile(os.path.join(folder, name)))
            return files[keep:] if keep is not None else []

        shutil.copytree(source, destination, ignore=left_out)
        return destination

    return copy
