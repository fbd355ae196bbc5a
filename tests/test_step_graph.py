"""--cuda-graph: whole training steps captured once and replayed (img2img.step_graph).

The capture itself needs CUDA (tests/test_cuda.py); here a stand-in backend
replays a "captured" step by running it again on the same input buffers,
which checks the trainer's side on the CPU: the batch reaches the buffers,
the schedule's learning rates reach the replays, every log is the step's
own, a step of another kind gets its own graph, and the options refuse
what cannot be captured in one line.
"""

from __future__ import annotations

import logging

import pytest
import torch

from img2img import speed, step_graph
from img2img.errors import UserError
from img2img.loading import run_config_from_dict
from img2img.models import MODELS
from img2img.models.discogan import DiscoGAN
from img2img.nn.pool import ImagePool
from img2img.step_graph import WARMUP_STEPS, CaptureFault, ReplayBackend, StepGraphs, make_capturable

from test_cli import assert_one_line_error, invoke
from test_models import tiny_trainer
from test_pix2pix import inverse_pairs  # noqa: F401 - a fixture
from test_speed import compiler_failing_at


def replaying(trainer, backend: ReplayBackend | None = None, auto: bool = False) -> ReplayBackend:
    """``trainer`` with its steps run through StepGraphs on the stand-in backend (as --cuda-graph on CUDA, or as
    --cuda-graph auto there with ``auto``)."""
    backend = backend or ReplayBackend(trainer.device)
    trainer.graphs = StepGraphs(trainer.device, list(trainer.optimizers.values()), backend=backend)
    trainer.graph_fallback = auto
    return backend


class FailingCapture(ReplayBackend):
    """A capture that fails as CUDA's does when a step waits for the device, after the step has changed all it
    changes (weights, optimiser state, random streams), as a capture's Python side does: the step's error, then
    the capture's end failing in its turn."""

    def capture(self, step):
        self.captured += 1
        step()
        try:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nCUDA kernel errors ...")
        except RuntimeError:
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture")  # noqa: B904


def train_side_by_side(trainers, batch, steps):
    """Each trainer takes ``steps`` steps on the same new batch each step (of the same shape: a graph's buffers
    must take it), from the same random streams; each one's logs, step by step."""
    generator = torch.Generator().manual_seed(3)
    history = [[] for _ in trainers]
    for step in range(steps):
        fresh = {key: torch.rand(value.shape, generator=generator) * 2 - 1 for key, value in batch.items()}
        for trainer, logs in zip(trainers, history):
            torch.manual_seed(step)
            logs.append(trainer.train_step(trainer.model.move_batch(fresh, trainer.device)))
    return history


def assert_same_run(a, b, history_a, history_b):
    for want, have in zip(history_a, history_b):
        assert want.keys() == have.keys() and all(torch.equal(want[key], have[key]) for key in want)
    for net in a.model.nets:
        for x, y in zip(a.model.nets[net].state_dict().values(), b.model.nets[net].state_dict().values()):
            assert torch.equal(x, y), net
    for name, optimizer in a.optimizers.items():
        for x, y in zip(optimizer.state.values(), b.optimizers[name].state.values()):
            assert all(torch.equal(torch.as_tensor(x[k]), torch.as_tensor(y[k])) for k in x), name


@pytest.mark.parametrize("name, steps, options, graphs", [
    ("pix2pix", 8, {}, 1),
    ("cyclegan", 8, {}, 1),
    # the discriminators step one step in three, and the reconstruction rate changes at step 6: three kinds of step
    # reach their capture within 24 steps (the generators' before and after 6, the discriminators' after)
    ("discogan", 24, {"curriculum_steps": 6, "starting_rate": 0.01, "default_rate": 0.5}, 3),
    ("fastcut", 8, {}, 1),  # patch locations and flips drawn on the device
])
def test_replayed_steps_train_as_eager_steps_do(name, steps, options, graphs, tmp_path):
    """Two trainers from the same weights on different batches each step, the learning rate falling to 0 over the
    run: the replaying one ends with the same weights, bit for bit, and logged the same losses step by step."""
    settings = dict(steps=steps, decay_steps=steps, options={"dropout": False, **options})
    eager, batch = tiny_trainer(name, tmp_path / "eager", **settings)
    replayed, _ = tiny_trainer(name, tmp_path / "graphed", **settings)
    backend = replaying(replayed)
    history = train_side_by_side([eager, replayed], batch, steps)
    assert backend.captured == graphs and len(replayed.graphs.graphs) == graphs
    assert_same_run(eager, replayed, *history)
    # each step's logs are its own, not a view of the one buffer that every replay overwrites
    first, last = history[1][-2], history[1][-1]
    assert any(not torch.equal(first[key], last[key]) for key in last)


