"""Checkpoints: bit-exact round trip, atomic saves, clear errors on foreign or corrupt files."""

import contextlib
import os
import signal
import time

import pytest
import torch

from img2img import checkpoint
from img2img.errors import UserError
from img2img.interrupt import Interrupted
from img2img.train import Trainer, load_model


def _trained(tmp_path, mnist_run, steps=3):
    trainer = Trainer(mnist_run(steps=steps), tmp_path)
    for step in range(steps):
        trainer.train_step(trainer.data.batch(step))
    return trainer


def test_round_trip_is_bit_exact_and_rebuilds_the_model_alone(tmp_path, mnist_run):
    trainer = _trained(tmp_path, mnist_run)
    path = trainer.save()
    model, run, payload = load_model(tmp_path)  # a run folder means its last.ckpt
    assert run == trainer.run and payload["step"] == 3
    for name, net in trainer.model.nets.items():
        saved, loaded = net.state_dict(), model.nets[name].state_dict()
        assert saved.keys() == loaded.keys()
        assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    for name, optimizer in trainer.optimizers.items():
        original = optimizer.state_dict()["state"]
        restored = payload["optimizers"][name]["state"]
        assert all(torch.equal(original[i][key], restored[i][key]) for i in original for key in original[i])
    assert path.samefile(tmp_path / "checkpoints" / "step-00000003.ckpt")


def test_checkpoint_loads_with_weights_only(tmp_path, mnist_run):
    path = _trained(tmp_path, mnist_run).save()
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == checkpoint.FORMAT and payload["config"]["model"] == "mnist-gan"


def test_a_crash_during_save_leaves_the_previous_checkpoint_intact(tmp_path, mnist_run, monkeypatch):
    trainer = _trained(tmp_path, mnist_run, steps=1)
    trainer.save()
    before = (tmp_path / "last.ckpt").read_bytes()
    trainer.train_step(trainer.data.batch(1))

    def crash(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        try:
            raise KeyboardInterrupt("killed mid-save")
        except KeyboardInterrupt:  # what torch's zip writer does: its own error while closing, on top
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 96 vs 17") from None

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt, match="killed mid-save"):  # what stopped it, not the writer's error
        trainer.save()
    assert (tmp_path / "last.ckpt").read_bytes() == before
    assert not list(tmp_path.rglob("*.tmp-*"))
    monkeypatch.undo()
    assert checkpoint.read(tmp_path)["step"] == 1


def test_a_temp_file_left_by_a_killed_save_is_ignored_and_cleaned(tmp_path, mnist_run):
    trainer = _trained(tmp_path, mnist_run, steps=1)
    trainer.save()
    stale = tmp_path / "checkpoints" / ".step-00000002.ckpt.tmp-99999"
    stale.write_bytes(b"partial")
    assert checkpoint.read(tmp_path)["step"] == 1
    trainer.dirs.create(fresh=False)
    assert not stale.exists()


def test_old_step_checkpoints_are_pruned(tmp_path, mnist_run):
    trainer = _trained(tmp_path, mnist_run, steps=1)
    for _ in range(4):
        trainer.train_step(trainer.data.batch(trainer.step))
        trainer.save()
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*.ckpt"))
    assert names == ["step-00000004.ckpt", "step-00000005.ckpt"]
    assert checkpoint.read(tmp_path)["step"] == 5


def test_corrupt_foreign_and_missing_checkpoints_are_one_line_errors(tmp_path):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x00not a checkpoint at all")
    with pytest.raises(UserError, match=r"corrupt\.ckpt is not a readable checkpoint \(not a file that torch\.save "
                       r"wrote\)$"):
        checkpoint.read(corrupt)
    corrupt.write_text("hello")  # torch said only "(101)": its KeyError of the byte it did not expect
    with pytest.raises(UserError, match=r"corrupt\.ckpt is not a readable checkpoint \(not a file that torch\.save "
                       r"wrote\)$"):
        checkpoint.read(corrupt)
    corrupt.write_bytes(b"")
    with pytest.raises(UserError, match=r"corrupt\.ckpt is not a readable checkpoint \(the file is empty\)$"):
        checkpoint.read(corrupt)
    pickled = tmp_path / "pickled.pt"
    torch.save({"net": torch.nn.Linear(1, 1)}, pickled)  # a module: code, which weights-only loading refuses
    with pytest.raises(UserError, match=r"pickled\.pt is not a readable checkpoint \(it holds Python objects beyond "
                       r"tensors and plain data, which are never unpickled: Unsupported global: "
                       r"GLOBAL torch\.nn\.modules\.linear\.Linear was not an allowed global by default\)$") as caught:
        checkpoint.read(pickled)
    assert "weights_only" not in str(caught.value)  # torch's advice to load it with code execution is not passed on
    foreign = tmp_path / "latest_net_G.pth"
    torch.save({"model.0.weight": torch.zeros(2)}, foreign)
    with pytest.raises(UserError, match=r"latest_net_G\.pth is not an img2img checkpoint"):
        checkpoint.read(foreign)
    with pytest.raises(UserError, match=r"holds no checkpoint"):
        checkpoint.read(tmp_path)
    with pytest.raises(UserError, match=r"does not exist"):
        checkpoint.read(tmp_path / "nope.ckpt")


