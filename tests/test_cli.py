"""The command line: one-line errors that name the option or path, no tracebacks; sample and resume."""

import contextlib
import json
import os
import signal
import threading
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from click.testing import CliRunner

from img2img.cli import main
from img2img import checkpoint, errors
from img2img.errors import UserError
from img2img.train import train


def read_image(path):
    return torch.from_numpy(np.array(Image.open(path))).unsqueeze(0)

QUICK = ["--steps", "4", "--batch-size", "4", "--device", "cpu", "--save-every", "2", "--sample-every", "4"]


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result, result.output


def assert_one_line_error(result, *fragments):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, result.output
    for fragment in fragments:
        assert fragment in error_lines[0], result.output


def waited_on(pipe, action, limit):
    """Whether ``action()`` was still waiting on the named pipe ``pipe`` (for a writer) after ``limit`` seconds.
    Either way it has ended on return: a waiting reader is let go by a writer that opens the pipe and closes it."""
    waiting = threading.Thread(target=action, daemon=True)
    waiting.start()
    waiting.join(timeout=limit)
    hung = waiting.is_alive()
    while waiting.is_alive():
        with contextlib.suppress(OSError):
            os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        waiting.join(timeout=1)
    return hung


def command_in_a_process(setup, *arguments, **run):
    """``img2img ARGUMENTS`` run by Python in a process of its own after the lines of ``setup`` (stand-ins, hooks,
    signals to come), for what only a whole process shows: its exit status and everything it writes to stderr.
    ``run`` goes to :func:`subprocess.run` (``preexec_fn``: what the process starts with)."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    script = f"{setup}from img2img.cli import main\nmain({[str(a) for a in arguments]!r})\n"
    return subprocess.run([sys.executable, "-c", script], **{"capture_output": True, "text": True, "timeout": 300,
                                                            **run})


@pytest.fixture
def finished_run(tmp_path, mnist_run):
    out = tmp_path / "run"
    train(mnist_run(steps=4, batch_size=4, save_every_steps=2), out)
    return out


def test_train_mnist_gan_writes_a_run_and_says_where(tmp_path):
    result, output = invoke("train", "mnist-gan", "--out", tmp_path / "run", *QUICK)
    assert result.exit_code == 0, output
    assert f"checkpoint:  {tmp_path / 'run' / 'last.ckpt'}" in output
    assert "sample grid:" in output and (tmp_path / "run" / "samples" / "step-00000004.png").is_file()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"] == "mnist-gan" and config["train"]["steps"] == 4
    assert config["options"]["loss"] == "non-saturating"


def test_dry_run_prints_the_resolved_config_and_writes_nothing(tmp_path):
    result, output = invoke("train", "mnist-gan", "--out", tmp_path / "run", "--loss", "hinge", "--dry-run")
    assert result.exit_code == 0
    assert '"loss": "hinge"' in output and '"steps": 10000' in output
    assert not (tmp_path / "run").exists()


def test_an_output_under_a_file_is_refused_at_once_naming_the_file(finished_run, tmp_path):
    """A file where a folder above an output would be made: eval and bench said "afile: File exists", export
    named its temporary file, and translate tried every image, failing each."""
    blocker = tmp_path / "afile"
    blocker.write_text("a user's file")
    commands = {"--out": ("train", "mnist-gan", *QUICK), "--json": ("eval", finished_run, "--samples", 10),
                "OUTPUT": ("translate", finished_run, tmp_path), "--grid": ("sample", finished_run, "--out",
                                                                          tmp_path / "s"),
                "--profile": ("bench", "mnist-gan", "--device", "cpu", "--steps", 1)}
    for option, command in commands.items():
        target = blocker / "deeper" / "x.png"
        args = (*command, target) if option == "OUTPUT" else (*command, option, target)
        result, _ = invoke(*args)
        assert_one_line_error(result, f"'{option}': {target}: {blocker} is a file, so no folder can be made there")
    assert blocker.read_text() == "a user's file"


def test_unknown_loss(tmp_path):
    result, _ = invoke("train", "mnist-gan", "--loss", "wasserstein", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "--loss" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("option", ["--steps", "--batch-size", "--save-every"])
def test_negative_counts(tmp_path, option):
    result, _ = invoke("train", "mnist-gan", option, "-5", "--out", tmp_path / "r")
    assert result.exit_code == 2 and option in result.output and "Traceback" not in result.output


def test_unwritable_out(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result, _ = invoke("train", "mnist-gan", "--out", blocker / "run", *QUICK)
    assert_one_line_error(result, "--out", str(blocker / "run"))


def test_out_that_already_holds_a_run_is_refused(finished_run):
    before = (finished_run / "last.ckpt").read_bytes()
    result, output = invoke("train", "mnist-gan", "--out", finished_run, *QUICK)
    assert_one_line_error(result, "--out", "already holds a run", "--resume")
    assert "resolved configuration" not in output  # refused before the data are checked
    assert (finished_run / "last.ckpt").read_bytes() == before


@pytest.mark.parametrize("kept", ["checkpoints", "best.ckpt"])
def test_out_with_a_runs_checkpoints_but_no_last_ckpt_is_refused(finished_run, kept):
    """A checkpoint of the run is never replaced by a new run's, whichever of its files is left."""
    if kept == "best.ckpt":
        for step in (finished_run / "checkpoints").iterdir():
            step.unlink()
        (finished_run / "last.ckpt").rename(finished_run / "best.ckpt")
    else:
        (finished_run / "last.ckpt").unlink()
    before = {path: path.read_bytes() for path in finished_run.rglob("*.ckpt")}
    assert before
    result, _ = invoke("train", "mnist-gan", "--out", finished_run, *QUICK)
    assert_one_line_error(result, "--out", "already holds a run", "--resume")
    assert {path: path.read_bytes() for path in finished_run.rglob("*.ckpt")} == before