def test_a_compile_fault_under_compile_auto_captures_the_steps_again_from_eager_networks(tmp_path, monkeypatch):
    """With --cuda-graph, --compile auto's kernels run inside the captured step.  Should torch's compiler fail in
    a step's first (eager) run, after the step's first phase has stepped, the step is retaken from what it
    started with, eagerly, and the steps are warmed up and captured afresh from eager networks: the run trains
    bit for bit as a replaying run without compiling does."""
    settings = dict(steps=8, decay_steps=8, options={"dropout": False})
    reference, batch = tiny_trainer("pix2pix", tmp_path / "reference", compile="off", **settings)
    replaying(reference)
    compiled = compiler_failing_at(3, monkeypatch)  # pix2pix compiles G and D in its G phase, then D in its D phase
    trainer, _ = tiny_trainer("pix2pix", tmp_path / "auto", **settings)
    backend = replaying(trainer)
    assert trainer.compile_mode == "default"
    history = train_side_by_side([reference, trainer], batch, 8)
    torch.compiler.reset()
    assert len(compiled) == 3 and trainer.compile_mode == "off"
    assert backend.captured == 1 and len(trainer.graphs.graphs) == 1
    assert_same_run(reference, trainer, *history)


@pytest.mark.parametrize("name", ["pix2pix", "fastcut"])  # FastCUT draws its patches and flips each step
def test_a_capture_that_fails_under_auto_costs_nothing(name, tmp_path, caplog):
    """--cuda-graph auto (which the user need not have asked for) must not stop a run whose step cannot be
    captured: the failed capture's step is taken again, uncaptured, from what it started with (random streams
    included), and the run goes on without graphs, bit for bit as a run without --cuda-graph, saying so in one
    line.  --cuda-graph on stops there, in one line."""
    settings = dict(steps=8, decay_steps=8, compile="off", options={"dropout": False})
    eager, batch = tiny_trainer(name, tmp_path / "eager", **settings)
    auto, _ = tiny_trainer(name, tmp_path / "auto", **settings)
    backend = replaying(auto, FailingCapture(auto.device), auto=True)
    with caplog.at_level(logging.WARNING, logger="img2img"):
        history = train_side_by_side([eager, auto], batch, 8)
    assert backend.captured == 1 and auto.graphs is None and not auto.step_graphs
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert warnings == ["--cuda-graph auto: this training step cannot be captured as one CUDA graph (CUDA error: "
                        "operation not permitted when stream is capturing); training goes on without it (as with "
                        "--cuda-graph off)"]
    assert_same_run(eager, auto, *history)
    on, _ = tiny_trainer(name, tmp_path / "on", **settings)
    replaying(on, FailingCapture(on.device))
    with pytest.raises(CaptureFault) as caught:
        train_side_by_side([on], batch, WARMUP_STEPS + 1)
    assert str(caught.value) == ("--cuda-graph: this training step cannot be captured as one CUDA graph (CUDA error: "
                                 "operation not permitted when stream is capturing); run without --cuda-graph")


class OutOfMemoryCapture(ReplayBackend):
    """A capture that runs out of memory halfway through its step (after it has changed what it changes), as a
    step graph's own pool can where eager steps fit: the allocator's error, then the capture's end failing."""

    def capture(self, step):
        self.captured += 1
        step()
        try:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        except RuntimeError:
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture")  # noqa: B904


