"""No broken file or bad option crashes a run or loses work: crashing decoders, files that break mid-run,
run-folder locks, and a corpus of broken images driven through every command."""

from __future__ import annotations

import errno
import json
import logging
import faulthandler
import gc
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from img2img import checkpoint, errors, translate
from img2img.data import guard, images
from img2img.data.batches import LoaderBatches, StepSampler
from img2img.errors import UserError
from img2img.train import Trainer
from img2img.translate import GeneratorInfo, Translator

from test_cli import QUICK, assert_one_line_error, command_in_a_process, invoke, waited_on
from test_pix2pix import inverse_pairs  # noqa: F401 - a fixture
from test_translate import Invert, write_rgb


def crashing_reader(monkeypatch, marker="crash", when=None):
    """Make the decoder die with a segmentation fault on every file whose name holds ``marker`` (or for which
    ``when(path)`` is true); worker processes are forked, so they inherit it."""
    real = images.read_image_levels

    def read(path):
        if (when(path) if when else marker in os.path.basename(path)):
            faulthandler.disable()  # pytest's would print the crash's stack: a real crash is silent
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(path)

    monkeypatch.setattr(images, "read_image_levels", read)
    monkeypatch.setattr(translate, "read_image_levels", read)


def test_find_crashes_names_each_file_that_kills_the_decoder(tmp_path, monkeypatch):
    crashing_reader(monkeypatch)
    paths = []
    for name in ("a", "crash-1", "b", "c", "crash-2", "d"):
        write_rgb(tmp_path / f"{name}.png", 4, 4)
        paths.append(tmp_path / f"{name}.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")  # an ordinary error is not a crash
    paths.append(tmp_path / "broken.png")
    crashes = guard.find_crashes(paths)
    assert sorted(crashes) == [1, 4]
    assert all("SIGSEGV" in why for why in crashes.values())


def test_a_crashing_decoder_costs_translation_that_file_only(tmp_path, monkeypatch):
    source = tmp_path / "in"
    names = [f"{i:02d}" for i in range(20)] + ["x-crash", "y-crash"]
    for i, name in enumerate(names):
        write_rgb(source / f"{name}.png", 8, 8, seed=i)
    crashing_reader(monkeypatch)
    skipped = []
    summary = Translator(Invert(), GeneratorInfo(3, 3, 4), batch_size=2).translate_folder(
        source, tmp_path / "out", workers=2, progress=False, on_skip=lambda path, why: skipped.append((path, why)))
    assert sorted(p.name for p, _ in skipped) == ["x-crash.png", "y-crash.png"]
    assert all("crashed" in why for _, why in skipped)
    assert sorted(p.stem for p in summary.translated) == names[:20]
    for name in names[:20]:  # every other image is there and right
        got = np.asarray(Image.open(tmp_path / "out" / f"{name}.png"))
        assert np.array_equal(got, 255 - np.asarray(Image.open(source / f"{name}.png")))


def test_a_batch_whose_worker_died_while_handing_it_over_is_read_again(tmp_path):
    """A batch's tensors cross from a loading worker as file descriptors that the main process asks the worker
    for: when the worker dies (on the next file) before that, fetching the batch raises ConnectionResetError,
    before the DataLoader sees the worker gone (it made the crash test above fail one time in two on 2 busy
    cores).  That is a worker's death too: the items not delivered are read again, and none is lost."""
    paths = []
    for index in range(6):
        write_rgb(tmp_path / f"{index}.png", 8, 8, seed=index)
        paths.append(tmp_path / f"{index}.png")
    fetched = []

    class Items(torch.utils.data.Dataset):
        def __init__(self, items):
            self.items = items

        def __len__(self):
            return len(self.items)

        def __getitem__(self, position):
            item = self.items[position]
            fetched.append(item)
            if item == 3 and fetched.count(3) == 1:
                raise ConnectionResetError(errno.ECONNRESET, os.strerror(errno.ECONNRESET))
            return item

    assert guard.worker_died(ConnectionResetError()) and guard.worker_died(EOFError())
    crashed = []
    pieces = guard.resilient(Items, 6, lambda item: [paths[item]], lambda piece: [int(i) for i in piece],
                             lambda item, why: crashed.append(item), batch_size=2, num_workers=0)
    assert sorted(int(i) for piece in pieces for i in piece) == list(range(6)) and not crashed
    assert fetched.count(3) == 2


def test_a_crashing_decoder_in_a_training_folder_is_named_before_training(tmp_path, monkeypatch):
    for i in range(6):
        write_rgb(tmp_path / "a" / f"{i}.png", 16, 16, seed=i)
        write_rgb(tmp_path / "b" / f"{i}.png", 16, 16, seed=10 + i)
    write_rgb(tmp_path / "b" / "crash.png", 16, 16)
    crashing_reader(monkeypatch)
    result, _ = invoke("train", "cyclegan", "--a", tmp_path / "a", "--b", tmp_path / "b", "--size", 16,
                       "--dry-run")
    assert_one_line_error(result, "crash.png", "crashed")


