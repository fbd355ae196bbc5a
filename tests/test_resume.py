"""An interrupted and resumed run ends bit for bit where an uninterrupted one does (CPU)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from img2img import checkpoint
from img2img.config import RunConfig, TrainConfig
from img2img.errors import UserError
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


def test_a_last_checkpoint_that_no_longer_reads_names_the_runs_newest_one_that_does(tmp_path, mnist_run):
    """A disk that filled or failed under a finished run can leave its newest checkpoint unreadable: --resume
    says so in one line and names the run's newest checkpoint that reads, which resumes."""
    run = tmp_path / "run"
    train(mnist_run(steps=20, save_every_steps=10), run)
    newest = run / "checkpoints" / "step-00000020.ckpt"  # last.ckpt is the same file
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.raises(UserError) as error:
        resume(run, steps=30)
    message = str(error.value)
    assert "\n" not in message and "last.ckpt is not a readable checkpoint" in message
    assert f"{run / 'checkpoints' / 'step-00000010.ckpt'} is the run's newest checkpoint that reads" in message
    assert len(message.replace(str(run), "RUN")) < 250, message  # short, however long the folder's name
    from test_cli import assert_one_line_error, invoke  # noqa: PLC0415

    result, _ = invoke("sample", run, "--n", 2, "--out", tmp_path / "digits")  # every command that reads it
    assert_one_line_error(result, "CHECKPOINT", "step-00000010.ckpt is the run's newest checkpoint that reads")
    assert resume(run / "checkpoints" / "step-00000010.ckpt", steps=30).step == 30


def test_a_run_without_its_last_checkpoint_names_its_newest_step_checkpoint(tmp_path, mnist_run):
    """A run killed between writing its first step checkpoint and linking last.ckpt to it (or whose last.ckpt
    was deleted) was said to hold no checkpoint at all."""
    run = tmp_path / "run"
    train(mnist_run(steps=20, save_every_steps=10), run)
    (run / "last.ckpt").unlink()
    with pytest.raises(UserError) as error:
        resume(run, steps=30)
    assert str(error.value) == (f"--resume: {run} has no last.ckpt; {run / 'checkpoints' / 'step-00000020.ckpt'} "
                                "is the run's newest checkpoint that reads: give it instead")
    for name in os.listdir(run / "checkpoints"):
        (run / "checkpoints" / name).unlink()
    with pytest.raises(UserError, match=re.escape(f"--resume: {run} holds no checkpoint (no last.ckpt)")):
        resume(run, steps=30)