@pytest.mark.parametrize("name", ["config.json", "metrics.jsonl", "train.log", "samples/last.png"])
def test_out_holding_files_of_the_same_names_that_are_no_runs_is_refused(tmp_path, name):
    """A new run writes config.json and sample grids and starts metrics.jsonl afresh: a folder where a file of
    one of those names is not a run's is refused, and the file is kept; other files are left alone."""
    out = tmp_path / "mine"
    (out / "samples").mkdir(parents=True)
    (out / name).write_text("the user's own file")
    result, _ = invoke("train", "mnist-gan", "--out", out, *QUICK)
    assert_one_line_error(result, "--out", str(out / name), "not from an img2img run")
    assert (out / name).read_text() == "the user's own file"
    (out / name).rename(out / "samples" / "mine.png")
    result, _ = invoke("train", "mnist-gan", "--out", out, *QUICK)
    assert result.exit_code == 0, result.output
    assert (out / "samples" / "mine.png").read_text() == "the user's own file"


def test_the_same_command_starts_again_a_run_that_stopped_before_its_first_checkpoint(tmp_path):
    out = tmp_path / "run"
    result, _ = invoke("train", "mnist-gan", "--out", out, "--log-every", "1", *QUICK, "--save-every", "1000")
    assert result.exit_code == 0, result.output
    for saved in (out / "last.ckpt", *(out / "checkpoints").iterdir()):  # as if it had died before saving
        saved.unlink()
    result, _ = invoke("train", "mnist-gan", "--out", out, "--log-every", "2", *QUICK)
    assert result.exit_code == 0, result.output
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]  # the new run's records only


def test_resume_folder_without_checkpoint(tmp_path):
    result, _ = invoke("train", "mnist-gan", "--resume", tmp_path)
    assert_one_line_error(result, "--resume", str(tmp_path), "holds no checkpoint")


def test_resume_corrupt_and_foreign_checkpoints(tmp_path):
    corrupt = tmp_path / "bad.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    result, _ = invoke("train", "mnist-gan", "--resume", corrupt)
    assert_one_line_error(result, "--resume", str(corrupt), "not a readable checkpoint")
    foreign = tmp_path / "latest_net_G_A.pth"
    torch.save({"model.1.weight": torch.ones(3)}, foreign)
    result, _ = invoke("sample", foreign, "--out", tmp_path / "s")
    assert_one_line_error(result, "CHECKPOINT", str(foreign), "not an img2img checkpoint")


def test_sample_of_a_translation_model_names_the_models_it_draws_from(tmp_path, cyclegan_run):
    result, _ = invoke("sample", cyclegan_run, "--out", tmp_path / "s", "--device", "cpu")
    assert_one_line_error(result, "CHECKPOINT: cyclegan translates images", "(mnist-gan, dcgan, wgan, cgan, acgan, "
                          "gmmn)", "img2img translate CHECKPOINT INPUT OUTPUT")
    assert not (tmp_path / "s").exists()


def test_resume_refuses_changed_settings(finished_run):
    result, _ = invoke("train", "mnist-gan", "--resume", finished_run, "--loss", "hinge")
    assert result.exit_code == 2 and "--loss cannot be changed when resuming" in result.output


def test_resume_refuses_a_run_of_another_model(finished_run):
    before = (finished_run / "last.ckpt").read_bytes()
    result, _ = invoke("train", "dcgan", "--resume", finished_run, "--steps", "6")
    assert_one_line_error(result, "--resume", "is from a mnist-gan run, not dcgan",
                          f"img2img train mnist-gan --resume {finished_run}")
    assert (finished_run / "last.ckpt").read_bytes() == before