def test_verification_decodes_every_pixel_and_names_every_broken_file(tmp_path):
    good = [write_rgb(tmp_path / f"{i}.png", 8, 8, seed=i) or tmp_path / f"{i}.png" for i in range(3)]
    data = (tmp_path / "0.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) - 40])  # the header reads; the pixels do not
    assert Image.open(tmp_path / "truncated.png").size == (8, 8)
    with pytest.raises(UserError, match="truncated.png") as error:
        guard.verify_images([*good, tmp_path / "truncated.png"], "--a")
    assert "\n" not in str(error.value)
    infos = guard.verify_images(good, "--a", workers=2)
    assert [(i.width, i.height, i.channels, i.bits) for i in infos] == [(8, 8, 3, 8)] * 3


def _pix2pix_run(root, steps, workers):
    from img2img.config import RunConfig, TrainConfig  # noqa: PLC0415

    from test_pix2pix import tiny_config  # noqa: PLC0415

    return RunConfig("pix2pix", TrainConfig(steps=steps, batch_size=2, device="cpu", num_workers=workers,
                                            save_every_steps=3, sample_every_steps=100, log_every_steps=100),
                     tiny_config(root))


def break_during_step(monkeypatch, step, action):
    """Run ``action()`` when the trainer reaches ``step``: a file changes on disk while the run goes on."""
    from img2img.train import Trainer  # noqa: PLC0415

    real = Trainer.train_step

    def train_step(self, batch):
        if self.step == step:
            action()
        return real(self, batch)

    monkeypatch.setattr(Trainer, "train_step", train_step)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_file_that_breaks_mid_run_saves_names_it_and_resumes_to_the_uninterrupted_weights(
        inverse_pairs, tmp_path, workers, monkeypatch):
    import torch  # noqa: PLC0415

    from img2img import checkpoint  # noqa: PLC0415
    from img2img.train import resume, train  # noqa: PLC0415

    run = _pix2pix_run(inverse_pairs, steps=24, workers=workers)
    whole = train(run, tmp_path / "whole")
    victim = inverse_pairs / "b" / "5.png"
    intact = victim.read_bytes()
    break_during_step(monkeypatch, 2, lambda: victim.write_bytes(intact[: len(intact) // 2]))
    with pytest.raises(UserError) as error:
        train(run, tmp_path / "broken")  # verified while whole; the file breaks on disk at step 2
    monkeypatch.undo()
    message = str(error.value)
    assert "\n" not in message and "5.png" in message and "--resume" in message, message
    saved = checkpoint.read(tmp_path / "broken" / "last.ckpt")
    assert 2 <= saved["step"] < 24
    assert f"loading step {saved['step']}" in message
    with pytest.raises(UserError, match="5.png"):  # resuming checks the files again
        resume(tmp_path / "broken")
    victim.write_bytes(intact)  # fixed
    finished = resume(tmp_path / "broken")
    assert finished.step == 24
    a, b = checkpoint.read(whole.checkpoint)["networks"], checkpoint.read(finished.checkpoint)["networks"]
    for net in a:
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), (net, key)


def test_a_decoder_crash_mid_run_saves_and_names_the_file(inverse_pairs, tmp_path, monkeypatch):
    from img2img import checkpoint  # noqa: PLC0415
    from img2img.train import train  # noqa: PLC0415

    flag = tmp_path / "crash-now"
    crashing_reader(monkeypatch, when=lambda path: flag.exists() and os.path.basename(path) == "3.png")
    break_during_step(monkeypatch, 2, flag.touch)
    with pytest.raises(UserError) as error:
        train(_pix2pix_run(inverse_pairs, steps=24, workers=2), tmp_path / "run")
    message = str(error.value)
    assert "3.png" in message and "crashed" in message and "SIGSEGV" in message and "\n" not in message, message
    assert checkpoint.read(tmp_path / "run" / "last.ckpt")["step"] >= 2


def test_a_worker_killed_from_outside_mid_run_is_not_blamed_on_a_file(inverse_pairs, tmp_path, monkeypatch):
    """A loading worker killed by the kernel for the memory it took (or by anyone) stopped the run with "fix
    the file", though no file makes a decoder die."""
    from img2img import checkpoint  # noqa: PLC0415
    from img2img.train import train  # noqa: PLC0415

    once = tmp_path / "kill-once"
    real = images.read_image_levels

    def read(path):
        try:
            once.unlink()  # the first worker to get here is killed; decoding the files again kills nothing
        except FileNotFoundError:
            return real(path)
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(images, "read_image_levels", read)
    break_during_step(monkeypatch, 2, once.touch)
    with pytest.raises(UserError) as error:
        train(_pix2pix_run(inverse_pairs, steps=24, workers=2), tmp_path / "run")
    message = str(error.value)
    assert "a data-loading worker died" in message and "no file makes it die" in message, message
    assert "fix the file" not in message and f"--resume {tmp_path / 'run'} continues the run" in message, message
    assert "\n" not in message and checkpoint.read(tmp_path / "run" / "last.ckpt")["step"] >= 2


class _Keys:
    def __getitem__(self, key):
        return key[0]


def test_more_workers_than_cpus_is_said_in_one_line_once_not_in_torchs_warning(tmp_path, monkeypatch, caplog):
    """torch's DataLoader warned in several lines, twice a loader and ending in a path inside torch, when the
    workers outnumber the CPUs; img2img says it once, in one line, naming --workers."""
    import warnings  # noqa: PLC0415

    from img2img import resources  # noqa: PLC0415

    monkeypatch.setattr(resources, "available_cpus", lambda: 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)  # torch's count of the CPUs
    monkeypatch.setattr(errors, "_SAID", set())
    for i in range(6):
        write_rgb(tmp_path / "in" / f"{i}.png", 8, 8, seed=i)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for out in ("out", "again"):
            Translator(Invert(), GeneratorInfo(3, 3, 4), batch_size=2).translate_folder(
                tmp_path / "in", tmp_path / out, workers=2, progress=False)
        batches = LoaderBatches(_Keys(), StepSampler(8, 2, seed=0), num_workers=2).iterate(0)
        assert len(next(batches)) == 2
    assert [str(w.message) for w in caught if "DataLoader" in str(w.message)] == []
    said = [r.getMessage() for r in caplog.records if "--workers" in r.getMessage()]
    assert said == ["--workers 2: more loading processes than the 1 CPU this process may use; they will take turns"]


def test_starting_a_loader_draws_nothing_from_the_models_random_stream():
    """A resumed run starts a new loader where an uninterrupted one does not: it must not shift torch's global
    generator, which dropout and the models draw from."""
    import torch  # noqa: PLC0415

    from img2img.data.batches import LoaderBatches, StepSampler  # noqa: PLC0415

    state = torch.get_rng_state()
    LoaderBatches(list(range(8)), StepSampler(8, 2, seed=0), num_workers=0).iterate(3)
    assert torch.equal(torch.get_rng_state(), state)


def _hold_lock(folder):
    """Another process that trains ``folder`` (holds its lock) until killed."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom img2img.run import RunDir\n"
                               "lock = RunDir(sys.argv[1]).lock()\nprint('locked', flush=True)\ntime.sleep(120)",
                               str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_run_folder_in_use_is_refused_and_a_killed_holder_does_not_block_resume(tmp_path, mnist_run):
    from img2img.train import train  # noqa: PLC0415

    run = tmp_path / "run"
    train(mnist_run(steps=2, batch_size=4), run)
    holder = _hold_lock(run)
    try:
        for args in (["train", "mnist-gan", "--out", run, "--steps", 4, "--device", "cpu"],
                     ["train", "mnist-gan", "--resume", run, "--steps", 4],
                     ["train", "mnist-gan", "--out", tmp_path / "fresh-but-busy", "--steps", 4]):
            if "fresh-but-busy" in str(args[3]):
                holder.kill()
                holder.wait()
                holder = _hold_lock(tmp_path / "fresh-but-busy")
            result, _ = invoke(*args)
            assert_one_line_error(result, str(args[3]), "in use", f"process {holder.pid}")
    finally:
        holder.kill()  # SIGKILL: no chance to clean up
        holder.wait()
    result, output = invoke("train", "mnist-gan", "--resume", run, "--steps", 4)
    assert result.exit_code == 0, output
    assert "step-00000004" in output or (run / "checkpoints" / "step-00000004.ckpt").exists()


@pytest.mark.parametrize("code", ["ENOLCK", "EOPNOTSUPP", "ENOSYS"])
def test_a_file_system_that_cannot_lock_files_trains_with_a_warning(tmp_path, mnist_run, monkeypatch, code):
    """NFS without its lock service, Lustre without -o flock: flock fails there with these, and every run was
    refused as `in use: another process is training it`, with no process training it."""
    import logging  # noqa: PLC0415

    from img2img import run as run_module  # noqa: PLC0415
    from img2img.train import train  # noqa: PLC0415

    def unsupported(handle):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))

    class Collect(logging.Handler):
        lines: list[str] = []

        def emit(self, record):
            Collect.lines.append(record.getMessage())

    collect = Collect()
    logging.getLogger("img2img").addHandler(collect)
    monkeypatch.setattr(run_module, "_lock_file", unsupported)
    try:
        result = train(mnist_run(steps=2, batch_size=4), tmp_path / "run")
    finally:
        logging.getLogger("img2img").removeHandler(collect)
    assert result.step == 2
    assert [line for line in Collect.lines if "cannot lock" in line] == [
        f"--out: {tmp_path / 'run'} cannot lock files here ({os.strerror(getattr(errno, code))}), so a second "
        "trainer of this folder would not be refused"]

    def held(handle):
        raise OSError(errno.EWOULDBLOCK, os.strerror(errno.EWOULDBLOCK))

    monkeypatch.setattr(run_module, "_lock_file", held)  # held by another process: refused, as before
    with pytest.raises(UserError, match="is in use"):
        train(mnist_run(steps=2, batch_size=4), tmp_path / "other")


def test_two_trainings_started_together_in_one_folder_one_is_refused(tmp_path):
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    command = [sys.executable, "-m", "img2img.cli", "train", "mnist-gan", "--out", str(tmp_path / "run"),
               "--steps", "30", "--batch-size", "8", "--device", "cpu", "--save-every", "10"]
    first, second = (subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(2))
    results = [(p.wait(timeout=300), p.communicate()) for p in (first, second)]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    refused = next(err for code, (_, err) in results if code == 1)
    assert "Traceback" not in refused and ("in use" in refused or "already holds a run" in refused), refused


# -- TensorBoard ----------------------------------------------------------------------------------------------
def test_tensorboard_events_hold_the_curves_grids_evaluations_and_config(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: PLC0415

    run = tmp_path / "run"
    result, output = invoke("train", "mnist-gan", "--out", run, "--steps", 6, "--batch-size", 8, "--device", "cpu",
                            "--log-every", 2, "--sample-every", 3, "--eval-every", 6, "--tensorboard")
    assert result.exit_code == 0, output
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = events.Tags()
    assert {"loss/g_loss", "loss/d_loss", "train/learning_rate", "train/steps_per_second"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("loss/g_loss")] == [2, 4, 6]
    assert any(tag.startswith("eval/") for tag in tags["scalars"])
    assert [e.step for e in events.Images("samples")] == [3, 6]
    assert events.Images("samples")[0].width > 28
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"model": "mnist-gan"' in text
    # --tensorboard may be switched on when resuming; the curve goes on from the checkpoint
    result, output = invoke("train", "mnist-gan", "--resume", run, "--steps", 8, "--tensorboard")
    assert result.exit_code == 0, output
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    assert [e.step for e in events.Scalars("loss/g_loss")] == [2, 4, 6, 8]


def test_tensorboard_without_the_package_is_one_line_before_the_run(tmp_path, monkeypatch):
    import importlib.util  # noqa: PLC0415

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    result, _ = invoke("train", "mnist-gan", "--out", tmp_path / "run", "--steps", 2, "--tensorboard")
    assert_one_line_error(result, "--tensorboard", "pip install")
    assert not (tmp_path / "run").exists()


def test_a_failing_tensorboard_writer_never_stops_training(tmp_path, monkeypatch, mnist_run, caplog):
    from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415

    from img2img.train import train  # noqa: PLC0415

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(SummaryWriter, "add_scalar", broken)
    result = train(mnist_run(steps=4, batch_size=4, log_every_steps=1, tensorboard=True), tmp_path / "run")
    assert result.step == 4
    warnings = [r.message for r in caplog.records if "TensorBoard" in r.message]
    assert len(warnings) == 1 and "disk full" in warnings[0]


# -- options that do not apply are said, never silently dropped ----------------------------------------------
def test_options_that_do_not_apply_are_refused_or_warned(tmp_path, cyclegan_run, logged):
    from test_unpaired import write_unpaired  # noqa: PLC0415

    data = write_unpaired(tmp_path)
    base = ["train", "cyclegan", "--a", data / "a", "--b", data / "b", "--size", 32, "--dry-run"]
    for flag, value in (("--eval-a", data / "a"), ("--eval-metric", "fid_a2b")):
        result, _ = invoke(*base, flag, value)
        assert_one_line_error(result, flag, "--eval-every")
    result, output = invoke(*base, "--sync-bn")
    assert result.exit_code == 0 and any("--sync-bn synchronises" in line for line in logged), output
    result, _ = invoke("train", "pix2pix", "--a", data / "a", "--b", data / "a", "--size", 32, "--n-layers", 5,
                       "--dry-run")
    assert_one_line_error(result, "--n-layers", "--discriminator n_layers")
    for args, flag in ((["bench", "cyclegan", "--workers", 2], "--workers"),
                       (["bench", "translate", "--warmup", 2], "--warmup"),
                       (["bench", "cyclegan", "--ladder", "--compile", "default"], "--compile"),
                       (["bench", "mnist-gan", "--size", 64], "--size 64: mnist-gan takes 28×28 digits only")):
        result, _ = invoke(*args)
        assert_one_line_error(result, flag)
    result, output = invoke("eval", cyclegan_run, "--a", data / "a", "--b", data / "b", "--features", "random",
                            "--samples", 50, "--device", "cpu")
    assert result.exit_code == 0 and any("--samples applies to models that generate" in line for line in logged), \
        output


# -- a training step larger than the memory --------------------------------------------------------------------
def test_a_training_step_that_cannot_fit_in_memory_is_refused_before_it_starts(tmp_path, monkeypatch):
    """On the CPU, memory is overcommitted: a step too large for it was killed by the kernel, without a word
    (``bench pix2pix --size 32768 --device cpu``, after 80 s making its batch).  What the step needs at least is
    measured on the meta device at the run's size, and refused in one line against the memory available."""
    from img2img import resources  # noqa: PLC0415
    from test_unpaired import write_unpaired  # noqa: PLC0415

    result, _ = invoke("bench", "pix2pix", "--size", 32768, "--device", "cpu")  # 869 GiB: no machine of CI's has it
    assert_one_line_error(result, "--size 32768 with --batch-size 1", "GiB of memory", "is available")
    write_unpaired(tmp_path)
    arguments = ["--a", tmp_path / "a", "--b", tmp_path / "b", "--size", 32, "--batch-size", 2, "--device", "cpu",
                 "--out", tmp_path / "run"]
    available_memory = resources.available_memory
    monkeypatch.setattr(resources, "available_memory", lambda unknown: 10 << 20)  # 10 MiB: less than the networks alone
    result, _ = invoke("train", "cyclegan", *arguments)
    assert_one_line_error(result, "--size 32 with --batch-size 2", "cyclegan training step needs at least")
    assert not (tmp_path / "run").exists()  # before any folder is made
    result, _ = invoke("train", "mnist-gan", "--batch-size", 8, "--device", "cpu", "--dry-run")
    assert_one_line_error(result, "--batch-size 8:", "use a smaller --batch-size")
    # one example read at --load-size 32768 (36 GiB) was killed too, before the step was measured
    monkeypatch.setattr(resources, "available_memory", lambda unknown: 1 << 30)
    result, _ = invoke("train", "cyclegan", *arguments, "--load-size", 16384)
    assert_one_line_error(result, "--load-size 16384: one training example resized to 16384×16384 needs about 3.0 GiB")
    monkeypatch.setattr(resources, "available_memory", lambda unknown: 1 << 40)
    result, output = invoke("train", "cyclegan", *arguments, "--dry-run")
    assert result.exit_code == 0, output
    # where the memory cannot be read (no /proc/meminfo, no cgroup: macOS), nothing is refused on a guess
    monkeypatch.setattr(resources, "available_memory", available_memory)
    monkeypatch.setattr(resources, "MEMINFO", tmp_path / "no-meminfo")
    monkeypatch.setattr(resources, "cgroup_memory_left", lambda: None)
    assert resources.available_memory() == 4 << 30 and resources.available_memory(unknown=None) is None
    result, output = invoke("train", "cyclegan", *arguments, "--size", 512, "--dry-run")  # about 16 GiB: over 4
    assert result.exit_code == 0, output


# -- a full disk --------------------------------------------------------------------------------------------
def full_disk_save(payload, handle):
    """What torch.save does on a full disk: a partial file, then its zip writer's own error while cleaning up."""
    handle.write(b"PK\x03\x04 partial")
    try:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 125248 vs 125144") from None


def test_a_full_disk_stops_training_naming_the_checkpoint_and_keeping_the_previous_one(tmp_path, mnist_run,
                                                                                       monkeypatch):
    trainer = Trainer(mnist_run(steps=8, save_every_steps=3), tmp_path)
    trainer.fit(stop_after_steps=3)
    before = (tmp_path / "last.ckpt").read_bytes()
    monkeypatch.setattr(checkpoint.torch, "save", full_disk_save)
    with pytest.raises(UserError) as caught:
        trainer.fit()
    assert str(caught.value) == (f"{tmp_path / 'checkpoints' / 'step-00000006.ckpt'}: No space left on device at "
                                 f"step 6 (the newest checkpoint, {tmp_path / 'last.ckpt'}, is intact)")
    assert (tmp_path / "last.ckpt").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000003.ckpt"]  # no partial file


class Collected(logging.Handler):
    """The img2img log's records, while it is entered."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def __enter__(self):
        logging.getLogger("img2img").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("img2img").removeHandler(self)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_a_train_log_that_can_no_longer_be_written_is_said_once_and_the_run_trains_on(tmp_path, mnist_run, capsys):
    """logging printed "--- Logging error ---" and a traceback for every line it could not write to train.log (a
    full disk), and closing the file raised the error again at the end, over whatever the run had come to."""
    trainer = Trainer(mnist_run(steps=6, save_every_steps=3, log_every_steps=1), tmp_path)
    trainer.fit(stop_after_steps=3)
    capsys.readouterr()
    (tmp_path / "train.log").unlink()
    (tmp_path / "train.log").symlink_to("/dev/full")  # every write fails with ENOSPC
    with Collected() as log:
        trainer.fit()
    assert trainer.step == 6 and checkpoint.read(tmp_path / "last.ckpt")["step"] == 6
    lost = [line for line in log.lines if "can no longer be written" in line]
    assert lost == [f"{tmp_path / 'train.log'} can no longer be written (No space left on device): the rest of the "
                    "run's log is on the console only"]
    assert any(line.startswith("step=6 ") for line in log.lines)  # the console still has the log
    assert "Logging error" not in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_a_full_disk_under_the_metrics_or_a_sample_grid_names_that_file(tmp_path, mnist_run, monkeypatch):
    """A file object's write names no file when its flush fails: training said "RUN: No space left on device"."""
    from img2img import run as run_folder  # noqa: PLC0415

    trainer = Trainer(mnist_run(steps=8, save_every_steps=4, sample_every_steps=2, log_every_steps=1), tmp_path)
    trainer.fit(stop_after_steps=2)
    (tmp_path / "samples" / "last.png").unlink()
    (tmp_path / "samples" / "last.png").symlink_to("/dev/full")
    with pytest.raises(UserError) as caught:
        trainer.fit()
    assert str(caught.value) == (f"{tmp_path / 'samples' / 'last.png'}: No space left on device at step 4 "
                                 f"(the newest checkpoint, {tmp_path / 'last.ckpt'}, is intact)")
    (tmp_path / "samples" / "last.png").unlink()
    monkeypatch.setattr(run_folder, "open", lambda path, mode: open("/dev/full", mode), raising=False)
    with pytest.raises(UserError) as caught:
        trainer.fit()
    assert str(caught.value).startswith(f"{tmp_path / 'metrics.jsonl'}: No space left on device at step 5 ")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_an_error_that_names_no_file_names_where_the_command_writes(tmp_path, cyclegan_run):
    """/dev/full fails every write with ENOSPC; Python's file objects name no file when the write fails."""
    result, _ = invoke("eval", cyclegan_run, "--a", cyclegan_run.parent / "a", "--b", cyclegan_run.parent / "b",
                       "--features", "random", "--json", "/dev/full")
    assert_one_line_error(result, "Error: /dev/full: No space left on device")


def test_a_file_where_the_report_folder_goes_is_said_before_the_evaluation(tmp_path, cyclegan_run):
    """With a file RUN/eval, the evaluation ran and then failed to write its report, saying "RUN/eval/step-N.json:
    File exists" of a file that was not there."""
    import shutil  # noqa: PLC0415

    run = tmp_path / "run"
    shutil.copytree(cyclegan_run, run)
    shutil.rmtree(run / "eval", ignore_errors=True)  # (reports of other tests' evaluations)
    (run / "eval").write_text("the user's notes")
    with Collected() as log:  # (the console's handler holds the stream of the first command run in this process)
        result, output = invoke("eval", run, "--a", cyclegan_run.parent / "a", "--b", cyclegan_run.parent / "b",
                                "--features", "random")
    assert result.exit_code == 0, output
    assert any(line.startswith(f"cannot write the report into {run / 'eval'} (it is a file, so no folder can be made there)")
               for line in log.lines), log.lines
    assert "fid_a2b" in output and (run / "eval").read_text() == "the user's notes"
    with pytest.raises(OSError) as caught:  # what the other writers say: the file, not the one to write
        checkpoint.replace_file(run / "eval" / "deeper" / "report.json", b"{}")
    assert caught.value.errno == errno.ENOTDIR and caught.value.filename == str(run / "eval")


def test_an_evaluation_report_is_never_written_over_its_checkpoint(cyclegan_run):
    """`eval RUN --json RUN/last.ckpt` replaced the checkpoint with the report, with no --overwrite to ask for."""
    before = (cyclegan_run / "last.ckpt").read_bytes()
    result, _ = invoke("eval", cyclegan_run, "--a", cyclegan_run.parent / "a", "--b", cyclegan_run.parent / "b",
                       "--features", "random", "--json", cyclegan_run / "last.ckpt")
    assert_one_line_error(result, f"--json: {cyclegan_run / 'last.ckpt'} is CHECKPOINT, which writing there would "
                                  "replace; choose another file")
    assert (cyclegan_run / "last.ckpt").read_bytes() == before


@pytest.mark.parametrize("workers", [0, 2])
def test_translation_stops_at_a_full_disk_naming_the_file(tmp_path, monkeypatch, workers):
    """The loading workers end with the error, too: they lived on while it was held, to the process's exit in
    the command line, where multiprocessing killed them (each leaving its temporary folder, ``pymp-*``)."""
    import multiprocessing  # noqa: PLC0415

    source = tmp_path / "in"
    for index in range(24):  # more than the loader holds ahead: it is still under way when the error comes
        write_rgb(source / f"{index}.png", 16, 16, seed=index)
    written = []

    def encode(array, suffix):
        if len(written) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(suffix)
        return images.encode_image(array, suffix)

    bars = []

    class Bar(translate.tqdm):  # the progress bar is gone before the error is said (it was said after the bar)
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(translate, "encode_image", encode)
    monkeypatch.setattr(translate, "tqdm", Bar)
    translator = Translator(Invert(), GeneratorInfo(3, 3, 4), batch_size=2)
    with pytest.raises(OSError) as caught:  # held, with its traceback, as the command line holds it to its exit
        translator.translate_folder(source, tmp_path / "out", progress=True, workers=workers)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename.startswith(str(tmp_path / "out"))
    assert multiprocessing.active_children() == []
    assert len(bars) == 1 and bars[0].disable  # closed
    outputs = sorted((tmp_path / "out").iterdir())
    assert len(outputs) == 3 and all(np.asarray(Image.open(p)).shape == (16, 16, 3) for p in outputs)


@pytest.mark.parametrize("taken", ["samples", "checkpoints"])
def test_a_file_in_place_of_a_run_folders_sub_folder_is_named(tmp_path, taken):
    """It said "cannot write to RUN (File exists)", which named neither the file nor what was wrong with it."""
    from img2img.run import RunDir  # noqa: PLC0415

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / taken).write_text("a file of the user's")
    with pytest.raises(UserError) as caught:
        RunDir(tmp_path / "run").create("--resume", fresh=False)
    assert str(caught.value) == f"--resume: {tmp_path / 'run' / taken} is a file, so no folder can be made there"


def test_a_demo_stopped_part_way_leaves_nothing_and_the_same_command_then_writes_it_whole(tmp_path, monkeypatch):
    """Stopped part way (Ctrl-C, SIGTERM, a full disk), a demo left part of its training folders, which a run took
    for the dataset, and the same command then refused the folder as not empty."""
    from img2img.data import demo  # noqa: PLC0415

    real, folders = demo._write, []

    def stopped_after_one_folder(folder, *args):
        if folders:
            raise KeyboardInterrupt
        folders.append(folder)
        real(folder, *args)

    monkeypatch.setattr(demo, "_write", stopped_after_one_folder)
    with pytest.raises(KeyboardInterrupt):
        demo.write_colour_digits(tmp_path / "digits")
    assert len(folders) == 1 and list(tmp_path.iterdir()) == []  # nor the hidden folder it was written in
    monkeypatch.setattr(demo, "_write", lambda folder, images, *args: real(folder, images[:1], *args))  # (quicker)
    (tmp_path / "link").symlink_to(tmp_path / "digits")  # followed, not replaced by the dataset's folder
    result, output = invoke("demo", "cyclegan", tmp_path / "link")
    assert result.exit_code == 0, output
    assert demo.demo_task(tmp_path / "digits" / "train" / "a") == demo.COLOUR_TASK
    assert [len(list((tmp_path / "digits" / part).iterdir())) for part in ("train/a", "train/b", "test/a", "test/b")] \
        == [1, 1, 1, 1]
    assert sorted(tmp_path.iterdir()) == [tmp_path / "digits", tmp_path / "link"] and (tmp_path / "link").is_symlink()


# -- too many open files --------------------------------------------------------------------------------------
TORCH_SAYS_TOO_MANY_FILES = ("Too many open files. Communication with the workers is no longer possible. Please "
                             "increase the limit using `ulimit -n` in the shell or change the sharing strategy by "
                             "calling `torch.multiprocessing.set_sharing_strategy('file_system')` at the beginning "
                             "of your code")


def test_loading_workers_raise_a_low_open_files_limit_or_share_batches_through_files():
    """A batch's tensors cross from a loading worker as file descriptors, some 5 to 7 a worker in flight; where
    the limit (``ulimit -n``) left too few, translation stopped with torch's traceback, and training waited for
    ever on a batch that the worker could not send."""
    import resource  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 256:
        pytest.skip(f"the hard limit of open files here is {hard}")
    script = """if True:
        import logging, resource, torch.multiprocessing as mp
        from img2img.data import guard
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, hard))
        guard.loader_options(8)  # 8 workers want 192: the soft limit goes up to the hard one
        print(resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 192, mp.get_sharing_strategy())
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))  # where it cannot go up
        guard.loader_options(2)  # 2 want 96: room enough
        print(mp.get_sharing_strategy())
        guard.loader_options(8)
        print(mp.get_sharing_strategy())
    """
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "file_descriptor", "file_descriptor", "file_system"]
    assert done.stderr.count("this process may have 100 files open at once (ulimit -n): loading workers hand "
                             "their batches over through shared-memory files instead") == 1, done.stderr


def test_folder_translation_under_a_low_open_files_limit_translates_every_image(tmp_path, cyclegan_run):
    """12 workers under a limit of 76 open files: torch's loader needed more than 88 to hand their batches over
    as file descriptors (and this one 66 through shared-memory files, on this machine with torch 2.14.1)."""
    import resource  # noqa: PLC0415

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 76:
        pytest.skip(f"the hard limit of open files here is {hard}")
    for index in range(48):
        write_rgb(tmp_path / "in" / f"{index}.png", 16, 16, seed=index)
    done = command_in_a_process("", "translate", cyclegan_run, tmp_path / "in", tmp_path / "out", "--workers", 12,
                                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (76, 76)))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert len(list((tmp_path / "out").iterdir())) == 48