def test_memory_that_runs_out_while_capturing_under_auto_costs_nothing(tmp_path, caplog):
    """--cuda-graph auto, the CUDA default: a step graph holds every tensor of its step in a pool of its own, so a
    run that fits without one can run out of memory while its step is captured, which stopped the run ("out of
    CUDA memory at step 3").  The step is taken again uncaptured, and the run goes on bit for bit as one without
    --cuda-graph, saying so in one line; --cuda-graph on still stops there, as running out of memory does."""
    settings = dict(steps=8, decay_steps=8, compile="off", options={"dropout": False})
    eager, batch = tiny_trainer("pix2pix", tmp_path / "eager", **settings)
    auto, _ = tiny_trainer("pix2pix", tmp_path / "auto", **settings)
    backend = replaying(auto, OutOfMemoryCapture(auto.device), auto=True)
    with caplog.at_level(logging.WARNING, logger="img2img"):
        history = train_side_by_side([eager, auto], batch, 8)
    assert backend.captured == 1 and auto.graphs is None and not auto.step_graphs
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == [
        "--cuda-graph auto: memory ran out while the step was captured as one CUDA graph; training goes on without "
        "it (as with --cuda-graph off)"]
    assert_same_run(eager, auto, *history)
    on, _ = tiny_trainer("pix2pix", tmp_path / "on", **settings)
    replaying(on, OutOfMemoryCapture(on.device))
    with pytest.raises(torch.OutOfMemoryError):
        train_side_by_side([on], batch, WARMUP_STEPS + 1)


def test_a_failed_capture_under_auto_compiles_as_auto_would_without_graphs(tmp_path, monkeypatch):
    """With --cuda-graph, --compile auto compiles without graphs of its own (default); once a capture has failed
    and the steps run uncaptured, it stands for what it stands for without them (on CUDA reduce-overhead, here
    off): the networks are compiled again in that mode, from the step that failed, which still ends bit for bit
    as a run without either."""
    compiled = compiler_failing_at(0, monkeypatch)  # passes every network through
    monkeypatch.setattr(speed, "resolve_compile", lambda mode, device, step_graphs=False, **settings:
                        ("default" if step_graphs else "off") if mode == "auto" else mode)
    settings = dict(steps=8, decay_steps=8, options={"dropout": False})
    eager, batch = tiny_trainer("pix2pix", tmp_path / "eager", compile="off", **settings)
    auto, _ = tiny_trainer("pix2pix", tmp_path / "auto", cuda_graph="auto", **settings)
    assert not auto.step_graphs  # auto is off on the CPU; the stand-in turns it on, as on CUDA
    auto.compile_mode = "default"
    auto.compile_fallback = True
    auto.phase_nets = auto._phase_nets()
    replaying(auto, FailingCapture(auto.device), auto=True)
    history = train_side_by_side([eager, auto], batch, 8)
    torch.compiler.reset()
    assert compiled and auto.compile_mode == "off" and not auto.compile_fallback and auto.graphs is None
    assert_same_run(eager, auto, *history)


def test_running_out_of_memory_while_capturing_is_said_as_such():
    """Memory that runs out in a capture is the trainer's and translator's to report (smaller images or batches), not
    a step that cannot be captured, also when the capture's end fails after it."""

    class OutOfMemory(ReplayBackend):
        def capture(self, step):
            try:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            except RuntimeError:
                raise RuntimeError("CUDA error: operation failed due to a previous error during capture")  # noqa: B904

    graphs = StepGraphs(torch.device("cpu"), backend=OutOfMemory(torch.device("cpu")), warmup=1)
    graphs.run(torch.ones(2), "k", lambda x: x * 2)
    with pytest.raises(torch.OutOfMemoryError, match="^CUDA out of memory"):
        graphs.run(torch.ones(2), "k", lambda x: x * 2)


def test_what_cuda_graph_auto_stands_for(tmp_path):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert step_graph.resolve("auto", cuda, "auto") and step_graph.resolve("auto", cuda, "default")
    assert not step_graph.resolve("auto", cpu, "auto")
    assert not step_graph.resolve("auto", cuda, "reduce-overhead")  # graphs of its own, per network
    assert not step_graph.resolve("auto", cuda, "auto", refusal="decides in Python")
    assert not step_graph.resolve("auto", cuda, "auto", distributed=True)
    assert step_graph.resolve("on", cpu, "auto") and not step_graph.resolve("off", cuda, "auto")
    with pytest.raises(UserError, match="--cuda-graph must be one of auto, on, off, got 'yes'"):
        step_graph.resolve("yes", cuda, "auto")
    trainer, _ = tiny_trainer("pix2pix", tmp_path, cuda_graph="auto")  # on the CPU: off, and no refusal
    assert not trainer.step_graphs and trainer.graphs is None and not trainer.graph_fallback
    # a run written when --cuda-graph was a switch
    written = trainer.run.to_dict()
    run = run_config_from_dict({**written, "train": {**written["train"], "cuda_graph": True}})
    assert run.train.cuda_graph == "on"