def test_load_model_prefers_the_weight_average(tmp_path, mnist_run):
    trainer = Trainer(mnist_run(steps=2, ema_decay=0.9), tmp_path)
    for step in range(2):
        trainer.train_step(trainer.data.batch(step))
    trainer.save()
    averaged, _, _ = load_model(tmp_path)
    raw, _, _ = load_model(tmp_path, use_ema=False)
    assert torch.equal(averaged.nets["g"].layers[0].weight, trainer.ema["g"].layers[0].weight)
    assert torch.equal(raw.nets["g"].layers[0].weight, trainer.model.nets["g"].layers[0].weight)


def test_weights_that_do_not_fit_their_model_or_are_not_finite_are_one_line_errors(tmp_path, mnist_run):
    """load_model passed on load_state_dict's message, cut at 200 characters, often mid-shape; and it loaded NaN
    weights (a run that had diverged), which translate and sample into black images without a word."""
    _trained(tmp_path, mnist_run).save()
    payload = checkpoint.read(tmp_path)
    first, second = list(payload["networks"]["g"])[:2]
    shape = "×".join(map(str, payload["networks"]["g"][first].shape))
    changes = {
        "shape": (lambda g: g.update({first: g[first][:1]}),
                  rf"g: {first} is 1×{shape.split('×', 1)[1]} in the file, {shape} in the network"),
        "missing": (lambda g: g.pop(second), rf"g: it lacks {second}\)$"),
        "extra": (lambda g: g.update({"extra.weight": torch.zeros(1)}), r"g: it has no place for extra\.weight\)$"),
        "nan": (lambda g: g[second].view(-1).__setitem__(0, float("nan")),
                rf"g: {second} is not finite \(NaN or infinite\): the run that wrote it had diverged\)$"),
    }
    for name, (change, message) in changes.items():
        broken = checkpoint.read(tmp_path)
        change(broken["networks"]["g"])
        broken.pop("ema", None)
        with pytest.raises(UserError, match=rf"^checkpoint: .*last\.ckpt does not match its mnist-gan model \({message}"):
            load_model(broken)