@pytest.mark.parametrize("open_files", [None, 76])
def test_folder_translation_under_a_long_tmpdir_translates_every_image(tmp_path, cyclegan_run, open_files):
    """Under a TMPDIR longer than 73 bytes (a cluster job's scratch folder) the workers' sockets could not be
    bound (a socket's path holds 107 bytes): each batch was dropped with a traceback, and translation waited for
    ever; under a low limit of open files, where batches cross as shared-memory files, it ended in torch's
    traceback instead.  Nor does a worker leave a folder of its own behind in TMPDIR."""
    import resource  # noqa: PLC0415

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if open_files is not None and hard != resource.RLIM_INFINITY and hard < open_files:
        pytest.skip(f"the hard limit of open files here is {hard}")
    temporary = tmp_path / ("t" * max(1, 90 - len(str(tmp_path))))
    temporary.mkdir()
    for index in range(8):
        write_rgb(tmp_path / "in" / f"{index}.png", 16, 16, seed=index)
    limit = None if open_files is None else lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_files,) * 2)
    done = command_in_a_process("", "translate", cyclegan_run, tmp_path / "in", tmp_path / "out", "--workers", 2,
                                env={**os.environ, "TMPDIR": str(temporary)}, preexec_fn=limit, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert len(list((tmp_path / "out").iterdir())) == 8
    assert list(temporary.iterdir()) == []


@pytest.mark.parametrize("error, said", [
    (OSError(errno.EMFILE, os.strerror(errno.EMFILE)), "too many open files (this process may have "),
    (RuntimeError("can't start new thread"), "no more processes or threads can start (can't start new thread"),
])
def test_running_out_of_files_or_threads_stops_translation_in_one_line_saying_what_was_translated(
        tmp_path, monkeypatch, error, said):
    """Each output that could not be opened was reported as a failed file, one by one, and the run went on to
    fail the same way with every other; a writer thread that could not start ended with a traceback."""
    for index in range(12):
        write_rgb(tmp_path / "in" / f"{index}.png", 16, 16, seed=index)
    written = []

    def encode(array, suffix):
        if len(written) == 3:
            raise error
        written.append(suffix)
        return images.encode_image(array, suffix)

    monkeypatch.setattr(translate, "encode_image", encode)
    translator = Translator(Invert(), GeneratorInfo(3, 3, 4), batch_size=2)
    with pytest.raises(UserError) as caught:
        translator.translate_folder(tmp_path / "in", tmp_path / "out", workers=0)
    assert str(caught.value).startswith(said)
    assert str(caught.value).endswith(f"; raise the limit{'' if 'files' in said else ', or free memory'}, or use "
                                      f"fewer --workers (3 of 12 images translated into {tmp_path / 'out'}; the same "
                                      "command translates the rest)")
    assert len(list((tmp_path / "out").iterdir())) == 3


def test_running_out_of_files_or_processes_is_said_in_one_line_naming_the_limit_not_a_file(
        tmp_path, mnist_run, monkeypatch, cyclegan_run):
    """Running out of file descriptors is no file's fault: "RUN/checkpoints/step-6.ckpt: Too many open files"
    blamed the checkpoint, and torch's own report, from a loader, came with its traceback; a loading worker that
    could not be forked (the user's processes used up, ``ulimit -u``) was "OUT: Resource temporarily
    unavailable"."""
    import resource  # noqa: PLC0415

    trainer = Trainer(mnist_run(steps=8, save_every_steps=3), tmp_path / "run")
    trainer.fit(stop_after_steps=3)

    def save(payload, handle):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(checkpoint.torch, "save", save)
    with pytest.raises(UserError) as caught:
        trainer.fit()
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limit = "" if files == resource.RLIM_INFINITY else f" (this process may have {files} open at once: ulimit -n)"
    assert str(caught.value) == (f"too many open files{limit}; raise the limit, or use fewer --workers at step 6 (the "
                                 f"newest checkpoint, {tmp_path / 'run' / 'last.ckpt'}, is intact)")

    def evaluate(*args, **kwargs):
        raise RuntimeError(TORCH_SAYS_TOO_MANY_FILES)

    monkeypatch.setattr(sys.modules["img2img.cli.evaluate"], "evaluate_checkpoint", evaluate)
    result, _ = invoke("eval", cyclegan_run, "--a", cyclegan_run.parent / "a", "--b", cyclegan_run.parent / "b")
    assert_one_line_error(result, f"Error: too many open files{limit}; raise the limit")
    assert result.output.strip().endswith("raise the limit")  # eval takes no --workers

    def fork():
        raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    monkeypatch.setattr(os, "fork", fork)
    result, _ = invoke("translate", cyclegan_run, cyclegan_run.parent / "a", tmp_path / "out", "--workers", 2)
    processes = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    limit = "" if processes == resource.RLIM_INFINITY else f"; this user may run {processes} at once: ulimit -u"
    assert_one_line_error(result, f"Error: no more processes or threads can start ({os.strerror(errno.EAGAIN)}"
                                  f"{limit}); raise the limit, or free memory, or use fewer --workers (0 of ")
    # training whose loading workers cannot start (its data's check, before step 1) is told the same
    result, _ = invoke("train", "cyclegan", "--a", cyclegan_run.parent / "a", "--b", cyclegan_run.parent / "b",
                       "--size", 32, "--batch-size", 2, "--workers", 2, "--device", "cpu", "--out", tmp_path / "r")
    assert_one_line_error(result, f"Error: no more processes or threads can start ({os.strerror(errno.EAGAIN)}"
                                  f"{limit}); raise the limit, or free memory")
    assert result.output.strip().endswith(", or use fewer --workers")


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_image_is_translated(tmp_path, monkeypatch,
                                                                                           cyclegan_run):
    """A read-only OUTPUT was found out by the first batch's writes, after its translation (minutes, for large
    photos on a CPU)."""
    source = tmp_path / "in"
    for index in range(3):
        write_rgb(source / f"{index}.png", 16, 16, seed=index)
    real_open = open

    def read_only(path, *args, **kwargs):
        if ".img2img-probe" in str(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "open", read_only, raising=False)
    monkeypatch.setattr(translate._ImageFiles, "__getitem__", lambda *args: pytest.fail("decoded"))
    result, _ = invoke("translate", cyclegan_run, source, tmp_path / "out" / "deeper", "--workers", 0,
                       "--device", "cpu")
    assert_one_line_error(result, f"OUTPUT: cannot write into {tmp_path} (Read-only file system)")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".img2img-probe*"))
    monkeypatch.undo()
    summary = Translator(Invert(), GeneratorInfo(3, 3, 4)).translate_folder(source, tmp_path / "out", progress=False)
    assert len(summary.translated) == 3 and not list(tmp_path.rglob(".img2img-probe*"))