def test_a_run_resumes_from_another_working_folder(tmp_path, monkeypatch):
    """Data folders given relative to where training started are kept absolute in the run's config: resuming
    from elsewhere said `--a: data/a does not exist`, and nothing on the command line could mend it."""
    from test_cli import invoke  # noqa: PLC0415
    from test_unpaired import write_unpaired  # noqa: PLC0415

    (tmp_path / "data").mkdir()
    write_unpaired(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    result, output = invoke("train", "cyclegan", "--a", "data/a", "--b", "data/b", "--size", 32, "--load-size", 32,
                            "--ngf", 4, "--ndf", 4, "--steps", 2, "--device", "cpu", "--out", "run")
    assert result.exit_code == 0, output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["options"]
    assert (saved["a"], saved["b"]) == (str(tmp_path / "data" / "a"), str(tmp_path / "data" / "b"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result, output = invoke("train", "cyclegan", "--resume", tmp_path / "run", "--steps", 4)
    assert result.exit_code == 0, output
    assert checkpoint.read(tmp_path / "run")["step"] == 4


def test_a_resume_says_which_data_folders_changed_since_its_checkpoint(tmp_path):
    """A run resumed on a folder that gained, lost or changed files went on unsaid, and ended with weights
    that no run that was not stopped would have."""
    from test_cli import invoke  # noqa: PLC0415
    from test_unpaired import write_unpaired  # noqa: PLC0415

    data = write_unpaired(tmp_path)
    result, output = invoke("train", "cyclegan", "--a", data / "a", "--b", data / "b", "--size", 32, "--load-size",
                            32, "--ngf", 4, "--ndf", 4, "--steps", 2, "--device", "cpu", "--out", tmp_path / "run")
    assert result.exit_code == 0, output
    result, output = invoke("train", "cyclegan", "--resume", tmp_path / "run", "--steps", 3)
    assert result.exit_code == 0 and warned(tmp_path / "run") == [], output  # as it was
    (data / "a" / "5.png").rename(data / "a" / "5-renamed.png")
    (data / "b" / "extra.png").write_bytes((data / "b" / "1.png").read_bytes())  # one more
    result, output = invoke("train", "cyclegan", "--resume", tmp_path / "run", "--steps", 4)
    assert result.exit_code == 0, output
    assert warned(tmp_path / "run") == [
        f"--a: {data / 'a'} holds images renamed, replaced or changed in size since the checkpoint of step 3; "
        "the run goes on with them as they are, so it will not end as a run that was not stopped would",
        f"--b: {data / 'b'} holds 6 images, 5 at the checkpoint of step 3; the run goes on with them as they are, "
        "so it will not end as a run that was not stopped would"]
    result, output = invoke("train", "cyclegan", "--resume", tmp_path / "run", "--steps", 5)
    assert result.exit_code == 0 and len(warned(tmp_path / "run")) == 2, output  # said once: checkpoints hold it


def test_a_run_whose_data_moved_resumes_from_its_new_place(tmp_path):
    """A dataset moved to another disk (or a run copied to another machine) left a run that could never resume:
    `--a: ... does not exist`, and `--a cannot be changed when resuming`.  --resume now takes the new places of
    the run's data folders, and the run ends bit for bit as if it had never stopped."""
    import shutil  # noqa: PLC0415

    from test_cli import assert_one_line_error, invoke  # noqa: PLC0415
    from test_unpaired import write_unpaired  # noqa: PLC0415

    from img2img.models.cyclegan import CycleGAN, CycleGANConfig  # noqa: PLC0415

    (tmp_path / "data").mkdir()
    data = write_unpaired(tmp_path / "data")
    options = CycleGANConfig(a=str(data / "a"), b=str(data / "b"), size=32, load_size=32, base_channels=4,
                             d_base_channels=4)
    run = RunConfig("cyclegan", TrainConfig(steps=4, decay_steps=2, device="cpu", num_workers=0),
                    CycleGAN.resolve(options))
    train(run, tmp_path / "whole")
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "config.json").write_text(run.to_json())
    Trainer(run, tmp_path / "parts").fit(stop_after_steps=2)
    moved = tmp_path / "elsewhere" / "data"
    moved.parent.mkdir()
    shutil.move(data, moved)
    result, _ = invoke("train", "cyclegan", "--resume", tmp_path / "parts", "--steps", 4)
    assert_one_line_error(result, f"--a: {data / 'a'}, which the run reads, does not exist, nor does --b {data / 'b'}",
                          f"--resume {tmp_path / 'parts'} --a DIR --b DIR")
    result, _ = invoke("train", "cyclegan", "--resume", tmp_path / "parts", "--steps", 4, "--a", moved / "a",
                       "--b", moved / "b", "--ngf", 8)  # what the run computes still cannot change
    assert_one_line_error(result, "--ngf cannot be changed", "the new place of a data folder that moved: --a, --b")
    result, _ = invoke("train", "cyclegan", "--resume", tmp_path / "parts", "--steps", 4, "--a", moved / "a",
                       "--b", moved / "b", "--eval-a", moved / "a")
    assert_one_line_error(result, "--eval-a: the run reads no --eval-a", "the new place of the run's --a, --b")
    result, output = invoke("train", "cyclegan", "--resume", tmp_path / "parts", "--steps", 4, "--a", moved / "a",
                            "--b", moved / "b")
    assert result.exit_code == 0, output
    log = (tmp_path / "parts" / "train.log").read_text()
    assert f"--a: the run's data is read from {moved / 'a'} now (it was {data / 'a'})" in log
    assert warned(tmp_path / "parts") == []  # the same images
    saved = json.loads((tmp_path / "parts" / "config.json").read_text())["options"]
    assert (saved["a"], saved["b"]) == (str(moved / "a"), str(moved / "b"))
    _assert_same(_weights_and_optimizers(tmp_path / "whole"), _weights_and_optimizers(tmp_path / "parts"))
    assert checkpoint.read(tmp_path / "parts")["data"]["--a"]["folder"] == str(moved / "a")
    (moved / "b" / "extra.png").write_bytes((moved / "b" / "1.png").read_bytes())
    shutil.move(moved, tmp_path / "data")  # back, and one more image: said as a change in place is
    result, output = invoke("train", "cyclegan", "--resume", tmp_path / "parts", "--steps", 5, "--a",
                            tmp_path / "data" / "a", "--b", tmp_path / "data" / "b")
    assert result.exit_code == 0, output
    assert warned(tmp_path / "parts") == [f"--b: {tmp_path / 'data' / 'b'} holds 6 images, 5 at the checkpoint of "
                                          "step 4; the run goes on with them as they are, so it will not end as a run "
                                          "that was not stopped would"]


def test_a_checkpoint_resumed_where_it_lies_never_replaces_another_programs_files(tmp_path, mnist_run):
    """A checkpoint file resumed outside its run (downloaded, copied) makes its folder a run's: it wrote its
    config.json over whatever config.json lay there (another tool's), and trimmed another tool's metrics.jsonl."""
    from test_cli import assert_one_line_error, invoke  # noqa: PLC0415

    train(mnist_run(steps=2, batch_size=4), tmp_path / "run")
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "model.ckpt").write_bytes((tmp_path / "run" / "last.ckpt").read_bytes())
    # another tool's config.json, which the resume replaced, or its log of metrics, which it cut back to the
    # records before the checkpoint's step (so did a foreign train.log or sample grid, which it added to)
    for name, text in (("config.json", '{"tool": "another"}\n'),
                       ("metrics.jsonl", '{"step": 1, "accuracy": 0.5}\n{"step": 9, "accuracy": 0.7}\n')):
        (folder / name).write_text(text)
        result, _ = invoke("train", "mnist-gan", "--resume", folder / "model.ckpt", "--steps", 4)
        assert_one_line_error(result, f"--resume: {folder / name} exists and is not from an img2img run",
                              f"go on in a new run folder: --resume {folder / 'model.ckpt'} --out NEW")
        assert (folder / name).read_text() == text
        assert sorted(p.name for p in folder.iterdir()) == sorted([name, "model.ckpt"])
        (folder / name).unlink()
    (tmp_path / "own").mkdir()  # alone in a folder, it resumes there
    (tmp_path / "own" / "last.ckpt").write_bytes((tmp_path / "run" / "last.ckpt").read_bytes())
    result, output = invoke("train", "mnist-gan", "--resume", tmp_path / "own", "--steps", 4)
    assert result.exit_code == 0 and checkpoint.read(tmp_path / "own")["step"] == 4, output


def test_resume_with_out_goes_on_in_a_new_run_folder_and_ends_as_an_uninterrupted_run(tmp_path, mnist_run):
    """--resume CKPT --out NEW continues a checkpoint kept anywhere (or branches a run) in a run folder of its
    own, leaving the checkpoint's folder as it is; --out with --resume was refused."""
    from test_cli import assert_one_line_error, invoke  # noqa: PLC0415

    run = mnist_run(steps=6, batch_size=4, save_every_steps=2, decay_steps=2)
    train(run, tmp_path / "whole")
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "config.json").write_text(run.to_json())
    Trainer(run, tmp_path / "parts").fit(stop_after_steps=2)
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "model.ckpt").write_bytes((tmp_path / "parts" / "last.ckpt").read_bytes())
    (folder / "config.json").write_text('{"tool": "another"}\n')
    result, _ = invoke("train", "mnist-gan", "--resume", folder / "model.ckpt", "--out", tmp_path / "whole")
    assert_one_line_error(result, "--out", "already holds a run")
    result, output = invoke("train", "mnist-gan", "--resume", folder / "model.ckpt", "--out", tmp_path / "new")
    assert result.exit_code == 0, output
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.ckpt"]  # as it was
    assert json.loads((tmp_path / "new" / "config.json").read_text())["model"] == "mnist-gan"
    _assert_same(_weights_and_optimizers(tmp_path / "whole"), _weights_and_optimizers(tmp_path / "new"))
    result, output = invoke("train", "mnist-gan", "--resume", tmp_path / "new", "--out", tmp_path / "branch",
                            "--steps", 8)  # a run branched: the original stays at step 6
    assert result.exit_code == 0, output
    assert checkpoint.read(tmp_path / "new")["step"] == 6 and checkpoint.read(tmp_path / "branch")["step"] == 8