def test_resume_extends_a_finished_run(finished_run):
    result, output = invoke("train", "mnist-gan", "--resume", finished_run, "--steps", "6")
    assert result.exit_code == 0, output
    assert torch.load(finished_run / "last.ckpt", weights_only=True)["step"] == 6


def test_sample_writes_n_pngs_and_the_same_seed_gives_the_same_images(finished_run, tmp_path):
    result, output = invoke("sample", finished_run, "--n", 12, "--out", tmp_path / "a", "--seed", 5,
                            "--grid", tmp_path / "grid.png")
    assert result.exit_code == 0, output
    files = sorted((tmp_path / "a").glob("*.png"))
    assert len(files) == 12 and (tmp_path / "grid.png").is_file()
    first = read_image(str(files[0]))
    assert first.shape == (1, 28, 28) and first.dtype == torch.uint8
    invoke("sample", finished_run, "--n", 12, "--out", tmp_path / "b", "--seed", 5)
    invoke("sample", finished_run, "--n", 12, "--out", tmp_path / "c", "--seed", 6)
    same = [torch.equal(read_image(str(f)), read_image(str(tmp_path / "b" / f.name))) for f in files]
    other = [torch.equal(read_image(str(f)), read_image(str(tmp_path / "c" / f.name))) for f in files]
    assert all(same) and not any(other)


def test_sample_never_overwrites_without_asking(finished_run, tmp_path):
    invoke("sample", finished_run, "--n", 3, "--out", tmp_path / "a")
    result, _ = invoke("sample", finished_run, "--n", 3, "--out", tmp_path / "a")
    assert_one_line_error(result, "--out", "exists", "--overwrite")
    result, _ = invoke("sample", finished_run, "--n", 3, "--out", tmp_path / "a", "--overwrite")
    assert result.exit_code == 0
    for suffix in (".png", ".jpg"):  # the grid in the format its extension names
        grid = tmp_path / f"grid{suffix}"
        grid.write_bytes(b"the user's own picture")
        result, _ = invoke("sample", finished_run, "--n", 3, "--out", tmp_path / suffix, "--grid", grid)
        assert_one_line_error(result, "--grid", str(grid), "exists", "--overwrite")
        assert grid.read_bytes() == b"the user's own picture"
        result, _ = invoke("sample", finished_run, "--n", 3, "--out", tmp_path / suffix, "--grid", grid,
                           "--overwrite")
        assert result.exit_code == 0
        assert Image.open(grid).format == {".png": "PNG", ".jpg": "JPEG"}[suffix]
    assert sorted(path.name for path in tmp_path.iterdir() if path.is_file()) == ["grid.jpg", "grid.png"]


def test_unavailable_device_is_a_one_line_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result, _ = invoke("train", "mnist-gan", "--out", tmp_path / "r", "--device", "cuda", "--steps", "2")
    assert_one_line_error(result, "--device", "CUDA is not available")
    assert not (tmp_path / "r").exists()


def test_settings_the_networks_cannot_run_are_refused_in_one_line_before_anything_is_written(tmp_path):
    from test_unpaired import write_unpaired  # noqa: PLC0415

    result, _ = invoke("train", "mnist-gan", "--batch-size", 1, "--out", tmp_path / "mnist")
    assert_one_line_error(result, "--batch-size 1", "batch of 2")  # batch norm cannot train on one example
    assert not (tmp_path / "mnist").exists()
    result, _ = invoke("bench", "mnist-gan", "--batch-size", 1, "--device", "cpu")
    assert_one_line_error(result, "--batch-size 1")
    root = write_unpaired(tmp_path)
    for size in (8, 12, 16):  # the 70×70 PatchGAN would normalise a 1×1 map
        result, _ = invoke("train", "cyclegan", "--a", root / "a", "--b", root / "b", "--size", size,
                           "--out", tmp_path / "cyclegan")
        assert_one_line_error(result, f"--size {size} with --n-layers 3", "larger images")
    result, _ = invoke("train", "cyclegan", "--a", root / "a", "--b", root / "b", "--size", 32, "--n-layers", 5,
                       "--dry-run")
    assert_one_line_error(result, "--size 32 with --n-layers 5")
    result, _ = invoke("train", "pix2pix", "--a", root / "a", "--b", root / "a", "--size", 32,
                       "--discriminator", "n_layers", "--n-layers", 5, "--dry-run")
    assert_one_line_error(result, "--size 32 with --n-layers 5")
    assert not (tmp_path / "cyclegan").exists()
    result, output = invoke("train", "cyclegan", "--a", root / "a", "--b", root / "b", "--size", 24, "--dry-run")
    assert result.exit_code == 0, output  # 24 is the smallest side the default PatchGAN takes