def test_cuda_graph_takes_auto_on_and_off_and_alone_means_on(inverse_pairs, tmp_path):
    data = ["--a", inverse_pairs / "a", "--b", inverse_pairs / "b", "--size", 32, "--steps", 2, "--batch-size", 2,
            "--ngf", 4, "--ndf", 4, "--workers", 0, "--device", "cpu"]
    result, _ = invoke("train", "pix2pix", *data, "--out", tmp_path / "auto", "--cuda-graph", "auto")
    assert result.exit_code == 0, result.output
    assert '"cuda_graph": "auto"' in result.output and (tmp_path / "auto" / "last.ckpt").is_file()
    result, _ = invoke("train", "pix2pix", *data, "--out", tmp_path / "off", "--cuda-graph", "off")
    assert result.exit_code == 0, result.output
    result, _ = invoke("train", "pix2pix", "--cuda-graph", *data, "--out", tmp_path / "alone")
    assert_one_line_error(result, "--cuda-graph needs a CUDA device")
    result, _ = invoke("train", "pix2pix", *data, "--out", tmp_path / "yes", "--cuda-graph", "yes")
    assert result.exit_code == 2 and "'yes' is not one of 'auto', 'on', 'off'" in result.output
    result, _ = invoke("bench", "pix2pix", "--size", 32, "--device", "cpu", "--cuda-graph", "auto", "--json")
    assert result.exit_code == 0, result.output
    assert '"cuda_graph": "off"' in result.output  # what auto stood for


def test_a_batch_of_another_shape_runs_without_the_graph(tmp_path):
    trainer, batch = tiny_trainer("pix2pix", tmp_path, steps=20)
    backend = replaying(trainer)
    batch = trainer.model.move_batch(batch, trainer.device)
    for _ in range(WARMUP_STEPS + 2):
        trainer.train_step(batch)
    assert backend.captured == 1
    half = {key: value[:1] for key, value in batch.items()}
    logs = trainer.train_step(half)
    assert backend.captured == 1 and len(trainer.graphs.graphs) == 1  # counted towards a key of its own
    assert all(torch.isfinite(value).all() for value in logs.values())


def test_outputs_of_any_structure_come_back_as_the_steps_own():
    backend = ReplayBackend(torch.device("cpu"))
    graphs = StepGraphs(torch.device("cpu"), backend=backend, warmup=1)
    calls = []

    def body(x):
        calls.append(1)
        return {"double": x * 2, "parts": (x.sum(), [x[:1] + 1])}

    outs = [graphs.run(torch.full((2, 3), float(k)), "k", body) for k in range(4)]
    assert backend.captured == 1 and len(calls) == 4  # one eager, one captured, two replays
    for k, out in enumerate(outs):
        assert torch.equal(out["double"], torch.full((2, 3), 2.0 * k))
        assert out["parts"][0].item() == 6.0 * k and torch.equal(out["parts"][1][0], torch.full((1, 3), k + 1.0))
    assert outs[2]["double"].data_ptr() != outs[3]["double"].data_ptr()  # copies, not the one buffer


def test_inputs_whose_structure_does_not_hash_are_replayed_too(monkeypatch):
    """An older torch's TreeSpec (2.6's, of a dict: its keys are a list) raises TypeError when hashed, which every
    step under a graph did (the suite on torch 2.6: 16 tests)."""
    flatten = step_graph.tree_flatten

    class Unhashable:
        __hash__ = None

        def __init__(self, spec):
            self.spec = spec

        def __repr__(self):
            return repr(self.spec)

    def flatten_unhashable(tree):
        leaves, spec = flatten(tree)
        return leaves, Unhashable(spec)

    monkeypatch.setattr(step_graph, "tree_flatten", flatten_unhashable)
    unflatten = step_graph.tree_unflatten
    monkeypatch.setattr(step_graph, "tree_unflatten", lambda leaves, spec: unflatten(
        leaves, spec.spec if isinstance(spec, Unhashable) else spec))
    backend = ReplayBackend(torch.device("cpu"))
    graphs = StepGraphs(torch.device("cpu"), backend=backend, warmup=1)
    outs = [graphs.run({"a": torch.full((2,), float(k)), "b": torch.ones(1)}, "k", lambda x: {"s": x["a"] + x["b"]})
            for k in range(3)]
    assert backend.captured == 1 and [out["s"].tolist() for out in outs] == [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]