def test_a_grid_file_without_an_image_extension_is_refused_before_sampling(tmp_path, mnist_run):
    run = tmp_path / "run"
    Trainer(mnist_run(steps=1), run).fit()
    result, _ = invoke("sample", run, "--n", 4, "--out", tmp_path / "digits", "--grid", tmp_path / "grid")
    assert_one_line_error(result, "--grid", str(tmp_path / "grid"), "extension of an image format", ".png")
    assert not (tmp_path / "digits").exists()
    # a grid no image reader takes: every image was held for it, then a 30,002² sheet made of them
    result, _ = invoke("sample", run, "--n", 1_000_000, "--out", tmp_path / "digits", "--grid", tmp_path / "g.png")
    assert_one_line_error(result, "--grid: 1,000,000 images make a grid of 30,002×30,002 pixels",
                          "draw at most about 99,420 with --n")
    assert not (tmp_path / "digits").exists()


# -- forked workers -----------------------------------------------------------------------------------------
class _Collected:
    """Garbage whose destructor says in which process it ran (a native handle's would wait on its threads)."""

    def __init__(self, log):
        self.log, self.cycle = log, self

    def __del__(self):
        with open(self.log, "a") as handle:
            handle.write(f"{os.getpid()}\n")


class _CollectingDataset:
    """Each item runs a full garbage collection in the loading worker, as allocation may at any time."""

    def __len__(self):
        return 8

    def __getitem__(self, key):
        gc.collect()
        return torch.tensor(os.getpid())