def test_outputs_that_cannot_be_written_are_one_line_errors(tmp_path, finished_run):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result, _ = invoke("sample", finished_run, "--n", 4, "--out", tmp_path / "digits", "--grid", blocker / "grid.png")
    assert_one_line_error(result, str(blocker / "grid.png"))
    result, _ = invoke("eval", finished_run, "--samples", 20, "--json", blocker / "eval.json")
    assert_one_line_error(result, str(blocker))


def test_inception_weights_that_do_not_exist_or_do_not_apply_are_never_silently_dropped(tmp_path, finished_run):
    result, _ = invoke("eval", finished_run, "--samples", 20, "--inception-weights", tmp_path / "missing.pth")
    assert_one_line_error(result, "--inception-weights", "missing.pth")
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"unused")
    result, output = invoke("eval", finished_run, "--samples", 20, "--inception-weights", weights,
                            "--json", tmp_path / "eval.json")
    assert result.exit_code == 0, output
    assert "--inception-weights not used" in output
    assert any("not used" in note for note in json.loads((tmp_path / "eval.json").read_text())["notes"])


@pytest.mark.parametrize("name, where", [("SIGINT", "import"), ("SIGTERM", "import"), ("SIGTERM", "callback")])
def test_a_signal_while_the_command_starts_ends_it_in_one_line(name, where):
    """Ctrl-C in the seconds that importing torch takes gave a traceback of the import machinery; the signal
    is sent here exactly while the command imports torch, or while a weak reference's callback runs then,
    where Python drops exceptions (the command went on)."""
    send = (f"os.kill(os.getpid(), signal.{name})" if where == "import" else
            f"held = type('Held', (), {{}})(); ref = weakref.ref(held, lambda _: signal.raise_signal(signal.{name})); "
            "del held")
    script = ("import builtins, os, signal, weakref\n"
              "real = builtins.__import__\n"
              "def hooked(name, *args, **kwargs):\n"
              "    if name == 'torch' and not hooked.sent:\n"
              f"        hooked.sent = True; {send}\n"
              "    return real(name, *args, **kwargs)\n"
              "hooked.sent = False\n"
              "builtins.__import__ = hooked\n")
    result = command_in_a_process(script, "--help")
    number = getattr(signal, name)
    assert result.returncode == 128 + number, result.stderr
    assert result.stderr == "interrupted while starting; nothing was done\n" and result.stdout == ""


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_signal_during_a_command_ends_it_in_one_line(name, finished_run, tmp_path):
    """Past its start, SIGTERM ended a command that had not set handlers of its own (eval, sample, export, a
    training still checking its data) by the default action, without a word and without removing its temporary
    files, and Ctrl-C ended it with exit status 130 and no line either."""
    report = tmp_path / "e.json"
    script = ("import os, signal, time\n"
              "import img2img.evaluation.evaluate as evaluate\n"
              "def stopped(*args, **kwargs):\n"
              f"    os.kill(os.getpid(), signal.{name})\n"
              "    time.sleep(30)\n"
              "evaluate.evaluate_model = stopped\n")
    result = command_in_a_process(script, "eval", finished_run, "--samples", 10, "--device", "cpu", "--json", report)
    assert result.returncode == 128 + getattr(signal, name), result.stderr
    assert result.stderr.splitlines()[-1] == f"interrupted ({name}) before the command finished", result.stderr
    assert "Traceback" not in result.stderr and not report.exists()


def test_a_signal_while_torch_traces_a_backward_pass_ends_the_command_in_one_line(finished_run, tmp_path):
    """torch.compile traces each backward pass with autograd's anomaly mode on, which reports any error that
    crosses a backward pass with the traceback of its forward call: Ctrl-C a minute into `bench --compile`
    printed six lines of torch's, `Error detected in ReflectionPad2DBackward0. Traceback of forward call that
    caused the error`, before the command's one.  The stand-in traces as torch's compiler does."""
    script = ("import os, signal, time, warnings, torch\n"
              "import img2img.evaluation.evaluate as evaluate\n"
              "class Stopped(torch.autograd.Function):\n"
              "    forward = staticmethod(lambda ctx, x: x * 2)\n"
              "    @staticmethod\n"
              "    def backward(ctx, grad):\n"
              "        os.kill(os.getpid(), signal.SIGINT)\n"
              "        time.sleep(30)\n"
              "def traced(*args, **kwargs):\n"
              "    with warnings.catch_warnings():  # as torch's compiler traces\n"
              "        warnings.filterwarnings('ignore', 'Anomaly Detection has been enabled.')\n"
              "        with torch.autograd.detect_anomaly(check_nan=False):\n"
              "            Stopped.apply(torch.ones(2, requires_grad=True)).sum().backward()\n"
              "evaluate.evaluate_model = traced\n")
    result = command_in_a_process(script, "eval", finished_run, "--samples", 10, "--device", "cpu")
    assert result.returncode == 128 + signal.SIGINT, result.stderr
    assert result.stderr == "interrupted (SIGINT) before the command finished\n", result.stderr