def test_checkpoints_of_a_graphed_run_resume_without_it(tmp_path):
    """Capturable optimisers (their step counts beside the parameters) are saved as ordinary ones."""
    trainer, batch = tiny_trainer("pix2pix", tmp_path, steps=4)
    trainer.train_step(trainer.model.move_batch(batch, trainer.device))
    for optimizer in trainer.optimizers.values():
        make_capturable(optimizer)
        assert all(group["capturable"] for group in optimizer.param_groups)
    for state in trainer.state()["optimizers"].values():
        assert not any(group["capturable"] for group in state["param_groups"])
        assert all(isinstance(group["lr"], float) for group in state["param_groups"])


def test_the_image_pool_decides_on_its_device():
    """No choice of the pool is made in Python (so that a captured step can replay it): on the meta device, where
    no value exists, a query still runs, and the history keeps what the values say."""
    pool = ImagePool(size=4)
    with torch.device("meta"):
        out = pool.query(torch.zeros(3, 2, 5, 5))
        out = pool.query(torch.zeros(3, 2, 5, 5))
    assert out.shape == (3, 2, 5, 5) and pool.images.shape == (4, 2, 5, 5)
    torch.manual_seed(0)
    pool = ImagePool(size=4)
    pool.query(torch.arange(3.0).view(3, 1, 1, 1))
    assert int(pool.count) == 3 and pool.state().flatten().tolist() == [0.0, 1.0, 2.0]
    pool.query(torch.full((2, 1, 1, 1), 9.0))  # one fills the last slot; the other swaps in, or not
    assert int(pool.count) == 4 and pool.state().flatten().tolist()[:3] in ([0.0, 1.0, 2.0], [9.0, 1.0, 2.0],
                                                                          [0.0, 9.0, 2.0], [0.0, 1.0, 9.0])


def test_the_step_key_follows_what_the_host_decides_by_step(tmp_path):
    trainer, _ = tiny_trainer("discogan", tmp_path, options={"curriculum_steps": 6, "starting_rate": 0.01,
                                                             "default_rate": 0.5})
    model: DiscoGAN = trainer.model
    assert model.graph_key(0) != model.graph_key(1)  # the discriminators' step and the generators'
    assert model.graph_key(1) == model.graph_key(2) != model.graph_key(7)  # the rate changes at 6
    pix2pix, _ = tiny_trainer("pix2pix", tmp_path / "p")
    assert pix2pix.model.graph_key(0) == pix2pix.model.graph_key(1) == ("g", "d") or \
        pix2pix.model.graph_key(0) == tuple(phase.name for phase in pix2pix.model.phases)


def test_auto_compiles_without_graphs_of_its_own_under_a_step_graph():
    cuda = torch.device("cuda")
    assert speed.resolve_compile("auto", cuda, step_graphs=True) == "default"
    assert speed.resolve_compile("auto", cuda) == "reduce-overhead"
    assert speed.resolve_compile("auto", torch.device("cpu"), step_graphs=True) == "off"


@pytest.mark.parametrize("args, message", [
    (["pix2pix", "--device", "cpu"], "--cuda-graph needs a CUDA device"),
    (["pix2pix", "--compile", "reduce-overhead"], "--compile reduce-overhead records graphs of its own"),
    (["cyclegan"], "--cuda-graph: cyclegan decides in Python"),  # a model that says so (none here does)
])
def test_cuda_graph_is_refused_in_one_line_where_it_cannot_run(args, message, tmp_path, monkeypatch):
    monkeypatch.setattr(MODELS["cyclegan"], "graph_refusal", classmethod(lambda cls, config: "cyclegan decides in Python"))
    root = tmp_path / "data"
    for side in "ab":
        (root / side).mkdir(parents=True)
    from PIL import Image  # noqa: PLC0415

    for index in range(2):
        for side in "ab":
            Image.new("RGB", (32, 32), (index * 90, 40, 200)).save(root / side / f"{index}.png")
    model, *rest = args
    folders = ["--a", str(root / "a"), "--b", str(root / "b")]
    result, _ = invoke("train", model, *folders, "--size", 32, "--load-size", 32, "--steps", 2, "--workers", 0,
                       "--out", tmp_path / "run", "--cuda-graph", *rest)
    assert_one_line_error(result, message)
    assert not (tmp_path / "run").exists()  # refused before the run's folder is made