def test_loading_workers_never_run_the_destructors_of_the_trainers_garbage(tmp_path, monkeypatch):
    """A worker forked while garbage waits for collection must not collect it: its destructor could wait for
    threads the worker does not have (an ONNX Runtime session's once hung a test run this way)."""
    log = tmp_path / "collected"

    def collect_and_read(path):  # the crash finder's child decodes with this
        gc.collect()
        raise ValueError("not an image")

    monkeypatch.setattr(images, "read_image_levels", collect_and_read)
    gc.disable()
    try:
        _Collected(log)  # a reference cycle: only the collector frees it
        batches = LoaderBatches(_CollectingDataset(), StepSampler(8, 2, seed=0), num_workers=2)
        workers = {int(pid) for _, batch in zip(range(4), batches.iterate(0)) for pid in batch}
        crashes = guard.find_crashes([tmp_path / "none.png"])  # the other kind of child: one decoding process
    finally:
        gc.enable()
    assert os.getpid() not in workers and len(workers) == 2 and not crashes
    assert not log.exists(), f"collected in a worker: {log.read_text()}"
    assert gc.get_freeze_count() == 0  # the parent's collector has everything back
    gc.collect()
    assert log.read_text().split() == [str(os.getpid())]


def test_forking_unfreezes_on_an_interpreter_that_starts_with_objects_frozen(monkeypatch):
    """Python 3.12.1 starts with 375 objects frozen: forking() took them for a caller's gc.freeze() and never
    unfroze, so every object alive at the first loader's start stayed out of the collector's reach for good."""
    gc.freeze()  # as that interpreter starts
    try:
        monkeypatch.setattr(guard, "_FROZEN_AT_IMPORT", gc.get_freeze_count(), raising=False)
        with guard.forking():
            assert gc.get_freeze_count() > 0
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()


