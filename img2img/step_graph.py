"""Whole training steps (and translation batches) captured as CUDA graphs and replayed (``--cuda-graph``).

A training step at batch 1 launches thousands of small kernels, and
between them the host runs the trainer's, the losses' and the optimisers'
Python; on a fast GPU the step waits on the host (BENCHMARKS.md).
``torch.compile``'s CUDA-graph mode (``--compile reduce-overhead``) records
each network call as its own graph, and the host still runs everything
between them.  Here the step's whole device work (every phase's forward
pass, loss, backward pass and optimiser update, then the weight average) is
recorded once as one CUDA graph, and each later step with the same
structure is one copy of its batch into the graph's input buffers, a
learning-rate write per optimiser, and one replay.

What a step may not do for that (each model says in
:meth:`~img2img.models.base.GANModel.graph_refusal` when it cannot): make
a choice in Python from a random draw or a tensor's value (a captured step
replays the choice made at capture), or wait for the device.  Choices that
follow the step number go into :meth:`~img2img.models.base.GANModel.graph_key`:
a step whose key differs gets its own graph.

Each key's first steps run eagerly on a side stream (optimiser state,
cuDNN's algorithm search and compiled code are made there), then its step
is captured and replayed from then on; a batch of another shape is a key
of its own.  Optimisers run with ``capturable`` on and their learning rates
in device tensors during capture, which the replays read; the schedule's
value is written into them before each replay, so checkpoints keep plain
floats.  Translation replays the generator's forward pass the same way, one
graph per batch shape.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten

from img2img import speed
from img2img.config import CUDA_GRAPH_SETTINGS
from img2img.errors import UserError

log = logging.getLogger(__name__)

WARMUP_STEPS = 3  # eager steps of a key before its capture (the docs' side-stream warm-up; compiling takes two)
MAX_GRAPHS = 8  # keys beyond this many run eagerly (each graph holds its own activations' memory)
Step = Callable[[], list[Tensor]]  # a step's work, returning its output tensors


class CaptureFault(UserError):
    """A step could not be captured as one CUDA graph: the message names the option and the way out; ``reason``
    says only what failed (for a caller that finds its own way out, such as ``--cuda-graph auto``)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_setting(setting: str) -> str:
    if setting not in CUDA_GRAPH_SETTINGS:
        raise UserError(f"--cuda-graph must be one of {', '.join(CUDA_GRAPH_SETTINGS)}, got {setting!r}")
    return setting


def resolve(setting: str | bool, device: torch.device, compile_setting: str, refusal: str | None = None,
            distributed: bool = False) -> bool:
    """Whether ``--cuda-graph SETTING`` captures the steps: ``on`` (or True) yes, where the caller has refused in
    one line what cannot run (:func:`check_capture`); ``off`` (or False) no; ``auto`` where it can run: on CUDA,
    in one process, for a model with no ``refusal``, with a ``--compile`` setting that records no graphs of its
    own."""
    if isinstance(setting, bool):
        return setting
    if check_setting(setting) == "auto":
        return (device.type == "cuda" and refusal is None and not distributed
                and compile_setting not in speed.CUDA_GRAPH_MODES)
    return setting == "on"


def ran_out_while_capturing(error: BaseException) -> bool:
    """Whether ``error`` is memory that ran out while a step was captured (:meth:`StepGraphs.run`): a step graph
    holds every tensor of its step in a pool of its own, beside what the eager steps before it left cached, so
    work that fits without a graph may not fit while one is captured; ``--cuda-graph auto`` then goes on
    without graphs."""
    return getattr(error, "while_capturing", False)


def check_capture(device: torch.device, compile_mode: str, what: str) -> None:
    """Refuse in one line a CUDA graph per ``what`` (a training step, a translated batch) where it cannot be: off
    CUDA, or with a ``--compile`` mode that records CUDA graphs of its own (per network)."""
    if compile_mode in speed.CUDA_GRAPH_MODES:
        raise UserError(f"--cuda-graph captures each {what} as one CUDA graph itself, and --compile {compile_mode} "
                        "records graphs of its own per network; with --cuda-graph use --compile default or off")
    if device.type != "cuda":
        raise UserError(f"--cuda-graph needs a CUDA device; this {what} runs on {device}: leave --cuda-graph off")