def test_a_closed_pipe_on_standard_output_ends_the_command_quietly(tmp_path, cyclegan_run):
    """`img2img translate ... | head -c 0`: printing the summary to a pipe no one reads said `Error: OUT: Broken
    pipe`, blaming the translations, which were all written."""
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    source = tmp_path / "in"
    source.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(source / "a.png")
    read, write = os.pipe()
    os.close(read)  # the reader has gone before the command prints
    try:
        result = subprocess.run([sys.executable, "-m", "img2img.cli", "translate", str(cyclegan_run), str(source),
                                 str(tmp_path / "out"), "--device", "cpu", "--workers", "0"], stdout=write,
                                stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write)
    assert result.returncode == 128 + signal.SIGPIPE, result.stderr
    assert "Error" not in result.stderr and "Traceback" not in result.stderr and "Exception" not in result.stderr
    assert (tmp_path / "out" / "a.png").is_file()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self/fd")
def test_a_command_started_with_its_standard_streams_closed_runs_as_with_them_open(tmp_path, cyclegan_run):
    """`img2img translate ... 2>&-` (a daemon's or a cron job's closed descriptors) wrote its progress bar to
    Python's missing sys.stderr, and ended with exit status 1 and nothing translated or said."""
    import os  # noqa: PLC0415

    source = tmp_path / "in"
    source.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(source / "a.png")
    read, write = os.pipe()
    setup = (f"import os, sys, img2img.cli\n"
             f"os.write({write}, os.readlink('/proc/self/fd/2').encode() + b' ' + str(sys.stderr.isatty()).encode())\n"
             f"os.close({write})\n")
    try:
        result = command_in_a_process(setup, "translate", cyclegan_run, source, tmp_path / "out", "--device", "cpu",
                                      "--workers", 0, capture_output=False, pass_fds=(write,),
                                      preexec_fn=lambda: (os.close(0), os.close(1), os.close(2)))
        os.close(write)
        said = os.read(read, 1000).decode()
    finally:
        os.close(read)
    assert result.returncode == 0
    assert (tmp_path / "out" / "a.png").is_file()
    assert said == f"{os.devnull} False"  # the descriptor that no file opened later may take


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
@pytest.mark.parametrize("lost", ["stdout", "stderr"])
def test_a_standard_stream_that_can_no_longer_be_written_does_not_stop_training(tmp_path, lost):
    """A job's output file on a full disk or over its quota (/dev/full stands in: every write fails with
    ENOSPC): training stopped at its first line, or at a progress bar's refresh between checkpoints, saying
    "RUN: No space left on device", which blamed the run folder.  It trains to its end, and its exit status says
    that what it printed is incomplete."""
    import subprocess  # noqa: PLC0415

    out = tmp_path / "run"
    with open("/dev/full", "w") as full:
        streams = {"stdout": full, "stderr": subprocess.PIPE} if lost == "stdout" else \
            {"stdout": subprocess.PIPE, "stderr": full}
        result = command_in_a_process("", "train", "mnist-gan", "--out", out, *QUICK, capture_output=False,
                                      **streams)
    said = result.stderr if lost == "stdout" else (out / "train.log").read_text()
    failure = f"standard {'output' if lost == 'stdout' else 'error'} (/dev/full) could not be written (No space left " \
        "on device)"
    assert result.returncode == 1, said
    assert checkpoint.read(out / "last.ckpt")["step"] == 4
    assert said.count(f"{failure}: the command goes on without it\n") == 1 and "Traceback" not in said
    if lost == "stdout":
        assert said.endswith(f"Error: {failure}: what the command printed there is incomplete, though its work is "
                             "done\n"), said
    else:
        assert f"checkpoint:  {out / 'last.ckpt'}" in result.stdout and result.stdout.endswith("png\n")


def test_a_command_started_in_a_deleted_folder_says_so_in_one_line(tmp_path, cyclegan_run):
    """A folder deleted under a shell still in it: importing torch there died with "Intel oneMKL FATAL ERROR:
    Cannot load libtorch_cpu.so", which named no cause."""
    import os  # noqa: PLC0415

    gone = tmp_path / "gone"
    gone.mkdir()

    def enter_and_delete():
        os.chdir(gone)
        os.rmdir(gone)

    result = command_in_a_process("", "translate", cyclegan_run, cyclegan_run.parent / "a", tmp_path / "out",
                                  preexec_fn=enter_and_delete)
    assert result.returncode == 1
    assert result.stderr == "Error: the current folder no longer exists (it was deleted); cd to one that does\n"
    assert not (tmp_path / "out").exists()