def test_forking_keeps_what_the_caller_froze_frozen():
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with guard.forking():
            pass
        assert gc.get_freeze_count() >= frozen
    finally:
        gc.unfreeze()


class _Images:
    """Items of a tensor and a label, as a training dataset gives them."""

    def __len__(self):
        return 8

    def __getitem__(self, key):
        index, _ = key
        return {"image": torch.full((3, 4, 4), float(index)), "label": torch.tensor(index)}


@pytest.fixture
def full_shared_memory(monkeypatch):
    """/dev/shm with no room (a Docker container's 64 MB, filled): moving a storage there, or making one there,
    fails as torch says it does; and a test that would wait for ever fails after a minute instead."""
    share = torch.UntypedStorage._share_fd_cpu_

    def no_room(self, *args):
        if self.is_shared():  # already there: only handing over its file descriptor
            return share(self, *args)
        raise RuntimeError("unable to allocate shared memory(shm) for file </torch_7_1_0>: No space left on device "
                           "(28)")

    def no_new(cls, *args, **kwargs):
        raise RuntimeError("unable to allocate shared memory(shm) for file </torch_7_1_1>: No space left on device "
                           "(28)")

    monkeypatch.setattr(torch.UntypedStorage, "_share_fd_cpu_", no_room)
    monkeypatch.setattr(torch.UntypedStorage, "_new_using_fd_cpu", classmethod(no_new))

    def waited_for_ever(number, frame):
        raise AssertionError("the loader waited for a batch that never came")

    previous = signal.signal(signal.SIGALRM, waited_for_ever)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_training_batches_cross_by_value_where_shared_memory_is_full(full_shared_memory):
    """A training run whose loading workers found no room in shared memory stopped, calling the batch a broken
    file; its batches now come by value, the same as those loaded in the training process."""
    from img2img.data.transfer import received  # noqa: PLC0415

    def batches(workers):
        return [received(batch) for _, batch in zip(range(5), LoaderBatches(
            _Images(), StepSampler(8, 4, seed=0), num_workers=workers).iterate(2))]

    for here, crossed in zip(batches(0), batches(2)):
        assert here.keys() == crossed.keys()
        assert all(torch.equal(here[key], crossed[key]) and crossed[key].dtype == here[key].dtype for key in here)


def test_translation_goes_through_where_shared_memory_is_full(tmp_path, full_shared_memory):
    """In a container with little shared memory, a folder of large photos hung translation for ever, with a
    traceback from each loading worker: their batches failed to cross in a thread that lost the error."""
    for index in range(6):
        write_rgb(tmp_path / "in" / f"{index}.png", 12 + index, 8, seed=index)
    translator = Translator(Invert(), GeneratorInfo(3, 3, 4), batch_size=2)
    summary = translator.translate_folder(tmp_path / "in", tmp_path / "out", progress=False, workers=2)
    assert summary.ok and len(summary.translated) == 6
    for index in range(6):
        source = np.asarray(Image.open(tmp_path / "in" / f"{index}.png")).astype(int)
        assert np.abs(np.asarray(Image.open(tmp_path / "out" / f"{index}.png")) - (255 - source)).max() <= 1