class GraphBackend:
    """CUDA's graphs; tests on the CPU swap in :class:`ReplayBackend`."""

    rate_dtype = torch.float32  # what the fused optimisers' CUDA kernels read a learning rate tensor as

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._stream: torch.cuda.Stream | None = None

    def prepare(self, optimizer: torch.optim.Optimizer) -> None:
        make_capturable(optimizer)

    def eagerly(self, step: Callable[[], Any]) -> Any:
        """Run ``step`` on a side stream, as CUDA graphs' warm-up asks (the current stream waits for it, also when
        it fails: what restores the weights after a fault must not race the failed step's kernels)."""
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        current = torch.cuda.current_stream(self.device)
        self._stream.wait_stream(current)
        try:
            with torch.cuda.stream(self._stream):
                return step()
        finally:
            current.wait_stream(self._stream)

    def capture(self, step: Step) -> tuple[Callable[[], None], list[Tensor]]:
        """Record ``step`` (not run: the caller replays it) and return its replay and its outputs."""
        graph = torch.cuda.CUDAGraph()
        current = torch.cuda.current_stream(self.device)
        pool = torch.cuda.graph_pool_handle()  # the graph's memory, named so that a failed capture can let it go
        try:
            # thread_local: the data loader's pin-memory thread may allocate while this thread captures
            with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
                outputs = step()
        except BaseException:
            # a capture that fails to end leaves its own stream the current one, the caching allocator capturing,
            # and the graph its claims on the random generator's state until it is reset
            torch.cuda.set_stream(current)
            end_failed_capture(self.device, pool)
            graph.reset()
            raise
        return graph.replay, outputs


def end_failed_capture(device: torch.device, pool: Any) -> None:
    """Tell torch's caching allocator that a capture which failed to end is over, and let its pool's memory go.

    ``CUDAGraph.capture_end`` (torch 2.11 to 2.14) stops at a failed ``cudaStreamEndCapture``, before it tells
    the allocator: while the allocator thinks a capture is underway, it checks each allocation against it,
    defers freeing memory used on several streams, and fails its own assertion when its cache is emptied
    (``torch.cuda.empty_cache``, the next capture, a retry after running out of memory)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    names = ("_cuda_endAllocateToPool", "_cuda_endAllocateCurrentStreamToPool")  # newer torch, older
    end = next((getattr(torch._C, name) for name in names if hasattr(torch._C, name)), None)
    if end is None:
        return
    try:
        end(index, pool)
    except RuntimeError:  # over already: the capture ended, and what failed came after
        return
    torch._C._cuda_releasePool(index, pool)


class ReplayBackend:
    """A stand-in for CUDA graphs on any device: "capturing" keeps the step, and a replay runs it again on the
    same input buffers.  A step that takes everything it uses from device memory gives the same results either
    way; what a CPU test can check with it is the caller's side: buffers, learning rates, keys, outputs."""

    rate_dtype = torch.float64  # the schedule's floats exactly, so that a test can ask for equal weights

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.captured = 0

    def prepare(self, optimizer: torch.optim.Optimizer) -> None:
        """Nothing: ``capturable`` is for CUDA (and its parameter check refuses the CPU)."""

    def eagerly(self, step: Callable[[], Any]) -> Any:
        return step()

    def capture(self, step: Step) -> tuple[Callable[[], None], list[Tensor]]:
        self.captured += 1
        outputs = step()
        captured = [True]  # the first replay is the captured step itself, which has run here already

        def replay() -> None:
            if captured:
                captured.clear()
                return
            for buffer, value in zip(outputs, step()):
                buffer.copy_(value)

        return replay, outputs


@dataclass
class _Graph:
    replay: Callable[[], None]
    inputs: list[Any]  # the input buffers (tensors) and the inputs' other leaves, as captured
    outputs: list[Tensor]  # the output buffers, which each replay overwrites
    spec: Any  # how the outputs fit together
    learning_rates: list[tuple[dict[str, Any], Tensor]]  # each optimiser group and the rate tensor its replay reads


def _hashable(spec: Any) -> Hashable:
    """A pytree's structure as a dictionary key: the TreeSpec itself, or (an older torch, 2.6 among them, whose
    TreeSpecs hash their context, a list for a dict's keys, and fail) its text, which says the same."""
    try:
        hash(spec)
    except TypeError:
        return repr(spec)
    return spec


def signature(leaf: Any) -> Hashable:
    """What of an input's leaf a graph is captured for: a tensor's shape, layout, type and device; another value
    itself (or, unhashable, its identity: a new one each step, which then runs eagerly)."""
    if isinstance(leaf, Tensor):
        return ("tensor", tuple(leaf.shape), leaf.stride(), leaf.dtype, leaf.device)
    try:
        hash(leaf)
    except TypeError:
        return ("object", id(leaf))
    return ("value", leaf)