def test_bench_and_translate_say_a_cuda_graph_needs_cuda(tmp_path):
    result, _ = invoke("bench", "translate", "--size", 32, "--steps", 2, "--cuda-graph", "--device", "cpu")
    assert_one_line_error(result, "--cuda-graph needs a CUDA device")
    result, _ = invoke("bench", "pix2pix", "--size", 32, "--cuda-graph", "--device", "cpu")
    assert_one_line_error(result, "--cuda-graph needs a CUDA device")
    from img2img.translate import GeneratorInfo, Translator  # noqa: PLC0415

    with pytest.raises(UserError, match="--compile reduce-overhead records graphs of its own"):
        Translator(torch.nn.Conv2d(3, 3, 1), GeneratorInfo(3, 3, 1), "cuda", compile="reduce-overhead", cuda_graph=True)


def test_translation_replays_each_batch_shapes_forward_pass(tmp_path):
    """Translation's graphs (on the stand-in): one per batch shape after its eager and autotuned passes, the
    partial last batch its own shape; the images come out as eager translation's, file for file."""
    from img2img.nn import init_weights  # noqa: PLC0415
    from img2img.nn.resnet import ResnetGenerator  # noqa: PLC0415
    from img2img.translate import Translator, generator_info  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    source = tmp_path / "in"
    source.mkdir()
    generator = torch.Generator().manual_seed(0)
    for index in range(11):
        side = 32 if index < 9 else 48
        levels = (torch.rand(side, side, 3, generator=generator) * 255).byte().numpy()
        Image.fromarray(levels).save(source / f"{index:02d}.png")
    torch.manual_seed(0)
    net = init_weights(ResnetGenerator(3, 3, 8, 1, "instance"))
    info = generator_info(net, 3, 3)
    outputs = {}
    for kind in ("eager", "graphed"):
        translator = Translator(net, info, "cpu", batch_size=2)
        if kind == "graphed":
            backend = ReplayBackend(translator.device)
            translator._graphs = StepGraphs(translator.device, backend=backend, warmup=2, max_graphs=4, what="batch")
        summary = translator.translate_folder(source, tmp_path / kind, progress=False, workers=0)
        assert summary.ok and len(summary.translated) == 11
        outputs[kind] = {p.name: p.read_bytes() for p in (tmp_path / kind).iterdir()}
    # 32²: four full batches (eager, eager, captured, replayed) and a partial one; 48²: one full batch
    assert backend.captured == 1 and len(translator._graphs.seen) == 3
    assert outputs["graphed"] == outputs["eager"]


@pytest.mark.parametrize("failing", ["cannot be captured", "out of memory"])
def test_translation_under_auto_goes_on_uncaptured_when_a_capture_fails(failing, caplog):
    """translate --cuda-graph auto: a batch shape whose forward pass cannot be captured, or whose capture runs out
    of memory (a graph's own pool, beside the eager passes'), is translated uncaptured, as every batch after it,
    with one warning line; translate --cuda-graph on stops there in one line (running out of memory, it tiles)."""
    from img2img.nn import init_weights  # noqa: PLC0415
    from img2img.nn.resnet import ResnetGenerator  # noqa: PLC0415
    from img2img.translate import Translator, generator_info  # noqa: PLC0415

    torch.manual_seed(0)
    net = init_weights(ResnetGenerator(3, 3, 8, 1, "instance"))
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    want = Translator(net, generator_info(net, 3, 3), "cpu").translate_tensor(images)
    backend_class, error, said = {
        "cannot be captured": (FailingCapture, CaptureFault, "this translated batch cannot be captured as one CUDA "
                                                             "graph (CUDA error: "),
        "out of memory": (OutOfMemoryCapture, torch.OutOfMemoryError, "memory ran out while a batch's forward pass "
                                                                      "was captured as a CUDA graph")}[failing]
    for setting in ("auto", "on"):
        graphs = "auto" if setting == "auto" else "off"  # on is refused on the CPU; the stand-in turns it on
        translator = Translator(net, generator_info(net, 3, 3), "cpu", cuda_graph=graphs)
        assert not translator.cuda_graph  # auto on the CPU: off
        translator._graph_fallback = setting == "auto"
        backend = backend_class(translator.device)
        translator._graphs = StepGraphs(translator.device, backend=backend, warmup=2, max_graphs=4,
                                        what="translated batch")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="img2img"):
            if setting == "on":
                with pytest.raises(error):
                    for _ in range(3):
                        translator.translate_tensor(images)
                continue
            outputs = [translator.translate_tensor(images) for _ in range(5)]
        assert backend.captured == 1 and translator._graphs is None and not translator.cuda_graph
        assert all(torch.equal(output, want) for output in outputs)
        warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
        assert len(warnings) == 1 and warnings[0].startswith(f"--cuda-graph auto: {said}")
        assert warnings[0].endswith("; translation goes on without it (as with --cuda-graph off)")