def test_where_no_semaphore_can_be_made_the_commands_decode_in_their_own_process(tmp_path, cyclegan_run,
                                                                              monkeypatch):
    """/dev/shm read-only (or missing), as in some containers: a loader's queues need semaphores, which live
    there, so no loading worker could start, and every command that decodes stopped blaming its own output
    ("Error: OUT: Read-only file system").  They now decode in their own process, and say so once."""
    import _multiprocessing  # noqa: PLC0415

    from test_unpaired import write_unpaired  # noqa: PLC0415

    def refused(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    said = []

    class Collect(logging.Handler):
        def emit(self, record):
            said.append(record.getMessage())

    monkeypatch.setattr(_multiprocessing, "SemLock", refused)
    monkeypatch.setattr(errors, "_SAID", set())
    guard._no_semaphores.cache_clear()
    collect = Collect()
    logging.getLogger("img2img").addHandler(collect)
    try:
        for index in range(6):
            write_rgb(tmp_path / "in" / f"{index}.png", 12, 8, seed=index)
        result, output = invoke("translate", cyclegan_run, tmp_path / "in", tmp_path / "out", "--workers", 2,
                                "--device", "cpu")
        assert result.exit_code == 0 and len(list((tmp_path / "out").iterdir())) == 6, output
        (tmp_path / "data").mkdir()
        root = write_unpaired(tmp_path / "data")
        result, output = invoke("train", "cyclegan", "--a", root / "a", "--b", root / "b", "--size", 32,
                                "--load-size", 32, "--ngf", 8, "--ndf", 8, "--workers", 2, "--out", tmp_path / "run",
                                *QUICK)
        assert result.exit_code == 0, output
    finally:
        logging.getLogger("img2img").removeHandler(collect)
        guard._no_semaphores.cache_clear()
    where = "/dev/shm" if sys.platform.startswith("linux") else "shared memory"
    assert [line for line in said if "loading workers" in line] == [
        f"loading workers cannot start here: no semaphore can be made in {where} (Read-only file system); decoding "
        "in this process instead, where a file that crashes its decoder ends the command"]


def test_translation_goes_through_under_a_file_size_limit_smaller_than_its_batches(tmp_path, cyclegan_run):
    """A limit on the size of files (``ulimit -f``, which a cluster's job may carry over from where it was
    submitted) applies to the files in shared memory too: a batch larger than it failed in its worker, with
    torch's traceback ("unable to resize file </torch_...> to the right size: File too large").  Such batches
    now cross by value, as where shared memory is full."""
    import resource  # noqa: PLC0415

    for index in range(4):
        write_rgb(tmp_path / "in" / f"{index}.png", 256, 256, seed=index)
    limit = 60_000  # less than one image the model reads (256² grey: 65.5 kB); more than its JPEG
    done = command_in_a_process("", "translate", cyclegan_run, tmp_path / "in", tmp_path / "out", "--workers", 2,
                                "--format", "jpg",
                                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert len(list((tmp_path / "out").iterdir())) == 4


def test_a_full_disk_while_an_eval_report_is_rewritten_keeps_the_earlier_report(tmp_path, cyclegan_run,
                                                                               monkeypatch):
    """The report was written in place: a full disk left half of the new one where the earlier one had been."""
    import pathlib  # noqa: PLC0415

    data, report = cyclegan_run.parent, tmp_path / "e.json"
    args = ["eval", cyclegan_run, "--a", data / "a", "--b", data / "b", "--features", "random", "--device", "cpu",
            "--json", report]
    result, output = invoke(*args)
    assert result.exit_code == 0, output
    earlier = report.read_bytes()

    def full(write):
        def partial(self, data, *args, **kwargs):
            write(self, data[:10], *args, **kwargs)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return partial

    monkeypatch.setattr(pathlib.Path, "write_text", full(pathlib.Path.write_text))
    monkeypatch.setattr(pathlib.Path, "write_bytes", full(pathlib.Path.write_bytes))
    result, _ = invoke(*args)
    assert_one_line_error(result, str(report), "No space left on device")
    monkeypatch.undo()
    assert report.read_bytes() == earlier and [p.name for p in tmp_path.iterdir()] == ["e.json"]


def test_a_report_written_to_a_link_or_a_pipe_keeps_the_link_and_the_pipe(tmp_path, cyclegan_run):
    """Written through a temporary file and a rename, a report replaced a link with a file and, as root, a
    device with a file (`--json /dev/full` left a JSON file where /dev/full had been); a FIFO stands in for the
    device here."""
    import stat  # noqa: PLC0415
    import threading  # noqa: PLC0415

    data = cyclegan_run.parent
    args = ["eval", cyclegan_run, "--a", data / "a", "--b", data / "b", "--features", "random", "--device", "cpu"]
    (tmp_path / "reports").mkdir()
    link = tmp_path / "latest.json"
    link.symlink_to(tmp_path / "reports" / "e.json")
    result, output = invoke(*args, "--json", link)
    assert result.exit_code == 0, output
    assert link.is_symlink() and json.loads((tmp_path / "reports" / "e.json").read_text())["model"] == "cyclegan"
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    read = []
    reader = threading.Thread(target=lambda: read.append(pipe.read_text()), daemon=True)
    reader.start()
    result, output = invoke(*args, "--json", pipe)
    reader.join(timeout=60)
    assert result.exit_code == 0, output
    assert stat.S_ISFIFO(os.stat(pipe).st_mode) and json.loads(read[0])["model"] == "cyclegan"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "pipe", "reports"]


def test_a_run_folder_inside_its_data_folder_is_refused_before_the_data_is_checked(tmp_path, monkeypatch):
    """`--out data/a/run` trained, and on --resume its own sample grids were read as training images of --a
    (with a warning that the folder had changed, which named no cause)."""
    import shutil  # noqa: PLC0415

    from test_unpaired import write_unpaired  # noqa: PLC0415

    (tmp_path / "data").mkdir()
    root = write_unpaired(tmp_path / "data")
    args = ["train", "cyclegan", "--a", root / "a", "--b", root / "b", "--size", 32, "--load-size", 32, "--ngf", 4,
            "--ndf", 4, "--steps", 2, "--device", "cpu", "--workers", 0]
    with monkeypatch.context() as patch:
        patch.setattr("img2img.data.unpaired.verify_images", lambda *args, **kwargs: pytest.fail("checked first"))
        result, _ = invoke(*args, "--out", root / "a" / "run")
    assert_one_line_error(result, f"--out: the run folder {root / 'a' / 'run'} lies inside --a {root / 'a'}",
                          "choose a run folder outside it")
    assert sorted(p.name for p in (root / "a").iterdir()) == sorted(f"{i}.png" for i in range(6))
    result, output = invoke(*args, "--out", tmp_path / "run")  # beside the data: trains
    assert result.exit_code == 0, output
    shutil.move(tmp_path / "run", root / "b" / "run")  # a run made inside its data before this was refused
    result, _ = invoke("train", "cyclegan", "--resume", root / "b" / "run", "--steps", 4)
    assert_one_line_error(result, "--resume", "lies inside --b", "move it out (a run resumes from any folder)")


def _read_only(monkeypatch, folder):
    """Writing into ``folder``, or any folder in it, fails as on a read-only file system (the check's probe file
    is what is written)."""
    real_open = open

    def read_only(path, *args, **kwargs):
        if ".img2img-probe" in str(path) and Path(path).is_relative_to(folder):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "open", read_only, raising=False)