class StepGraphs:
    """Runs ``body(inputs)`` (a step's device work, returning tensors, or dicts, lists or tuples of them) for each
    step: eagerly for the first ``warmup`` steps of a key, then captured once and replayed.  ``optimizers``: the
    ones the step updates (training), whose learning rates the replays follow."""

    def __init__(self, device: torch.device, optimizers: list[torch.optim.Optimizer] = (),  # type: ignore[assignment]
                 backend: GraphBackend | ReplayBackend | None = None, warmup: int = WARMUP_STEPS,
                 max_graphs: int = MAX_GRAPHS, what: str = "training step") -> None:
        self.optimizers = list(optimizers)
        self.backend = backend or GraphBackend(device)
        self.warmup, self.max_graphs, self.what = warmup, max_graphs, what
        self.graphs: dict[Hashable, _Graph] = {}
        self.seen: Counter[Hashable] = Counter()
        for optimizer in self.optimizers:
            self.backend.prepare(optimizer)

    def reset(self) -> None:
        """Forget every graph and warm-up: the steps' work has changed (compiled networks replaced by eager ones)."""
        self.graphs.clear()
        self.seen.clear()

    @staticmethod
    def _key(inputs: Any, key: Hashable) -> tuple[Hashable, list[Any], Any]:
        leaves, spec = tree_flatten(inputs)
        return (key, _hashable(spec), tuple(signature(leaf) for leaf in leaves)), leaves, spec

    def captures(self, inputs: Any, key: Hashable) -> bool:
        """Whether :meth:`run` with these arguments would capture its step (rather than run it eagerly or replay it)."""
        full_key, _, _ = self._key(inputs, key)
        return (full_key not in self.graphs and self.seen[full_key] == self.warmup
                and len(self.graphs) < self.max_graphs)

    def run(self, inputs: Any, key: Hashable, body: Callable[[Any], Any]) -> Any:
        """One step: ``body(inputs)``, or the replay of the graph captured for ``key`` and the inputs' shapes
        (``body`` must depend on nothing else that changes between steps).  The outputs are the step's own
        (copies of the graph's buffers).  A step that cannot be captured raises :class:`CaptureFault`."""
        full_key, leaves, spec = self._key(inputs, key)
        graph = self.graphs.get(full_key)
        if graph is None:
            self.seen[full_key] += 1
            if self.seen[full_key] <= self.warmup or len(self.graphs) >= self.max_graphs:
                if len(self.graphs) >= self.max_graphs and self.seen[full_key] == self.warmup + 1:
                    log.info("--cuda-graph: %d graphs already; a %s of another kind runs without one",
                             self.max_graphs, self.what)
                return self.backend.eagerly(lambda: body(inputs))
            graph = self.graphs[full_key] = self._capture(leaves, spec, key, body)
        else:
            for buffer, leaf in zip(graph.inputs, leaves):
                if isinstance(leaf, Tensor):
                    buffer.copy_(leaf, non_blocking=True)
        for group, rate in graph.learning_rates:
            rate.fill_(group["lr"])
        graph.replay()
        return tree_unflatten([output.clone() for output in graph.outputs], graph.spec)

    def _capture(self, leaves: list[Any], spec: Any, key: Hashable, body: Callable[[Any], Any]) -> _Graph:
        inputs = [leaf.clone(memory_format=torch.preserve_format) if isinstance(leaf, Tensor) else leaf
                  for leaf in leaves]
        static = tree_unflatten(inputs, spec)
        # the learning rates the replays read: device tensors in the optimisers' groups while capturing, then the
        # groups' floats again (which the schedules set, and checkpoints keep), written into them before each replay
        rates = [(group, torch.tensor(float(group["lr"]), dtype=self.backend.rate_dtype, device=self.backend.device))
                 for optimizer in self.optimizers for group in optimizer.param_groups]
        structure: list[Any] = []

        def step() -> list[Tensor]:
            floats = [group["lr"] for group, _ in rates]
            for group, rate in rates:
                group["lr"] = rate
            try:
                outputs, output_spec = tree_flatten(body(static))
            finally:
                for (group, _), value in zip(rates, floats):
                    group["lr"] = value
            structure[:] = [output_spec]
            return [output.detach() for output in outputs]

        try:
            replay, outputs = self.backend.capture(step)
        except RuntimeError as failure:
            error = failure
            while isinstance(error.__context__, RuntimeError):  # what failed first, not the failed capture's end
                error = error.__context__
            if "out of memory" in str(error):  # the trainer's and the translator's own way out
                error.while_capturing = True  # type: ignore[attr-defined]  (see ran_out_while_capturing)
                raise error from None
            reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
            reason = f"this {self.what} cannot be captured as one CUDA graph ({reason[:200]})"
            raise CaptureFault(f"--cuda-graph: {reason}; run without --cuda-graph", reason) from None
        log.debug("--cuda-graph: captured a %s (%s)", self.what, key)
        return _Graph(replay, inputs, outputs, structure[0], rates)


def make_capturable(optimizer: torch.optim.Optimizer) -> None:
    """An optimiser whose step can be captured: ``capturable`` on (its step counts stay on the device, and its
    update reads them there), with any step counts it already has moved beside their parameters."""
    # the warm-up steps run uncaptured by design: not torch's once-per-optimiser warning that capturable is wasted
    optimizer._warned_capturable_if_run_uncaptured = True  # type: ignore[attr-defined]
    for group in optimizer.param_groups:
        if "capturable" not in group:
            continue
        group["capturable"] = True
        for parameter in group["params"]:
            state = optimizer.state.get(parameter, {})
            step = state.get("step")
            if isinstance(step, Tensor) and step.device != parameter.device:  # resumed from a run without it
                state["step"] = step.to(parameter.device, torch.float32)


def portable(state: dict[str, Any]) -> dict[str, Any]:
    """An optimiser's state dict as it would be without ``--cuda-graph`` (``capturable`` off), so that the
    checkpoint resumes anywhere, with or without it."""
    for group in state.get("param_groups", []):
        if "capturable" in group:
            group["capturable"] = False
    return state