def _signalled_at_step(trainer, monkeypatch, step, *signals):
    """Send ``signals`` to this process during ``step``, halfway through it (after its first phase)."""
    phase, pending = trainer.train_phase, list(signals)

    def train_phase(*args, **kwargs):
        result = phase(*args, **kwargs)
        while trainer.step == step and pending:
            os.kill(os.getpid(), pending.pop(0))
        return result

    monkeypatch.setattr(trainer, "train_phase", train_phase)


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_training_when_the_step_ends_with_a_checkpoint(tmp_path, mnist_run, monkeypatch, number):
    """SIGHUP (the terminal or ssh session went away) ended a run on the spot, losing every step since its last
    checkpoint; it now stops as SIGTERM does."""
    trainer = Trainer(mnist_run(steps=50, save_every_steps=100), tmp_path)
    _signalled_at_step(trainer, monkeypatch, 7, number)
    handlers = {n: signal.getsignal(n) for n in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with pytest.raises(Interrupted) as caught:
        trainer.fit()
    assert caught.value.signal_number == number
    assert {n: signal.getsignal(n) for n in handlers} == handlers
    payload = checkpoint.read(tmp_path)
    assert payload["step"] == trainer.step == 8  # the step under way was finished, then saved
    for name, net in trainer.model.nets.items():
        assert all(torch.equal(value, payload["networks"][name][key]) for key, value in net.state_dict().items())


def test_a_signal_that_arrives_while_a_log_line_is_written_is_said_after_it(capsys):
    """The signal's handler runs wherever the main thread is: halfway through writing the run's log line it
    wrote its own line into the same busy writer, which refused it ("reentrant call inside BufferedWriter"),
    and Python's logging printed '--- Logging error ---' and a traceback (a flaky failure of a resume test)."""
    import io  # noqa: PLC0415
    import logging  # noqa: PLC0415

    from img2img.interrupt import StopRequests  # noqa: PLC0415

    class Writer(io.StringIO):  # refuses a write within a write, as a BufferedWriter does
        busy = False

        def write(self, text):
            if self.busy:
                raise RuntimeError("reentrant call inside <_io.BufferedWriter name='train.log'>")
            self.busy = True
            try:
                if "step=10" in text:
                    os.kill(os.getpid(), signal.SIGTERM)  # its handler runs before this write returns
                    sum(range(1000))
                return super().write(text)
            finally:
                self.busy = False

    stream, logger = Writer(), logging.getLogger("img2img.train")
    handler, level = logging.StreamHandler(stream), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with StopRequests() as stop:
            logger.info("step=10 g_loss=0.7")
            assert stop.signal == signal.SIGTERM
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert stream.getvalue().splitlines() == [
        "step=10 g_loss=0.7", "SIGTERM: stopping when this step ends, with a checkpoint (another SIGTERM stops at "
        "once, without one)"]
    assert "Logging error" not in capsys.readouterr().err


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_held_work_ends_before_signals_stop_it_however_many_come(number, caplog):
    from img2img.interrupt import held  # noqa: PLC0415

    finished = []
    with pytest.raises(Interrupted) as stopped, held("the work") as stop_if_asked:
        for _ in range(3):
            os.kill(os.getpid(), number)  # its handler runs before this returns
        finished.append(True)  # the work goes on to its end
        stop_if_asked()
        finished.append(False)  # not past the check
    assert finished == [True] and stopped.value.signal_number == number
    assert caplog.messages == [f"{signal.Signals(number).name}: stopping when the work ends"]  # said once
    with pytest.raises(Interrupted), held("the work"):
        os.kill(os.getpid(), number)
        finished.append(None)  # raised where the block ends, without a check of its own
    assert finished == [True, None]
    with held("the work"):  # and with no signal, nothing is raised, and the handlers are as they were after
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("stopper", ["terminate_as_interrupt", "StopRequests", "ctrl-c"])
def test_an_interruption_python_would_drop_is_delivered_again(stopper, capsys):
    """A signal's handler that raises where Python drops exceptions (here a weak reference's callback, where a
    SIGTERM to a compiling `img2img bench` landed on a GPU machine: "Exception ignored in ...", and the command
    ran on until the SIGKILL) is run again where the exception can be raised: translation and every command
    (SIGTERM, SIGHUP), a run's second signal during a step, and Python's own Ctrl-C."""
    import weakref  # noqa: PLC0415

    from img2img.interrupt import StopRequests, delivered_again, terminate_as_interrupt  # noqa: PLC0415

    class Held:
        pass

    number = signal.SIGINT if stopper == "ctrl-c" else signal.SIGTERM
    with contextlib.ExitStack() as stack:
        if stopper == "terminate_as_interrupt":
            stack.enter_context(terminate_as_interrupt())
        elif stopper == "StopRequests":
            stop = stack.enter_context(StopRequests())
            os.kill(os.getpid(), signal.SIGTERM)  # the first asks the loop to stop; a second, in a step, raises
            assert stop.signal == signal.SIGTERM
            stop.in_step = True
        else:
            stack.enter_context(delivered_again())  # each command is in terminate_as_interrupt, which enters it
        held = Held()
        reference = weakref.ref(held, lambda _: signal.raise_signal(number))  # its handler runs in the callback
        with pytest.raises(KeyboardInterrupt) as raised:
            del held
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # the signal comes again, at a point that can raise
                time.sleep(0.001)
        assert reference() is None and getattr(raised.value, "signal_number", signal.SIGINT) == number
    assert "Exception ignored" not in capsys.readouterr().err


@pytest.mark.parametrize("number", [signal.SIGHUP, signal.SIGINT])
def test_a_signal_the_process_was_started_ignoring_stays_ignored(tmp_path, mnist_run, monkeypatch, number):
    """`nohup img2img train ...` asks for the run to go on when the terminal goes away; a shell script starts
    its background jobs (`img2img train ... &`) ignoring Ctrl-C, which is the script's.  The SIGINT was ignored
    while the command started and checked its data, then stopped the run once training began."""
    trainer = Trainer(mnist_run(steps=12, save_every_steps=100), tmp_path)
    _signalled_at_step(trainer, monkeypatch, 7, number)
    previous = signal.signal(number, signal.SIG_IGN)
    try:
        trainer.fit()
        assert signal.getsignal(number) == signal.SIG_IGN
    finally:
        signal.signal(number, previous)
    assert checkpoint.read(tmp_path)["step"] == trainer.step == 12


def test_a_second_signal_while_the_stop_writes_its_checkpoint_lets_it_finish(tmp_path, mnist_run, monkeypatch):
    trainer = Trainer(mnist_run(steps=50, save_every_steps=100), tmp_path)
    _signalled_at_step(trainer, monkeypatch, 7, signal.SIGINT)
    save = checkpoint.atomic_save

    def interrupted_save(payload, path):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C again, while the checkpoint is written
        return save(payload, path)

    monkeypatch.setattr(checkpoint, "atomic_save", interrupted_save)
    with pytest.raises(Interrupted):
        trainer.fit()
    payload = checkpoint.read(tmp_path)
    assert payload["step"] == trainer.step == 8 and not list(tmp_path.rglob("*.tmp-*"))
    for name, net in trainer.model.nets.items():
        assert all(torch.equal(value, payload["networks"][name][key]) for key, value in net.state_dict().items())


def test_a_second_signal_stops_at_once_and_keeps_the_newest_checkpoint(tmp_path, mnist_run, monkeypatch, caplog):
    """And says so: the run ended with exit status 130 and no line about what it kept."""
    trainer = Trainer(mnist_run(steps=50, save_every_steps=5), tmp_path)
    _signalled_at_step(trainer, monkeypatch, 7, signal.SIGINT, signal.SIGINT)
    with pytest.raises(Interrupted):
        trainer.fit()
    assert trainer.step == 7  # halfway through step 8: nothing of it is saved
    assert checkpoint.read(tmp_path)["step"] == 5
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000005.ckpt"]
    assert f"stopped at once halfway through step 8, with no checkpoint of it (the newest checkpoint, " \
           f"{tmp_path / 'last.ckpt'}, is intact; continue with --resume {tmp_path})" in caplog.text




@pytest.mark.parametrize("log_every", [100, 4], ids=["found-at-a-save", "found-at-a-log-line"])
def test_a_run_whose_weights_diverge_stops_and_keeps_the_checkpoints_from_before(tmp_path, mnist_run, monkeypatch,
                                                                                   log_every):
    """A run whose weights went to NaN trained on for nothing and, saving them, pruned the checkpoints from before
    it diverged: --keep-checkpoints of 2 lost the run by its second save after.  It now stops, in one line, at its
    next log line or checkpoint, whichever comes first, and writes nothing of the NaN weights."""
    trainer = Trainer(mnist_run(steps=50, save_every_steps=5, log_every_steps=log_every), tmp_path)
    phase = trainer.train_phase

    def diverging(*args, **kwargs):
        result = phase(*args, **kwargs)
        if trainer.step == 11:  # halfway through step 12
            with torch.no_grad():
                next(trainer.model.nets["g"].parameters()).view(-1)[0] = float("nan")
        return result

    monkeypatch.setattr(trainer, "train_phase", diverging)
    found = 12 if log_every == 4 else 15
    with pytest.raises(UserError, match=rf"training diverged by step {found}: the weights are no longer finite "
                                        rf"\(NaN or infinite\), so nothing more is saved \(the newest checkpoint, "
                                        rf"{tmp_path / 'last.ckpt'}, is intact\)"):
        trainer.fit()
    assert trainer.step == found
    payload = checkpoint.read(tmp_path)
    assert payload["step"] == 10
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000005.ckpt", "step-00000010.ckpt"]
    assert all(value.isfinite().all() for state in payload["networks"].values() for value in state.values()
               if value.is_floating_point())