def test_torchs_line_on_a_cuda_toolkit_without_a_gpu_is_left_out(finished_run, tmp_path):
    """--compile on the CPU, on a machine with a CUDA toolkit (nvcc) but no GPU, printed torch's "No CUDA runtime
    is found, using CUDA_HOME='/usr/local'" in the middle of the run, which says its device itself."""
    import logging  # noqa: PLC0415

    result, output = invoke("sample", finished_run, "--n", 1, "--out", tmp_path / "x", "--device", "cpu")
    assert result.exit_code == 0, output
    toolkit = logging.getLogger("torch.utils.cpp_extension")
    said = lambda message: toolkit.filter(logging.LogRecord(toolkit.name, logging.WARNING, __file__, 1, message,  # noqa
                                                            ("/usr/local",), None))
    assert not said("No CUDA runtime is found, using CUDA_HOME='%s'") and said("anything else, at '%s'")
    invoke("sample", finished_run, "--n", 1, "--out", tmp_path / "y", "--device", "cpu")
    assert len(toolkit.filters) == 1  # once, however many commands a process runs


def test_a_library_that_cannot_be_loaded_stops_the_command_in_one_line():
    """Under ``ulimit -v 2000000`` importing torch failed with an ImportError ("libtorch_cpu.so: failed to map
    segment from shared object"), and under 4000000 with a MemoryError, each with the import machinery's
    traceback.  A stand-in for torch that cannot be imported shows it here."""
    result = command_in_a_process("import sys\nsys.modules['torch'] = None\n", "--version")
    assert result.returncode == 1
    assert result.stderr == "Error: img2img cannot start: import of torch halted; None in sys.modules\n"
    result = command_in_a_process("import resource, sys\nsys.modules['torch'] = None\n"
                                  "hard = resource.getrlimit(resource.RLIMIT_AS)[1]\n"
                                  "resource.setrlimit(resource.RLIMIT_AS, (64 << 30, hard))\n", "--version")
    assert result.returncode == 1
    assert result.stderr == ("Error: img2img cannot start: import of torch halted; None in sys.modules; this process "
                             "may map at most 64.0 GiB (ulimit -v), which may be too little\n")


@pytest.mark.parametrize("args", [
    ["train", "cyclegan", "--a", "", "--b", "{data}/b", "--size", "32", "--dry-run"],
    ["train", "cyclegan", "--a", "{data}/a", "--b", "{data}/b", "--size", "32", "--steps", "1", "--out", ""],
    ["train", "mnist-gan", "--resume", ""],
    ["translate", "", "{data}/a", "{tmp}/out"], ["translate", "{cyclegan}", "", "{tmp}/out"],
    ["translate", "{cyclegan}", "{data}/a", ""], ["translate", "{cyclegan}", "{data}/a", "{tmp}/out", "--to", ""],
    ["eval", "{cyclegan}", "--a", "", "--b", "{data}/b"], ["eval", "{cyclegan}", "--a", "{data}/a", "--b",
                                                              "{data}/b", "--json", ""],
    ["sample", "{mnist}", "--n", "2", "--out", ""], ["sample", "{mnist}", "--n", "2", "--out", "{tmp}/s", "--grid", ""],
    ["export", "{cyclegan}", "--out", ""], ["export", "{cyclegan}", "--out", "{tmp}/g.onnx", "--to", ""],
    ["import", "", "--out", "{tmp}/g.ckpt"], ["demo", "cyclegan", ""],
    ["bench", "mnist-gan", "--steps", "1", "--profile", ""]], ids=lambda args: " ".join(args))
def test_an_empty_path_or_name_is_refused_not_taken_for_this_folder(tmp_path, monkeypatch, finished_run,
                                                                     cyclegan_run, args):
    """`--a "$HORSES"` with the variable unset trained on the current folder, `sample --out ""` wrote its images
    into it, and `--to ""` translated the model's default direction."""
    from test_unpaired import write_unpaired  # noqa: PLC0415

    (tmp_path / "data").mkdir()
    write_unpaired(tmp_path / "data")
    here = tmp_path / "here"
    here.mkdir()
    (here / "0.png").write_bytes((tmp_path / "data" / "a" / "0.png").read_bytes())  # what the folder would give
    monkeypatch.chdir(here)
    values = {"{data}": str(tmp_path / "data"), "{tmp}": str(tmp_path), "{cyclegan}": str(cyclegan_run),
              "{mnist}": str(finished_run)}
    for key, value in values.items():
        args = [arg.replace(key, value) for arg in args]
    flag = args[args.index("") - 1] if args[args.index("") - 1].startswith("--") else None
    result, output = invoke(*args)
    assert_one_line_error(result, *(["empty"] + ([flag] if flag else [])))
    assert sorted(p.name for p in here.iterdir()) == ["0.png"]  # nothing written into the current folder