def test_translation_that_runs_out_of_memory_lets_its_graphs_go_before_it_tiles():
    """The batch shapes' CUDA graphs hold memory pools that no other allocation can use: on an H200 they held
    390 MiB, and translation's retries in smaller tiles, down to 32 pixels, all ran out of memory beside them.
    Running out, translation now forgets its graphs before it retries (and captures the tiles' own later)."""
    from img2img.nn import init_weights  # noqa: PLC0415
    from img2img.nn.resnet import ResnetGenerator  # noqa: PLC0415
    from img2img.translate import Translator, generator_info  # noqa: PLC0415

    torch.manual_seed(0)
    net = init_weights(ResnetGenerator(3, 3, 8, 1, "instance"))
    info = generator_info(net, 3, 3)
    small, big = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 128, 128) * 2 - 1
    want = Translator(net, info, "cpu", tile=64).translate_tensor(big)
    translator = Translator(net, info, "cpu", batch_size=4)
    backend = ReplayBackend(translator.device)
    translator._graphs = StepGraphs(translator.device, backend=backend, warmup=2, max_graphs=4, what="batch")
    for _ in range(3):
        translator.translate_tensor(small)
    assert backend.captured == 1 and len(translator._graphs.graphs) == 1
    forward, held = translator._forward, []

    def short_of_memory(batch):
        held.append((batch.shape[-1], len(translator._graphs.graphs)))
        if batch.shape[-1] > 64:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(batch)

    translator._forward = short_of_memory
    assert torch.equal(translator.translate_tensor(big), want)
    assert held[0] == (128, 1) and held[1] == (64, 0)  # the 32² batch's graph was let go before the first tile


def test_every_model_says_whether_its_step_can_be_one_graph():
    for name, model in MODELS.items():
        options, _ = model.synthetic(64 if name in ("stargan",) else 32, 1, torch.Generator().manual_seed(0))
        refusal = model.graph_refusal(options)
        assert refusal is None, (name, refusal)  # every model's step decides on the device alone


def test_a_replaying_run_samples_saves_and_resumes_exactly(tmp_path):
    """Samples and checkpoints between replayed steps, and a resumed run (whose steps run eagerly again before
    its own capture): the weights end bit for bit as an uninterrupted replaying run's."""
    from img2img.loading import open_checkpoint  # noqa: PLC0415
    from img2img.train import Trainer  # noqa: PLC0415

    from test_unpaired import cyclegan_trainer, write_unpaired  # noqa: PLC0415

    root = write_unpaired(tmp_path)
    loop = {"save_every_steps": 5, "sample_every_steps": 3}
    whole = cyclegan_trainer(root, tmp_path / "whole", steps=10, train=loop)
    replaying(whole)
    whole.fit()
    first = cyclegan_trainer(root, tmp_path / "parts", steps=10, train=loop)
    replaying(first)
    first.fit(stop_after_steps=5)
    payload, run = open_checkpoint(tmp_path / "parts" / "run")
    resumed = Trainer(run, tmp_path / "parts" / "run", resume=payload)
    backend = replaying(resumed)
    result = resumed.fit()
    assert result.step == 10 and backend.captured == 1
    for name, net in whole.model.nets.items():
        for a, b in zip(net.parameters(), resumed.model.nets[name].parameters()):
            assert torch.equal(a, b), name