def warned(run):
    """The warnings in a run's log."""
    return [line.split(" WARNING ", 1)[1] for line in (run / "train.log").read_text().splitlines()
            if " WARNING " in line]


def _metrics(run):
    """The run's metrics records without their timings."""
    return [{k: v for k, v in json.loads(line).items() if k != "steps_per_s"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_resume_from_an_older_step_checkpoint_file(tmp_path, mnist_run, caplog):
    """As after a kill: the run wrote checkpoints and metrics past the checkpoint it resumes from (and the kill
    cut its last metrics line, here with bytes that are not UTF-8, which ended the resume in a traceback); the
    resumed run's metrics are the uninterrupted run's, each step once.  Going back is said: it replaces the later
    checkpoints."""
    run = mnist_run(steps=20, save_every_steps=10)
    train(run, tmp_path / "whole")
    parts = tmp_path / "parts"
    train(run, parts)
    with open(parts / "metrics.jsonl", "ab") as handle:
        handle.write(b'{"step": 25, "g_lo\xff\xfe')
    older = parts / "checkpoints" / "step-00000010.ckpt"
    resume(older)
    assert "step-00000010.ckpt is step 10, and the run went on to step 20: training goes on from step 10 " \
           "again" in caplog.text
    _assert_same(_weights_and_optimizers(tmp_path / "whole"), _weights_and_optimizers(parts))
    assert [record["step"] for record in _metrics(parts)] == [5, 10, 15, 20]
    assert _metrics(parts) == _metrics(tmp_path / "whole")
    caplog.clear()
    resume(parts, steps=30)  # from the newest: nothing to say
    assert "went on" not in caplog.text


def test_killed_and_terminated_cli_runs_resume_bit_identically(tmp_path):
    """The real thing: SIGKILL one training process after its first checkpoint, and SIGTERM another before it
    has written one (it finishes the step under way and saves one as it stops); resume both, compare."""
    command = [sys.executable, "-m", "img2img.cli", "train", "mnist-gan", "--steps", "300", "--batch-size", "8",
               "--sample-every", "300", "--log-every", "10", "--device", "cpu", "--seed", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = subprocess.Popen(command + ["--out", str(tmp_path / "whole")], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    killed, terminated = tmp_path / "killed", tmp_path / "terminated"
    saves = {killed: "50", terminated: "300"}  # the terminated run writes no checkpoint before its last step
    runs = {run: subprocess.Popen(command + ["--save-every", saves[run], "--out", str(run)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for run in (killed, terminated)}
    deadline = time.monotonic() + 120
    while not (terminated / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    runs[terminated].send_signal(signal.SIGTERM)
    while not (killed / "last.ckpt").exists() and time.monotonic() < deadline and runs[killed].poll() is None:
        time.sleep(0.02)
    runs[killed].send_signal(signal.SIGKILL)
    stopped = {run: (process.wait(timeout=120), process.stderr.read()) for run, process in runs.items()}
    assert whole.wait(timeout=300) == 0
    code, output = stopped[terminated]
    step = checkpoint.read(terminated)["step"]
    assert code == 128 + signal.SIGTERM and "Traceback" not in output, output
    assert f"interrupted at step {step}; checkpoint {terminated / 'last.ckpt'}" in output, output
    assert 10 <= step < 300 and [p.name for p in (terminated / "checkpoints").iterdir()] == [f"step-{step:08d}.ckpt"]
    assert stopped[killed][0] == -signal.SIGKILL and checkpoint.read(killed)["step"] < 300
    resumed = {run: subprocess.Popen([sys.executable, "-m", "img2img.cli", "train", "mnist-gan", "--resume", str(run)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for run in (killed, terminated)}  # side by side
    for run, process in resumed.items():
        _, errors = process.communicate(timeout=300)
        assert process.returncode == 0, errors
        _assert_same(_weights_and_optimizers(tmp_path / "whole"), _weights_and_optimizers(run))


def test_a_run_whose_terminal_goes_away_stops_with_a_checkpoint(tmp_path):
    """The real thing: a run started in a terminal that closes (an ssh session that drops) gets SIGHUP, which
    ended it on the spot, losing every step since its last checkpoint; it now stops as on SIGTERM."""
    import pty  # noqa: PLC0415
    import select  # noqa: PLC0415

    run = tmp_path / "run"
    command = [sys.executable, "-m", "img2img.cli", "train", "mnist-gan", "--steps", "100000", "--batch-size", "8",
               "--log-every", "10", "--save-every", "100000", "--device", "cpu", "--out", str(run)]
    try:
        pid, terminal = pty.fork()
    except OSError as error:
        pytest.skip(f"no pseudo-terminal here ({error})")
    if pid == 0:  # the run, in the terminal
        try:
            os.environ["OMP_NUM_THREADS"] = "1"
            os.execv(sys.executable, command)
        finally:
            os._exit(127)
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").exists() and time.monotonic() < deadline:
        if select.select([terminal], [], [], 0.05)[0]:
            os.read(terminal, 1 << 16)  # what it says, read so that it never waits to say more
    os.close(terminal)  # the terminal goes away: the kernel sends the run SIGHUP
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGHUP
    log = (run / "train.log").read_text()
    assert "SIGHUP: stopping when this step ends, with a checkpoint" in log, log
    step = checkpoint.read(run)["step"]
    assert step >= 10 and f"interrupted at step {step}; checkpoint {run / 'last.ckpt'}" in log


def test_a_run_whose_output_reader_goes_away_stops_with_a_checkpoint(tmp_path):
    """`img2img train ... 2>&1 | less`, then q: the writes to the closed pipe failed unseen (logging swallowed
    them), and the run trained on to its end with nothing shown, the shell waiting for it; it now stops as on a
    signal, SIGPIPE, when the step ends, with a checkpoint, and ends as a pipeline's writer does (141)."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "img2img.cli", "train", "mnist-gan", "--steps", "100000", "--batch-size", "8",
               "--log-every", "10", "--save-every", "100000", "--device", "cpu", "--out", str(run)]
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        while b"training mnist-gan" not in process.stdout.readline():
            pass
        process.stdout.close()  # the reader quits
        code = process.wait(timeout=120)
    finally:
        process.kill()
    assert code == 128 + signal.SIGPIPE
    log = (run / "train.log").read_text()
    assert "SIGPIPE: stopping when this step ends, with a checkpoint" in log, log
    step = checkpoint.read(run)["step"]
    assert 1 <= step < 100000 and f"interrupted at step {step}; checkpoint {run / 'last.ckpt'}" in log


@pytest.mark.parametrize("second", [0.05, 0.3])
def test_ctrl_c_in_a_terminal_stops_a_run_with_loading_workers_cleanly(tmp_path, second):
    """A terminal's Ctrl-C reaches the whole process group, the loading workers too, and people press it twice,
    the second time while the step ends or once the run has stopped and is saying so (``second`` seconds later;
    that Ctrl-C used to give a traceback, or end the process on SIGINT with its line unsaid): the run stops with
    one line, no traceback from any process, and what it saved resumes."""
    from test_unpaired import write_unpaired  # noqa: PLC0415

    root = write_unpaired(tmp_path)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "img2img.cli", "train", "cyclegan", "--a", str(root / "a"), "--b",
               str(root / "b"), "--size", "32", "--load-size", "32", "--ngf", "8", "--ndf", "8", "--workers", "2",
               "--steps", "100000", "--decay-steps", "0", "--save-every", "20", "--log-every", "25", "--device", "cpu",
               "--out", str(run)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)
    time.sleep(second)
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    tail = output[-3000:]  # what the run said last (an assertion shows only the start of a long string)
    assert process.returncode == 128 + signal.SIGINT, tail
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, tail
    assert "warning: SIGINT: stopping when this step ends" in output, tail
    assert "warning: interrupted at step" in output or "warning: stopped at once halfway through step" in output, tail
    assert "before the command finished" not in output, tail  # what it kept is said once, by the trainer
    step = checkpoint.read(run)["step"]
    assert step >= 20
    resumed = subprocess.run([sys.executable, "-m", "img2img.cli", "train", "cyclegan", "--resume", str(run),
                              "--steps", str(step + 2)], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert checkpoint.read(run)["step"] == step + 2