def test_a_file_name_with_control_characters_is_said_on_one_line(tmp_path, cyclegan_run):
    """A newline in a broken file's name broke the one-line error (and translation's skip line) in two, and an
    escape sequence in one was printed raw, to recolour or clear the user's terminal."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(folder / "good.png")
    (folder / "bad\nname.png").write_bytes(b"not an image")
    (folder / "red\x1b[31mX.png").write_bytes(b"not an image")
    result, output = invoke("train", "cyclegan", "--a", folder, "--b", folder, "--size", 32, "--dry-run")
    assert_one_line_error(result, "bad\\nname.png: not a readable image", "red\\x1b[31mX.png")
    assert "\x1b" not in output
    result, output = invoke("translate", cyclegan_run, folder, tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 3, output
    skipped = [line for line in output.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 2 and "bad\\nname.png: not a readable image" in skipped[0], output
    assert "red\\x1b[31mX.png" in skipped[1] and "\x1b" not in output


def _documented_command_lines():
    """Every ``img2img ...`` (or ``-m img2img.cli ...``) command line in the fenced shell blocks of the README and
    the dataset notes, and quoted in their prose; continuation lines joined, comments and ``&&`` chains split."""
    import re  # noqa: PLC0415
    import shlex  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    root = Path(__file__).resolve().parent.parent
    for document in [root / "README.md", *sorted((root / "datasets").glob("*/README.md"))]:
        text = document.read_text()
        # the shell blocks, and commands quoted in the prose (`img2img train cut --a DIR --b DIR`)
        for block in [*re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S),
                      *re.findall(r"`(img2img [^`\n]+)`", text)]:
            for line in block.replace("\\\n", " ").splitlines():
                tokens = shlex.split(line, comments=True)
                while tokens:
                    words = tokens[:tokens.index("&&")] if "&&" in tokens else tokens
                    tokens = tokens[len(words) + 1:]
                    if "img2img.cli" in words:
                        words = ["img2img", *words[words.index("img2img.cli") + 1:]]
                    if words and words[0] == "img2img":
                        yield document.name, words[1:]


def test_every_command_line_in_the_readme_names_commands_and_options_that_exist():
    """The README's examples are what a user copies: an option renamed or a choice dropped in the code, and
    left in the README, is an error on the first command a user tries (``...`` stands for what is left out)."""
    import click  # noqa: PLC0415

    lines = list(_documented_command_lines())
    assert len(lines) > 30  # the blocks were found
    for document, words in lines:
        command, rest = main, list(words)
        while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
            if rest[0] == "..." or rest[0].startswith("{") or rest[0].isupper():  # a placeholder: MODEL, NAME
                break
            assert rest[0] in command.commands, (document, words, rest[0])
            command, rest = command.commands[rest[0]], rest[1:]
        options = {name: param for param in command.params if isinstance(param, click.Option)
                   for name in (*param.opts, *param.secondary_opts)}
        options.update({"-h": None, "--help": None})
        for index, word in enumerate(rest):
            if not word.startswith("--"):
                continue
            assert word in options, (document, " ".join(words), word)
            param = options[word]
            if param is not None and isinstance(param.type, click.Choice) and not param.is_flag:
                value = rest[index + 1]
                assert value in param.type.choices, (document, " ".join(words), word, value)


def test_every_option_the_documents_quote_is_an_option_of_some_command():
    """Options quoted in the prose (AC-GAN's `--no-fake-classes`, `--pac 2..4`) and in BENCHMARKS.md, which no
    command line holds, exist too (torchrun's own are its)."""
    import re  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    import click  # noqa: PLC0415

    names = {"--help"}

    def walk(command):
        for param in command.params:
            if isinstance(param, click.Option):
                names.update([*param.opts, *param.secondary_opts])
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(main)
    torchrun = {"--nnodes", "--nproc", "--rdzv-backend", "--rdzv-endpoint", "--standalone"}
    root = Path(__file__).resolve().parent.parent
    quoted = 0
    for document in [root / "README.md", root / "BENCHMARKS.md", *sorted((root / "datasets").glob("*/README.md"))]:
        for span in re.findall(r"`([^`]+)`", document.read_text()):
            for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", span):
                quoted += 1
                assert option in names | torchrun, (document.name, option, span[:200])
    assert quoted > 100


@pytest.fixture
def gpu(monkeypatch):
    """This process as on a machine with one GPU, whose CUDA state the test sets: ``gpu(available, warning,
    failure)``; the device checks' memories are cleared before and after."""
    from img2img import loading  # noqa: PLC0415

    def setup(available=True, warning=None, failure=None):
        def is_available():
            if warning:
                warnings.warn(warning, UserWarning, stacklevel=1)
            return available

        def probe(index):
            if failure:
                raise RuntimeError(failure)

        monkeypatch.setattr(torch.cuda, "is_available", is_available)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if available else 0)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Tesla P100-PCIE-16GB")
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (6, 0))
        monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_75", "sm_80", "sm_90", "sm_120"])
        monkeypatch.setattr(loading, "_probe", probe)

    for cache in (loading._cuda_state, loading.cuda_problem):
        cache.cache_clear()
    errors._SAID.clear()
    yield setup
    monkeypatch.undo()
    for cache in (loading._cuda_state, loading.cuda_problem):
        cache.cache_clear()