@pytest.mark.parametrize("command", ["export", "eval", "bench", "sample --out", "sample --grid"])
def test_a_destination_that_cannot_be_written_is_refused_before_the_work_it_would_hold(command, tmp_path, monkeypatch,
                                                                                       cyclegan_run, mnist_run):
    """A read-only --out, --json, --profile or --grid was found out by the write, after the ONNX conversion, the
    evaluation, the timing or the images, whose result it then lost."""
    import img2img.bench  # noqa: PLC0415
    from img2img import sampling  # noqa: PLC0415
    from img2img.evaluation import evaluate  # noqa: PLC0415

    locked = tmp_path / "locked"
    locked.mkdir()
    data = cyclegan_run.parent
    if command.startswith("sample"):
        run = tmp_path / "run"
        Trainer(mnist_run(steps=1), run).fit()
    args, option, work = {
        "export": (["export", cyclegan_run, "--out", locked / "g.onnx"], "--out", (torch.onnx, "export")),
        "eval": (["eval", cyclegan_run, "--a", data / "a", "--b", data / "b", "--features", "random", "--json",
                  locked / "deeper" / "e.json"], "--json", (evaluate, "evaluate_model")),
        "bench": (["bench", "mnist-gan", "--steps", 1, "--device", "cpu", "--profile", locked / "p.txt"], "--profile",
                  (img2img.bench, "bench_training")),
        "sample --out": (["sample", tmp_path / "run", "--n", 2, "--out", locked], "--out", (sampling, "quantize")),
        "sample --grid": (["sample", tmp_path / "run", "--n", 2, "--out", tmp_path / "digits", "--grid",
                           locked / "g.png"], "--grid", (sampling, "quantize")),
    }[command]
    _read_only(monkeypatch, locked)
    monkeypatch.setattr(*work, lambda *args, **kwargs: pytest.fail("the work began"))
    result, _ = invoke(*args)
    assert_one_line_error(result, f"{option}: cannot write into {locked} (Read-only file system)")
    assert list(locked.iterdir()) == [] and not (tmp_path / "digits").exists()


def test_eval_beside_a_checkpoint_that_cannot_be_written_beside_prints_the_metrics_and_says_so(cyclegan_run,
                                                                                            monkeypatch, logged):
    """Weights on a read-only file system: the metrics were computed, then lost to the JSON's write."""
    data = cyclegan_run.parent
    _read_only(monkeypatch, cyclegan_run)
    reports = sorted(cyclegan_run.rglob("*.json"))  # (the run is shared: other tests' reports may be there)
    result, output = invoke("eval", cyclegan_run, "--a", data / "a", "--b", data / "b", "--features", "random",
                            "--device", "cpu")
    assert result.exit_code == 0, output
    assert "fid_a2b" in output and "wrote" not in output and sorted(cyclegan_run.rglob("*.json")) == reports
    assert len(logged) == 1 and logged[0] in [
        f"cannot write the report into {folder} (Read-only file system): the metrics are printed only; pass "
        "--json FILE to keep them" for folder in (cyclegan_run, cyclegan_run / "eval")], logged


def test_eval_shows_its_metrics_before_a_json_write_that_fails(cyclegan_run, tmp_path, monkeypatch):
    from img2img.evaluation import evaluate  # noqa: PLC0415

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(evaluate, "replace_file", full)
    data = cyclegan_run.parent
    result, output = invoke("eval", cyclegan_run, "--a", data / "a", "--b", data / "b", "--features", "random",
                            "--json", tmp_path / "e.json", "--device", "cpu")
    assert_one_line_error(result, f"{tmp_path / 'e.json'}: No space left on device")
    assert "fid_a2b" in output.split("Error:")[0]


def test_a_failed_save_names_the_file_asked_for_when_its_temporary_cannot_be_removed_either(tmp_path, monkeypatch):
    """On a file system gone read-only, removing the temporary fails too (unlink says EROFS even for a file that is
    not there): that second error, naming the temporary, replaced the first."""
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "somewhere")

    def refuse_unlink(self, missing_ok=False):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(torch, "save", read_only)
    monkeypatch.setattr(type(tmp_path), "unlink", refuse_unlink)
    with pytest.raises(OSError) as caught:
        checkpoint.atomic_save({"step": 1}, tmp_path / "a.ckpt")
    assert caught.value.filename == str(tmp_path / "a.ckpt") and caught.value.errno == errno.EROFS
    checkpoint.discard(tmp_path / "missing")  # says nothing
    monkeypatch.undo()
    (tmp_path / "file").write_bytes(b"")
    checkpoint.discard(tmp_path / "file" / "beneath")  # NotADirectoryError, unsaid


def _python_314_default(monkeypatch):
    """multiprocessing as Python 3.14 sets it up on Linux: forkserver by default, no start method chosen."""
    import multiprocessing.context as contexts  # noqa: PLC0415

    monkeypatch.setattr(contexts._default_context, "_default_context", contexts._concrete_contexts["forkserver"])
    monkeypatch.setattr(contexts._default_context, "_actual_context", None)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is what Linux's loaders used before 3.14")
def test_loading_workers_fork_on_linux_as_before_python_314(monkeypatch):
    """Python 3.14 made forkserver Linux's default: each loading worker imported torch and img2img anew (the suite
    took three times as long) and had none of this process's settings, such as --max-pixels."""
    import multiprocessing  # noqa: PLC0415

    _python_314_default(monkeypatch)
    assert multiprocessing.get_context().get_start_method() == "forkserver"  # what a DataLoader would use
    assert guard.loader_options(2)["multiprocessing_context"].get_start_method() == "fork"
    assert guard.child_context().get_start_method() == "fork"
    assert guard.loader_options(0) == {"worker_init_fn": None}  # a DataLoader without workers refuses a context


def test_workers_started_by_forkserver_keep_this_processs_pixel_limit(tmp_path, monkeypatch, cyclegan_run):
    """A program that chose forkserver (or spawn): its workers imported Pillow afresh, with its default limit, so
    `translate --max-pixels 100` translated images of thousands of pixels, and a crashing file's search too."""
    import multiprocessing  # noqa: PLC0415

    from PIL import Image as PILImage  # noqa: PLC0415

    source = tmp_path / "in"
    write_rgb(source / "large.png", 40, 40)
    write_rgb(source / "small.png", 8, 8)
    monkeypatch.setattr(guard, "child_context", lambda: multiprocessing.get_context("forkserver"))
    default = PILImage.MAX_IMAGE_PIXELS
    try:
        result, output = invoke("translate", cyclegan_run, source, tmp_path / "out", "--device", "cpu", "--workers", 1,
                                "--max-pixels", 100)
    finally:
        images.set_pixel_limit(default)
    assert result.exit_code == 3 and output.count("than the limit of 100") == 1, output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["small.png"]

    class Announce:  # the pipe to the parent
        def send(self, index):
            pass

        def close(self):
            pass

    try:  # the child that looks for a crashing file (find_crashes) takes the limit too
        guard._scan([source / "small.png"], lambda path: None, Announce(), 100)
        assert PILImage.MAX_IMAGE_PIXELS == 100
    finally:
        images.set_pixel_limit(default)


def test_a_run_folder_that_exists_and_cannot_be_written_is_refused_before_training(tmp_path, monkeypatch, mnist_run):
    (tmp_path / "run").mkdir()
    _read_only(monkeypatch, tmp_path / "run")
    result, _ = invoke("train", "mnist-gan", "--steps", 1, "--batch-size", 4, "--device", "cpu",
                       "--out", tmp_path / "run")
    assert_one_line_error(result, f"--out: cannot write to {tmp_path / 'run'} (Read-only file system)")


def test_a_named_pipe_given_as_a_checkpoint_is_refused_not_waited_on(tmp_path):
    """Every command that reads a checkpoint (or official weights) opened a named pipe given for one and waited for
    a writer, for ever: `img2img translate pipe.ckpt ...` hung until it was killed."""
    pipe = tmp_path / "pipe.ckpt"
    os.mkfifo(pipe)
    (tmp_path / "in").mkdir()
    commands = {"CHECKPOINT": [["translate", pipe, tmp_path / "in", tmp_path / "out"], ["eval", pipe],
                               ["sample", pipe, "--n", 2, "--out", tmp_path / "samples"],
                               ["export", pipe, "--out", tmp_path / "g.onnx"]],
                "--resume": [["train", "cyclegan", "--resume", pipe]],
                "WEIGHTS": [["import", pipe, "--out", tmp_path / "imported.ckpt"]]}
    results = []

    def attempt():
        for option, argument_lists in commands.items():
            results.extend((option, invoke(*arguments)[0]) for arguments in argument_lists)

    assert not waited_on(pipe, attempt, 120), "waited on the pipe for a writer"
    assert len(results) == 6
    for option, result in results:
        assert_one_line_error(result, f"{option}: {pipe} is not a regular file (a pipe, a socket or a device)")