NO_KERNEL = ("CUDA error: no kernel image is available for execution on the device\nCUDA kernel errors might be "
             "asynchronously reported at some other API call")
OLD_DRIVER = ("CUDA initialization: The NVIDIA driver on your system is too old (found version 12020). Please update "
              "your GPU driver by downloading and installing a new version from the URL: "
              "http://www.nvidia.com/Download/index.aspx Alternatively, go to: https://pytorch.org to install a "
              "PyTorch version that has been compiled with your version of the CUDA driver.")


def test_a_gpu_this_torch_build_has_no_kernels_for_is_named_in_one_line(gpu, tmp_path, logged, finished_run):
    """A P100 or a V100 under torch for CUDA 13 (kernels from compute capability 7.5): --device auto chose CUDA,
    torch printed a dozen lines, and the first kernel ended the command in a traceback."""
    gpu(failure=NO_KERNEL)
    result, _ = invoke("train", "mnist-gan", "--device", "cuda", "--steps", 1, "--out", tmp_path / "r")
    assert_one_line_error(result, "--device: cuda: this torch build", "has no CUDA kernels for the GPU Tesla "
                          "P100-PCIE-16GB (compute capability 6.0), only for sm_75, sm_80, sm_90, sm_120; install a "
                          "torch build for it (https://pytorch.org/get-started/locally/); --device cpu runs on the CPU")
    assert not (tmp_path / "r").exists()
    result, output = invoke("sample", finished_run, "--n", 2, "--out", tmp_path / "digits")  # --device auto
    assert result.exit_code == 0, output
    assert len(list((tmp_path / "digits").iterdir())) == 2
    said = [line for line in logged if "--device auto" in line]
    assert len(said) == 1 and said[0].startswith("--device auto: this torch build") and \
        said[0].endswith("; running on the CPU"), logged


def test_a_driver_older_than_the_builds_cuda_is_said_in_one_line_not_in_torchs_warning(gpu, tmp_path, logged):
    gpu(available=False, warning=OLD_DRIVER)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's own warning stays unsaid
        result, _ = invoke("train", "mnist-gan", "--device", "cuda:0", "--steps", 1, "--out", tmp_path / "r")
        assert_one_line_error(result, "--device: cuda:0 asked for, but a GPU is there, but CUDA cannot be used (the "
                              "NVIDIA driver on your system is too old (found version 12020)); update the GPU's "
                              "driver, or install a torch build for it")
        from img2img.loading import resolve_device  # noqa: PLC0415

        assert resolve_device("auto") == torch.device("cpu") and resolve_device("auto") == torch.device("cpu")
    said = [line for line in logged if "--device auto" in line]
    assert said == ["--device auto: a GPU is there, but CUDA cannot be used (the NVIDIA driver on your system is too "
                    "old (found version 12020)); update the GPU's driver, or install a torch build for it "
                    "(https://pytorch.org/get-started/locally/); running on the CPU"]


def test_a_working_gpu_is_probed_once_and_used(gpu, monkeypatch):
    from img2img import loading  # noqa: PLC0415

    gpu()
    probes = []
    monkeypatch.setattr(loading, "_probe", probes.append)
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert loading.resolve_device("auto") == torch.device("cuda")
    assert loading.resolve_device("cuda") == torch.device("cuda") and loading.resolve_device("auto").type == "cuda"
    assert probes == [0]


def test_a_cpu_only_torch_beside_an_nvidia_gpu_is_said(gpu, monkeypatch, logged):
    """pip's CPU wheel (or conda's cpuonly) on a machine with a GPU: --device auto trained on the CPU without a
    word, and --device cuda said only that CUDA was not available."""
    from img2img import loading  # noqa: PLC0415

    gpu(available=False)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(loading, "nvidia_gpu_present", lambda: True)
    assert loading.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match=r"^--device: cuda asked for, but this torch build \(.*\) has no CUDA, though "
                                        r"an NVIDIA GPU is here; install a CUDA build of torch"):
        loading.resolve_device("cuda")
    assert [line for line in logged if "--device auto" in line] == [
        f"--device auto: this torch build ({torch.__version__}) has no CUDA, though an NVIDIA GPU is here; install a "
        "CUDA build of torch (https://pytorch.org/get-started/locally/); running on the CPU"]
    loading._cuda_state.cache_clear()
    monkeypatch.setattr(loading, "nvidia_gpu_present", lambda: False)  # no GPU: nothing to say
    assert loading.resolve_device("auto") == torch.device("cpu") and len(logged) == 1
