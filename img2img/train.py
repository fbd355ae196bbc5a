"""The one training loop, shared by every model.

The trainer knows nothing of any model: it asks the model for its networks,
the phases of a step and each phase's loss, and does the rest: device
placement, seeding, optimisers and learning-rate schedules, bf16 autocast on
CUDA, the progress bar and log, sample grids, and atomic checkpoints that
resume bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import os
import random
import re
import time
import warnings
from collections import defaultdict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves, tree_map
from tqdm import tqdm

from img2img import checkpoint, speed
from img2img.board import Board
from img2img import distributed as dist_tools
from img2img.config import RESUMABLE_SETTINGS, RunConfig, TrainConfig, cli_option, option_flag, path_fields
from img2img.data import guard
from img2img.data.batches import mix_seed
from img2img.data.images import encode_image, folder_record
from img2img.data.transfer import received
from img2img.distributed import Distributed
from img2img.errors import UserError, exhausted, out_of_memory
from img2img.interrupt import Interrupted, StopRequests, said
# load_model, resolve_device and run_config_from_dict live in img2img.loading; importable from here as before
from img2img.loading import (build_model, load_model, open_checkpoint, resolve_device,  # noqa: F401
                             run_config_from_dict)
from img2img.models import GANModel, Phase, get_model_class
from img2img.resources import memory_short
from img2img.run import RunDir, RunLog, held
from img2img.step_graph import (CaptureFault, StepGraphs, check_capture, portable, ran_out_while_capturing,
                                 resolve as resolve_graphs, signature)

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def linear_decay(steps: int, decay_steps: int):
    """Learning-rate factor: 1 for the first ``steps - decay_steps`` steps, then linearly down to 0 at ``steps``."""
    constant = steps - decay_steps

    def factor(step: int) -> float:
        if decay_steps == 0 or step < constant:
            return 1.0
        return max(0.0, (steps - step) / decay_steps)

    return factor


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    checkpoint: Path
    sample_grid: Path | None
    step: int
    seconds: float


class Trainer:
    """Trains any :class:`GANModel` for ``run.train.steps`` steps into a run folder."""

    def __init__(self, run: RunConfig, run_dir: str | Path, device: torch.device | None = None,
                 resume: dict[str, Any] | None = None, job: Distributed | None = None,
                 data: Any = None) -> None:
        """``data``: a batch source to train on instead of the model's own (benchmarks use synthetic data)."""
        run.train.validate()
        refusal = check_compilable(run)
        self.run, self.config = run, run.train
        self.job = job or dist_tools.from_environment()
        self.dirs = RunDir(run_dir)
        if self.job.is_main:
            self.dirs.create(fresh=False)
        self.device = dist_tools.setup(self.job, device or resolve_device(self.config.device))
        self.step = 0
        self.saved_step: int | None = None  # the step of this trainer's newest checkpoint
        self.finite_step: int | None = None  # the step whose weights were last found finite
        self.best: dict[str, Any] | None = None  # {"metric", "value", "step"} of the best evaluation so far
        seed_everything(self.config.seed)
        speed.configure_device(self.device, self.config.cudnn_benchmark)
        try:
            self.model = build_model(run).to(self.device, memory_format=speed.memory_format(self.config.channels_last))
        except (RuntimeError, MemoryError) as error:
            if not out_of_memory(error):
                raise
            widths = " ".join(f"--{flag} {getattr(run.options, name)}" for flag, name in
                              (("ngf", "base_channels"), ("ndf", "d_base_channels")) if hasattr(run.options, name))
            raise UserError(f"out of {self.device.type.upper()} memory building the {run.model} networks"
                            + (f" ({widths})" if widths else "") + "; use narrower networks") from None
        if self.job.rank:  # every rank starts from rank 0's weights (DDP broadcasts them) but draws its own noise
            seed_everything(mix_seed(self.config.seed, self.job.rank))
        self.wrapped = self._wrap_for_distributed()
        # --cuda-graph: each step's device work captured once and replayed (img2img.step_graph)
        step_graphs = check_graphable(run, self.device, self.job.enabled)
        self.compile_refusal = refusal
        self.compile_mode = speed.resolve_compile(self.config.compile, self.device, training=True,
                                                  supported=refusal is None, distributed=self.job.enabled,
                                                  step_graphs=step_graphs)
        if self.compile_mode != "off" and self.job.is_main:
            log.info("compiling the networks (torch.compile %s%s): the first steps take a minute or so; "
                     "--compile off skips it", self.compile_mode,
                     ", replayed as CUDA graphs" if speed.uses_cuda_graphs(self.compile_mode, self.device) else "")
        self.phase_nets = self._phase_nets()
        # --compile auto and --cuda-graph auto: a step where torch compiles (each new kind of step: its phases,
        # its batch's shapes) or where a step graph is captured first takes a copy of what it changes, so that a
        # fault there falls back to eager networks or uncaptured steps (_guarded_step)
        self.compile_fallback = self.config.compile == "auto" and self.compile_mode != "off"
        self.graph_fallback = self.config.cuda_graph == "auto" and step_graphs
        self.compiled_keys: set[Hashable] = set()
        self.optimizers = {phase.name: self._optimizer(phase) for phase in self.model.phases}
        factor = linear_decay(self.config.steps, self.config.decay_steps)
        self.schedulers = {name: torch.optim.lr_scheduler.LambdaLR(opt, factor)
                           for name, opt in self.optimizers.items()}
        self.autocast = speed.bf16_autocast(self.config.amp, self.device)
        self.ema = nn.ModuleDict()
        if self.config.ema_decay > 0:
            for name in self.model.inference_networks:
                self.ema[name] = copy.deepcopy(self.model.nets[name]).requires_grad_(False)
        self.final_evaluation: float | None = None
        self.board = Board(None)  # TensorBoard, while fit() runs with --tensorboard
        self.eval_metric = ""
        if self.config.eval_every_steps:
            from img2img.evaluation.evaluate import EvalData, check_training_evaluation  # noqa: PLC0415

            self.eval_metric = check_training_evaluation(
                type(self.model), self.config.eval_metric,
                EvalData.of_training(self.config), run.options)
        # what the data folders hold (names and sizes), kept in each checkpoint: a resume says if they changed
        self.data_record = data_record(run) if data is None and self.job.is_main else {}
        self.data_notes: list[tuple[int, str]] = []
        if resume is not None:
            self._load_state(resume)
        self.graphs = StepGraphs(self.device, list(self.optimizers.values())) if step_graphs else None
        self.data = data if data is not None else self.model.build_data(run.options, self.config, self.device,
                                                                        self.job.rank, self.job.world_size)

    @property
    def step_graphs(self) -> bool:
        """Whether the steps run through step graphs (--cuda-graph), captured and replayed."""
        return self.graphs is not None

    def _phase_nets(self) -> dict[str, dict[str, nn.Module]]:
        """What each phase calls: the networks it updates through DDP (gradients are averaged over ranks), the
        frozen ones bare (so DDP never waits for gradients they will not get); compiled when asked."""
        return {phase.name: {name: speed.compile_module(self.wrapped.get(name, net) if name in phase.networks
                                                        else net, self.compile_mode, self.device)
                             for name, net in self.model.nets.items()}
                for phase in self.model.phases}

    def _wrap_for_distributed(self) -> dict[str, nn.Module]:
        """DistributedDataParallel views of the networks (the bare networks stay in ``model.nets``)."""
        if not self.job.enabled:
            return {}
        if self.config.sync_batch_norm:
            if self.device.type != "cuda":
                raise UserError("--sync-bn needs CUDA: synchronised batch norm does not run on the CPU")
            for name in list(self.model.nets):
                self.model.nets[name] = nn.SyncBatchNorm.convert_sync_batchnorm(self.model.nets[name])
        from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return {name: DistributedDataParallel(net, device_ids=device_ids) for name, net in self.model.nets.items()}

    def _optimizer(self, phase: Phase) -> torch.optim.Optimizer:
        params = [p for name in phase.networks for p in self.model.nets[name].parameters()]
        return self.model.make_optimizer(phase, params, self.config)

    # -- one step -----------------------------------------------------------------------------------
    def train_phase(self, phase: Phase, batch: Any, carry: dict[str, Any]) -> dict[str, Tensor]:
        """Update ``phase.networks`` by one optimiser step; every other network stays frozen."""
        for name, net in self.model.nets.items():
            net.requires_grad_(name in phase.networks)
        # autocast keeps no casts of the weights across a captured step: its cache would hold the capture's tensors
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast,
                            cache_enabled=not self.step_graphs):
            loss, logs = self.model.phase_loss(phase.name, self.phase_nets[phase.name], batch, carry)
        optimizer = self.optimizers[phase.name]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        self.model.after_phase(phase.name)
        return logs

    def train_step(self, batch: Any) -> dict[str, Tensor]:
        """One training step: every phase of the model in order (and the weight average), then the schedules
        advance.  With --cuda-graph the phases run as the replay of a captured step (:mod:`img2img.step_graph`)."""
        speed.mark_step(self.compile_mode, self.device)
        batch = speed.to_layout(self.model.prepare_batch(batch), self.config.channels_last)
        phases = self.model.phases_at(self.step)
        guarded = self.compile_fallback or self.graph_fallback
        logs = self._guarded_step(batch, phases) if guarded else self._device_step(batch, phases)
        with warnings.catch_warnings():
            # a model that alternates its updates (DiscoGAN) steps some optimisers only every few steps; the
            # schedule follows the global step all the same, which is what this order-of-calls warning doubts
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
            for scheduler in self.schedulers.values():
                scheduler.step()
        self.step += 1
        return logs

    def _device_step(self, batch: Any, phases: tuple[Phase, ...]) -> dict[str, Tensor]:
        """The step's device work, as it is (:meth:`_step_phases`) or replayed (--cuda-graph)."""
        with speed.compile_errors(self.compile_mode, channels_last=self.config.channels_last):
            if self.graphs is None:
                return self._step_phases(batch, phases)
            return self.graphs.run(batch, self.model.graph_key(self.step),
                                   lambda static: self._step_phases(static, phases))

    def _guarded_step(self, batch: Any, phases: tuple[Phase, ...]) -> dict[str, Tensor]:
        """A step under --compile auto with compiled networks, or --cuda-graph auto with step graphs.  A step where
        torch compiles (a kind of step not yet taken) or where a step graph is captured starts from a copy of what
        it changes: should torch's compiler fail there (a fault of torch with some networks, BENCHMARKS.md), or the
        capture, the step is taken again from that copy with eager networks, or uncaptured, which the run keeps,
        and a line says so.  The user did not ask for either, so it costs them nothing: the run goes on exactly as
        one without it from that step.  (An explicit --compile mode or --cuda-graph on stops there, in one line.)"""
        key = self.model.graph_key(self.step)
        compile_key = (key, tuple(signature(leaf) for leaf in tree_leaves(batch) if isinstance(leaf, Tensor))) \
            if self.compile_fallback else None  # (host work each step: only where it is used)
        compiling = self.compile_fallback and compile_key not in self.compiled_keys
        capturing = self.graph_fallback and self.graphs is not None and self.graphs.captures(batch, key)
        if not (compiling or capturing):
            return self._device_step(batch, phases)
        kept = self._changes()
        try:
            logs = self._device_step(batch, phases)
        except speed.CompileFault as fault:
            if not self.compile_fallback:
                raise
            failed, reason = "--compile", fault.reason
        except CaptureFault as fault:
            if not self.graph_fallback:
                raise
            failed, reason = "--cuda-graph", fault.reason
        except RuntimeError as error:  # torch.OutOfMemoryError is one
            if not (self.graph_fallback and ran_out_while_capturing(error)):
                raise
            failed, reason = "--cuda-graph", "memory ran out while the step was captured as one CUDA graph"
        else:
            if compiling:
                self.compiled_keys.add(compile_key)
            return logs
        # the step is retaken here, once the fault and what it held (a failed capture's graph) are gone
        if failed == "--cuda-graph":  # as without it: optimisers not capturable (step counts where they were)
            kept["optimizers"] = {name: portable(state) for name, state in kept["optimizers"].items()}
        self._restore(kept)
        if failed == "--compile":
            log.warning("--compile auto: %s; training goes on without compiling (as with --compile off)", reason)
            self._recompile("off")
        else:
            log.warning("--cuda-graph auto: %s; training goes on without it (as with --cuda-graph off)", reason)
            self.graphs, self.graph_fallback = None, False
            if self.device.type == "cuda":  # what the failed capture held goes back to the device
                torch.cuda.empty_cache()
            if self.compile_fallback:  # what --compile auto stands for without step graphs (graphs of its own)
                self._recompile(speed.resolve_compile(self.config.compile, self.device, training=True,
                                                      supported=self.compile_refusal is None,
                                                      distributed=self.job.enabled))
        return self._guarded_step(batch, phases)

    def _restore(self, kept: dict[str, Any]) -> None:
        """Put back a copy of what a step changes (:meth:`_changes`), random streams included."""
        self._load_changes(kept)
        checkpoint.restore_rng(kept["rng"])

    def _recompile(self, mode: str) -> None:
        """Compile the networks in ``mode`` from now on (``off``: eager), unless that is the mode already; no
        compiled code, CUDA-graph recording or step graph of the old mode stays."""
        if mode == self.compile_mode:
            return
        self.compile_mode = mode
        self.compile_fallback = self.config.compile == "auto" and mode != "off"
        self.compiled_keys.clear()
        torch.compiler.reset()
        self.phase_nets = self._phase_nets()
        if self.graphs is not None:
            self.graphs.reset()

    def _step_phases(self, batch: Any, phases: tuple[Phase, ...]) -> dict[str, Tensor]:
        """A step's work on the device: ``phases`` on ``batch``, then the weight average."""
        carry: dict[str, Any] = {"step": self.step}
        logs: dict[str, Tensor] = {}
        for phase in phases:
            logs.update(self.train_phase(phase, batch, carry))
        if self.ema:
            self._update_ema()
        return logs

    @torch.no_grad()
    def _update_ema(self) -> None:
        """θ_ema ← β θ_ema + (1 - β) θ for the weights.

        Batch-norm statistics are not averaged (an average of statistics is
        not the statistics of the averaged weights, and samples suffer): the
        model recomputes them whenever the averages are used or saved.
        """
        weight = 1.0 - self.config.ema_decay
        for name, average in self.ema.items():
            torch._foreach_lerp_(list(average.parameters()), list(self.model.nets[name].parameters()), weight)

    def _refresh_ema_statistics(self, nets: nn.ModuleDict) -> None:
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.step)
        self.model.refresh_statistics(nets, generator)

    def inference_model(self) -> GANModel:
        """The model as ``sample``/``translate`` will use it: with the averaged weights when --ema is on."""
        if not self.ema:
            return self.model
        model = copy.deepcopy(self.model)
        for name, average in self.ema.items():
            model.nets[name].load_state_dict(average.state_dict())
        self._refresh_ema_statistics(nn.ModuleDict({name: model.nets[name] for name in self.ema}))
        return model

    # -- state ----------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        if self.ema:
            self._refresh_ema_statistics(self.ema)
        changing = self._changing()
        changing["optimizers"] = {name: portable(state) for name, state in changing["optimizers"].items()}
        return {
            "format": checkpoint.FORMAT,
            "format_version": checkpoint.FORMAT_VERSION,
            "config": self.run.to_dict(),
            "step": self.step,
            **changing,
            "schedulers": {name: sch.state_dict() for name, sch in self.schedulers.items()},
            "world_size": self.job.world_size,
            "best": self.best,
            "data": self.data_record,
        }

    def _changing(self) -> dict[str, Any]:
        """All that a training step changes, as the live state (what :meth:`_load_changes` puts back): the weights
        and their averages, the optimisers' and the model's state, the random streams."""
        return {"networks": {name: net.state_dict() for name, net in self.model.nets.items()},
                "ema": {name: net.state_dict() for name, net in self.ema.items()},
                "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
                "model_state": self.model.extra_state(), "rng": checkpoint.capture_rng()}

    def _changes(self) -> dict[str, Any]:
        """A copy of :meth:`_changing` on the host, which the step cannot touch."""
        return tree_map(lambda value: value.detach().to("cpu", copy=True) if isinstance(value, Tensor) else value,
                        self._changing())

    def _load_changes(self, payload: dict[str, Any]) -> None:
        """The weights, averages, optimiser and model state of a checkpoint or of :meth:`_changes`."""
        for name, net in self.model.nets.items():
            net.load_state_dict(payload["networks"][name])
        for name, net in self.ema.items():
            net.load_state_dict(payload["ema"][name])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(payload["optimizers"][name])
        self.model.load_extra_state(payload.get("model_state", {}))

    def _load_state(self, payload: dict[str, Any]) -> None:
        self._load_changes(payload)
        for name, sch in self.schedulers.items():
            sch.load_state_dict(payload["schedulers"][name])
        self.step = int(payload["step"])
        self.best = payload.get("best")
        # said when training starts, in the run's log too
        self.data_notes = data_changes(payload.get("data"), self.data_record, self.step) if self.job.is_main else []
        ranks = payload.get("rng_ranks")
        if ranks is not None and len(ranks) == self.job.world_size:
            checkpoint.restore_rng(ranks[self.job.rank])
        elif self.job.rank == 0:
            checkpoint.restore_rng(payload["rng"])
        else:  # resumed with more processes than wrote the checkpoint: a fresh, reproducible stream per rank
            seed_everything(mix_seed(self.config.seed, self.job.rank, self.step))

    def save(self) -> Path:
        """Write a checkpoint (rank 0; every rank must call this, as it gathers every rank's RNG state)."""
        self._check_finite()
        rng_ranks = dist_tools.gather(checkpoint.capture_rng(), self.job) if self.job.enabled else None
        if not self.job.is_main:
            return self.dirs.last
        state = self.state()
        if rng_ranks is not None:
            state["rng_ranks"] = rng_ranks
        path = checkpoint.atomic_save(state, self.dirs.checkpoint(self.step))
        checkpoint.atomic_link(path, self.dirs.last)
        self.saved_step = self.step
        self.dirs.prune_checkpoints(max(1, self.config.keep_checkpoints))
        return self.dirs.last

    def _check_finite(self) -> None:
        """Stop the run, in one line, if its weights are no longer finite: a run that diverged to NaN would train
        on for nothing and, saving, prune the checkpoints from before it diverged (one host sync, once a step:
        a step that logs and saves is checked at its log line only)."""
        if self.finite_step == self.step:
            return
        weights = [p.detach() for net in self.model.nets.values() for p in net.parameters()]
        if weights and not bool(torch.stack([w.isfinite().all() for w in weights]).all()):
            raise UserError(f"training diverged by step {self.step}: the weights are no longer finite (NaN or "
                            f"infinite), so nothing more is saved ({self._newest_checkpoint()}); a lower --lr may "
                            "keep it finite")
        self.finite_step = self.step

    def write_samples(self, inputs: Any) -> Path:
        from torchvision.utils import make_grid  # noqa: PLC0415 - 1.4 s to import (torch._dynamo)

        images, per_row = self.inference_model().sample_grid(inputs)
        grid = make_grid(images.float().cpu(), nrow=per_row, normalize=True, value_range=(-1, 1))
        # the levels torchvision's save_image writes, written whole or not at all: a full disk left a cut
        # last.png, and an error that named no file
        png = encode_image(grid.mul(255).add(0.5).clamp(0, 255).permute(1, 2, 0).to(torch.uint8).numpy(), ".png")
        path = self.dirs.sample(self.step)
        checkpoint.replace_file(path, png)
        checkpoint.replace_file(self.dirs.samples / "last.png", png)
        self.board.image(grid, self.step)
        return path

    # -- the loop ------------------------------------------------------------------------------------
    def fit(self, stop_after_steps: int | None = None) -> TrainResult:
        """Train to ``config.steps`` (or stop early after ``stop_after_steps`` more, for tests)."""
        config = self.config
        if not self.job.is_main:
            return self._fit(config, stop_after_steps)
        self.dirs.keep_metrics_to(self.step)  # as the board drops a killed run's events after its checkpoint
        file_log = RunLog(self.dirs.log)
        logger = logging.getLogger("img2img")
        level = logger.level
        if logger.getEffectiveLevel() > logging.INFO:  # the run's log has its INFO lines however logging is set up
            logger.setLevel(logging.INFO)
        logger.addHandler(file_log)
        self.board = Board(self.dirs.root if config.tensorboard else None, self.step)
        self.board.config(self.run.to_json(), self.step)
        try:
            return self._fit(config, stop_after_steps)
        finally:
            self.board.close()
            self.board = Board(None)
            logger.removeHandler(file_log)
            logger.setLevel(level)
            file_log.close()

    def _fit(self, config: TrainConfig, stop_after_steps: int | None) -> TrainResult:
        end = config.steps if stop_after_steps is None else min(config.steps, self.step + stop_after_steps)
        main = self.job.is_main
        if main:
            log.info("training %s on %s from step %d to %d, batch %d%s", self.run.model, self.device, self.step,
                     config.steps, config.batch_size,
                     f" per process × {self.job.world_size} processes = {config.batch_size * self.job.world_size}"
                     " global" if self.job.enabled else "")
            for level, line in self.data_notes:
                log.log(level, "%s", line)
        try:  # read from the training files in this process: they may have broken since the run began
            sample_inputs = self.model.sample_inputs(self.data, config.seed, self.device)
        except Exception as error:  # noqa: BLE001
            raise self._data_failure(error) from None
        batches: Iterator[Any] = self.data.iterate(self.step)
        self.model.train()
        totals: dict[str, list[Tensor]] = defaultdict(list)
        started = window_start = time.perf_counter()
        window_step = self.step
        grid: Path | None = None
        last = self.dirs.last if self.dirs.last.exists() else None
        bar = tqdm(total=config.steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=None if main else True, desc=self.run.model)
        # Ctrl-C and SIGTERM stop the loop between two steps (its loading workers end while the signals are still
        # the loop's); the ranks of a distributed run, which could not agree on which step to stop at without a
        # synchronisation per step, stop at once
        stop = StopRequests()
        try:
            with stop if not self.job.enabled else contextlib.nullcontext(), guard.worker_deaths_at_fetch(batches):
                # a dead loading worker is noticed between steps; the workers end before SIGCHLD is let through
                while self.step < end and stop.signal is None:
                    batch = self.model.move_batch(_fetch(batches), self.device)
                    stop.in_step = True
                    logs = self.train_step(batch)
                    stop.in_step = False
                    for key, value in logs.items():
                        totals[key].append(value)
                    bar.update(1)
                    timed_out = bool(config.time_limit) and time.perf_counter() - started >= config.time_limit
                    if timed_out:
                        log.info("--time-limit %g s reached at step %d", config.time_limit, self.step)
                        end = self.step
                    stopping = stop.signal is not None and self.step < end  # log, save; no samples, no evaluation
                    if main and (self.step % config.log_every_steps == 0 or self.step == end or stopping):
                        now = time.perf_counter()
                        record = self._log_record(totals, (self.step - window_step) / max(now - window_start, 1e-9))
                        totals.clear()
                        window_start, window_step = now, self.step
                        bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k != "step"}, refresh=False)
                        self.dirs.append_metrics(record)
                        self.board.record(record)
                        log.log(logging.INFO if bar.disable else logging.DEBUG, "%s",
                                " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in record.items()))
                    if self.step % config.log_every_steps == 0:  # every rank: a run that diverged stops now
                        self._check_finite()
                    if main and not stopping and (self.step % config.sample_every_steps == 0
                                                  or self.step == config.steps or timed_out):
                        grid = self.write_samples(sample_inputs)
                    evaluate = not stopping and config.eval_every_steps > 0 and (
                        self.step % config.eval_every_steps == 0 or self.step == config.steps)
                    improved = self.evaluate() if evaluate and main else False
                    if self.step % config.save_every_steps == 0 or self.step == end or evaluate or stopping:
                        last = self.save()
                        if improved:
                            checkpoint.atomic_link(self.dirs.checkpoint(self.step), self.dirs.best)
                if stop.signal is not None and self.step < end:  # said while the signals are still the loop's:
                    self._save_on_stop()  # another Ctrl-C now changes nothing
                    raise said(Interrupted(stop.signal))
        except _DataFailure as failure:
            bar.close()
            if stop.signal is not None:  # the loading workers had the signal too, and ended
                self._save_on_stop()
                raise said(Interrupted(stop.signal)) from None
            raise self._data_failure(failure.error) from None
        except KeyboardInterrupt as error:
            if isinstance(error, Interrupted) and not stop.in_step:  # stopped between steps: saved and said
                raise
            bar.close()  # a second signal within a step (Interrupted), or Ctrl-C where no StopRequests is entered
            if not self.job.enabled:  # a distributed save would wait on ranks that are stopping too
                if stop.in_step:  # what the networks hold now is part of a step: not a checkpoint to resume from
                    log.warning("stopped at once halfway through step %d, with no checkpoint of it (%s)",
                                self.step + 1, self._newest_checkpoint() + (
                                    f"; continue with --resume {self.dirs.root}" if self.dirs.last.exists() else ""))
                else:
                    self._save_on_stop()
                said(error)
            raise
        except OSError as error:  # writing the run's files (a full disk, a folder taken away) or reading eval data
            what = exhausted(error, workers=True) or f"{error.filename or self.dirs.root}: {error.strerror or error}"
            raise UserError(f"{what} at step {self.step} ({self._newest_checkpoint()})") from None
        except (RuntimeError, MemoryError) as error:  # torch.OutOfMemoryError is a RuntimeError
            if not out_of_memory(error):
                raise
            size = size_option(self.run.options)
            kept = self._newest_checkpoint()
            raise UserError(f"out of {self.device.type.upper()} memory at step {self.step}: "
                            + (f"--size {size} with " if size else "") + f"--batch-size {config.batch_size} does "
                            f"not fit; use smaller images or batches ({kept})") from None
        finally:
            bar.close()
        seconds = time.perf_counter() - started
        if last is None:
            last = self.save()
        dist_tools.barrier(self.job)
        if main:
            log.info("finished at step %d in %.1f s", self.step, seconds)
            if self.best is not None and self.final_evaluation is not None:
                metric = self.best["metric"]
                log.info("held-out %s: final %.4g at step %d; best %.4g at step %d (%s)", metric,
                         self.final_evaluation, self.step, self.best["value"], self.best["step"], self.dirs.best)
        return TrainResult(self.dirs.root, last, grid, self.step, seconds)

    def _save_on_stop(self) -> None:
        """Stopped between two steps: a checkpoint of this step (unless there is one), said in the log."""
        saved = self.dirs.last if self.saved_step == self.step else self.save()
        log.warning("interrupted at step %d; checkpoint %s; continue with --resume %s", self.step, saved,
                    self.dirs.root)

    def _newest_checkpoint(self) -> str:
        return f"the newest checkpoint, {self.dirs.last}, is intact" if self.dirs.last.exists() else \
            "no checkpoint was written yet"

    def _data_failure(self, error: BaseException) -> UserError:
        """A batch could not be loaded (a file broke on disk, a decoding worker died): save a checkpoint at this
        step, before which every step is complete, and say which file, in one line."""
        fix = "fix the file, then "
        if guard.worker_died(error):
            files = self.data.files(self.step, self.data.steps_in_flight()) if hasattr(self.data, "files") else []
            crashed = guard.find_crashes(files)
            what = "; ".join(f"{files[i]}: {why}" for i, why in sorted(crashed.items()))
            if not crashed:  # killed from outside, or for the memory it took: no file to fix
                what, fix = (f"a data-loading worker died ({guard.original_message(error)}), and no file makes it "
                             "die (was it out of memory? fewer --workers take less)"), ""
        elif (limit := exhausted(error, workers=True)) is not None:
            what, fix = limit, ""
        else:
            what = guard.original_message(error)
        # the other ranks are not waiting to save with this one
        kept = self._newest_checkpoint() if self.job.enabled else f"saved {self.save()}"
        return UserError(f"{what} (loading step {self.step}; {kept}); {fix}--resume {self.dirs.root} continues the "
                         "run")

    def evaluate(self) -> bool:
        """Evaluate the inference model on the held-out data, log it, and say whether it is the best so far."""
        from img2img.evaluation.evaluate import DIGIT_ONLY, EvalData, better, evaluate_model  # noqa: PLC0415

        config = self.config
        model = self.inference_model()
        model.eval()
        try:
            report = evaluate_model(model, self.run, self.step,
                                    EvalData.of_training(config),
                                    samples=config.eval_samples, seed=config.seed, device=self.device)
        except (UserError, OSError, RuntimeError, MemoryError) as error:
            if isinstance(error, RuntimeError) and not out_of_memory(error):
                raise
            # a held-out file that is broken or gone, or memory that ran out: the training itself is not lost
            log.warning("eval step=%d failed, and the run goes on without it: %s", self.step,
                        "out of memory" if isinstance(error, (RuntimeError, MemoryError)) else error)
            return False
        finally:
            self.model.train()
        values = {k: v for k, v in report.metrics.items() if isinstance(v, (int, float))}
        self.dirs.append_metrics({"step": self.step, "eval": values})
        self.board.evaluation(values, self.step)
        if self.eval_metric not in values:  # these held-out data do not give it: the run goes on without best.ckpt
            topic = "fid/kid" if self.eval_metric.startswith(("fid", "kid")) else self.eval_metric  # "lpips"
            why = [note for note in report.notes if note.startswith(f"{topic} skipped")]
            log.warning("eval step=%d: --eval-metric %s was not computed (%s), so best.ckpt is not kept by it; the "
                        "run goes on", self.step, self.eval_metric, "; ".join(why) or f"it is reported {DIGIT_ONLY}")
            return False
        value = float(values[self.eval_metric])
        self.final_evaluation = value
        improved = better(self.eval_metric, value, None if self.best is None else self.best["value"])
        if improved:
            self.best = {"metric": self.eval_metric, "value": value, "step": self.step}
        log.info("eval step=%d %s%s", self.step, " ".join(f"{k}={v:.4g}" for k, v in values.items()),
                 " (best so far)" if improved else "")
        return improved

    def _log_record(self, totals: dict[str, list[Tensor]], steps_per_second: float) -> dict[str, Any]:
        record: dict[str, Any] = {"step": self.step}
        for key, values in totals.items():  # one host sync per log line, not per step
            record[key] = float(torch.stack(values).float().mean())
        record["lr"] = float(next(iter(self.schedulers.values())).get_last_lr()[0])
        record["steps_per_s"] = steps_per_second
        if any(not math.isfinite(v) for v in record.values() if isinstance(v, float)):
            log.warning("a loss is not finite at step %d", self.step)
        return record


class _DataFailure(Exception):
    """Loading a batch failed; ``error`` says why."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _fetch(batches: Iterator[Any]) -> Any:
    try:
        return received(next(batches))  # a loading worker's batch sent by value, where shared memory was short
    except Exception as error:  # noqa: BLE001 - whatever a loader raises, the trainer saves and names it
        raise _DataFailure(error) from error


# what torch says when a network cannot take its input, and the option that decides it
_IMPOSSIBLE = (("more than 1 value per channel", "batch"), ("more than 1 spatial element", "size"),
               ("Kernel size can't be greater", "size"), ("Padding size should be less", "size"),
               ("Output size is too small", "size"))


def size_option(options: Any) -> int | None:
    """The value of the model's --size option; None for a model without one (the MLP GANs' fixed 28)."""
    field = next((f for f in dataclasses.fields(options) if f.name == "size"), None) \
        if dataclasses.is_dataclass(options) else None
    return getattr(options, "size") if field is not None and cli_option(field) is not None else None


def check_graphable(run: RunConfig, device: torch.device | None = None, distributed: bool | None = None) -> bool:
    """Whether the run's steps are captured as CUDA graphs (``--cuda-graph``, see :func:`img2img.step_graph.resolve`)
    on ``device`` (else the run's), ``distributed`` or not (else as torchrun's environment says).  Refuse in one
    line ``on`` where it cannot run: for a model whose step cannot be captured, with a compile mode that records
    CUDA graphs of its own (per network), on a device without CUDA graphs, or under torchrun (DDP's gradient
    buckets are not captured here); ``auto`` is then off."""
    setting = run.train.cuda_graph
    if setting == "off":
        return False
    device = device or resolve_device(run.train.device)
    refusal = get_model_class(run.model).graph_refusal(run.options)
    distributed = dist_tools.from_environment().enabled if distributed is None else distributed
    if setting == "on":
        if refusal:
            raise UserError(f"--cuda-graph: {refusal}; leave --cuda-graph off")
        check_capture(device, run.train.compile, "training step")
        if distributed:
            raise UserError("--cuda-graph runs in one process; under torchrun leave it off")
    return resolve_graphs(setting, device, run.train.compile, refusal, distributed)


def check_compilable(run: RunConfig) -> str | None:
    """Refuse in one line a --compile mode (other than auto and off) for a model that cannot be compiled; else
    why it cannot be (auto leaves it off), or None."""
    refusal = get_model_class(run.model).compile_refusal(run.options)
    if refusal and run.train.compile not in ("auto", "off"):
        raise UserError(f"--compile {run.train.compile}: {refusal}; use --compile off (auto leaves it off)")
    return refusal


def check_runnable(run: RunConfig, batch: Any = None, architecture_options: bool = True) -> None:
    """Refuse in one line, before any folder is made or step taken, settings whose networks cannot run: a batch
    of 1 through batch norm in training mode, an image too small for the networks' depth (instance norm on a
    1×1 map, a kernel larger than its input), a compile mode for a model that cannot be compiled.  One training
    step's losses are computed on the ``meta`` device (shapes only, no arithmetic) on ``batch`` or the model's
    :meth:`dry_batch`.  ``architecture_options``: whether the command has the model's options (``train``),
    which the advice may then name (``bench`` times the default networks and has none)."""
    check_compilable(run)
    check_graphable(run)
    model_class = get_model_class(run.model)
    if batch is None:
        size = size_option(run.options)
        load = getattr(run.options, "load_size", None) or size
        need = _example_memory(model_class, run.options, size, load) if size and load else None
        if need is not None and (available := memory_short(need)) is not None:
            raise UserError(f"--load-size {load}: one training example resized to {load}×{load} needs about "
                            f"{need / 2**30:.1f} GiB of memory, and {available / 2**30:.1f} GiB is available; use a "
                            "smaller --load-size")
        try:
            batch = model_class.dry_batch(run.options, run.train.batch_size)
        except Exception as error:  # noqa: BLE001 - reading and resizing one example: memory is what can fail
            if not out_of_memory(error):
                raise
            load = getattr(run.options, "load_size", None) or size_option(run.options)
            raise UserError(f"--load-size {load}: one training image resized to {load}×{load} does not fit in "
                            f"memory ({str(error).strip().splitlines()[-1][:120]})") from None
    if batch is None:
        return
    kept: list[int] = []  # bytes of the tensors each phase's backward pass keeps
    try:
        with torch.device("meta"):
            model = build_model(run)
        model.train()
        meta = model.move_batch(batch, torch.device("meta"))
        carry: dict[str, Any] = {"step": 0}
        counted = {t.untyped_storage()._cdata for t in [*model.parameters(), *tree_leaves(meta)]  # (apart)
                   if isinstance(t, Tensor)}
        for phase in model.phases:
            storages: dict[int, int] = {}

            def keep(tensor: Tensor, storages: dict[int, int] = storages) -> Tensor:
                storage = tensor.untyped_storage()  # views of one tensor share it
                if storage._cdata not in counted:
                    storages[storage._cdata] = storage.nbytes()
                return tensor

            with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
                model.phase_loss(phase.name, model.nets, meta, carry)
            kept.append(sum(storages.values()))
    except (RuntimeError, ValueError, NotImplementedError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        option = next((kind for pattern, kind in _IMPOSSIBLE if pattern in reason), None)
        shape = re.search(r"torch\.Size\(\[([\d, ]+)\]\)", reason)
        sides = [int(v) for v in shape.group(1).split(",")][2:] if shape else []
        if option == "batch" and sides and math.prod(sides) == 1:  # batch norm on a 1×1 map: the image is too small
            option = "size"
        if option is None:  # something the shape-only run cannot do (reading a value, say): no verdict
            log.debug("the dry run of %s stopped short: %s", run.model, reason)
            return
        if option == "batch":
            where = f"--batch-size {run.train.batch_size}"
            advice = "use a batch of 2 or more"
        else:
            depth = getattr(run.options, "n_layers", None) if architecture_options else None
            where = f"--size {getattr(run.options, 'size', '?')}" + (f" with --n-layers {depth}" if depth else "")
            advice = "use larger images" + (" or fewer --n-layers" if depth else "")
        raise UserError(f"{where}: the {run.model} networks cannot run this ({reason[:160]}); {advice}") from None
    if resolve_device(run.train.device).type == "cpu":  # (CUDA's allocator says when it runs out; the CPU's is
        check_memory(run, model, meta, max(kept, default=0))  # overcommitted, and the kernel kills the process, unsaid)


def _example_memory(model_class: type[GANModel], options: Any, size: int, load: int) -> int | None:
    """Bytes that reading one training example takes, about: its images cropped to ``size``, in float32, and
    one of them resized to ``load`` beside them (the crop's source); its images and their channels read at 16×16.
    None where that cannot be read (a model without a dataset, say).  A ``--size 8192`` CycleGAN example peaked
    at 3.0 GB over the process's own, against 2.4 GB here; ``--size 32 --load-size 16384``, 3.0 against 3.2."""
    small = {name: 16 for name in ("size", "load_size") if hasattr(options, name)}
    try:
        example = model_class.dataset(dataclasses.replace(options, **small))[0]
    except Exception:  # noqa: BLE001 - no verdict: dry_batch says what is wrong, reading the example itself
        return None
    channels = [leaf.shape[0] for leaf in tree_leaves(example) if isinstance(leaf, Tensor) and leaf.dim() == 3]
    return 4 * (sum(channels) * size * size + max(channels) * load * load) if channels else None


def check_memory(run: RunConfig, model: GANModel, batch: Any, kept: int) -> None:
    """Refuse in one line a CPU training step that cannot fit in the memory available (:func:`memory_short`),
    where the kernel would kill the process without a word.  What it needs at least: the networks' parameters,
    their gradients and one optimiser state each, the batch, and the tensors that the largest phase's backward
    pass keeps (``kept``, measured on the ``meta`` device at the run's size).  A lower bound: the backward pass's
    own gradients and the allocator's slack come on top, less of it the larger the step (a CycleGAN step, batch 1,
    peaked at 0.93, 3.07, 5.84 and 9.51 GiB over the process's own at 128², 256², 384² and 512², against 0.65,
    2.36, 4.89 and 8.42 GiB here: 43% more, then 30%, 19% and 13%)."""
    parameters = sum(p.numel() * p.element_size() for p in model.parameters())
    data = sum(leaf.numel() * leaf.element_size() for leaf in tree_leaves(batch) if isinstance(leaf, Tensor))
    need = 3 * parameters + data + kept
    if (available := memory_short(need)) is not None:
        size = size_option(run.options)
        where = (f"--size {size} with " if size else "") + f"--batch-size {run.train.batch_size}"
        raise UserError(f"{where}: one {run.model} training step needs at least {need / 2**30:.1f} GiB of memory "
                        f"on the CPU, and {available / 2**30:.1f} GiB is available; use "
                        f"{'a smaller --size or --batch-size' if size else 'a smaller --batch-size'}")


def check_time_limit(train: TrainConfig) -> None:
    """--time-limit stops one process on its own clock: refused under torchrun, whose processes would stop at
    different steps and wait for each other for ever."""
    if train.time_limit and dist_tools.from_environment().enabled:
        raise UserError("--time-limit stops one process on its own clock; under torchrun the processes would stop "
                        "at different steps: set --steps instead")


def _path_options(config: Any) -> Iterator[tuple[dataclasses.Field, str]]:
    """The fields of ``config`` that name a file or folder (the options marked ``path``) and are set, with their
    values."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if (cli := cli_option(f)) is not None and cli.path and isinstance(value, str):
            yield f, value


def _absolute_paths(config: Any) -> Any:
    """``config`` with its data folders (the options marked ``path``) made absolute, so that the run's checkpoints
    resume, and evaluate against their training data, from any working folder."""
    changes = {f.name: os.path.abspath(value) for f, value in _path_options(config)}
    return dataclasses.replace(config, **changes) if changes else config


def _folder_options(run: RunConfig, images: bool = False) -> Iterator[tuple[str, str]]:
    """``(flag, folder)`` of each data folder a run names (the options marked ``path`` that are folders), or of
    each folder whose images it reads (``images``: not MNIST's archives)."""
    for config in (run.options, run.train):
        for f, value in _path_options(config):
            if os.path.isdir(value) and (cli_option(f).images or not images):
                yield option_flag(f), value


def relocate_data(run: RunConfig, moves: dict[str, str], checkpoint: str | Path) -> RunConfig:
    """``run`` reading its data from where it lies now: ``moves`` maps the field of a data folder the run reads
    (``a``, ``data``, ``eval_a``, ...) to its new place (a dataset moved to another disk, a run resumed on
    another machine).  Whether the folder still holds what the run trained on is said at the checkpoint's
    record of it (:func:`data_changes`), as for a folder changed in place.  A data folder that the run reads and
    that is gone is named with how to give its new place, ``checkpoint`` being what was resumed."""
    configs = {"options": run.options, "train": run.train}
    folders = {f.name: (where, f) for where, config in configs.items() for f in dataclasses.fields(config)
               if f.name in path_fields(type(config))}
    for name, place in moves.items():
        if name not in folders:
            raise ValueError(f"{name} is no data folder of a {run.model} run")
        where, f = folders[name]
        config = configs[where]
        if getattr(config, name) is None:
            reads = [option_flag(g) for c in configs.values() for g, _ in _path_options(c)]
            places = f"the run's {', '.join(reads)}" if reads else "no folder of this run"
            flag = option_flag(f)
            raise UserError(f"{flag}: the run reads no {flag}, so it has none to move; --resume may give the new "
                            f"place of {places}")
        configs[where] = dataclasses.replace(config, **{name: os.path.abspath(place)})
    run = RunConfig(run.model, configs["train"], configs["options"])
    gone = [(option_flag(f), value) for config in configs.values() for f, value in _path_options(config)
            if cli_option(f).images and not os.path.exists(value)]  # (MNIST's folder is downloaded into)
    if gone:
        also = "".join(f", nor does {flag} {value}" for flag, value in gone[1:])
        give = "it moved, give its new place" if len(gone) == 1 else "they moved, give their new places"
        raise UserError(f"{gone[0][0]}: {gone[0][1]}, which the run reads, does not exist{also}; if {give}: "
                        f"img2img train {run.model} --resume {checkpoint} "
                        + " ".join(f"{flag} DIR" for flag, _ in gone))
    return run


def data_record(run: RunConfig) -> dict[str, Any]:
    """What each data folder of ``run`` holds (:func:`~img2img.data.images.folder_record`), by its option."""
    return {flag: {"folder": folder, **folder_record(folder)} for flag, folder in _folder_options(run)}


def data_changes(then: dict[str, Any] | None, now: dict[str, Any], step: int) -> list[tuple[int, str]]:
    """``(logging level, line)``: a warning for each data folder that does not hold what it held when the
    checkpoint of ``step`` was written (the run goes on, but will not end with the weights of a run that was not
    stopped), and a note for each that is read from a new place (``--resume RUN --a DIR``)."""
    lines = []
    for flag, was in (then or {}).items():
        seen = now.get(flag)
        if seen is None:
            continue
        if seen["folder"] != was.get("folder"):
            lines.append((logging.INFO, f"{flag}: the run's data is read from {seen['folder']} now (it was "
                                        f"{was.get('folder')})"))
        if seen["digest"] != was["digest"]:
            change = (f"holds {seen['images']} images, {was['images']} at the checkpoint of step {step}"
                      if seen["images"] != was["images"] else
                      f"holds images renamed, replaced or changed in size since the checkpoint of step {step}")
            lines.append((logging.WARNING, f"{flag}: {seen['folder']} {change}; the run goes on with them as they "
                                           "are, so it will not end as a run that was not stopped would"))
    return lines


def resolve_run(run: RunConfig) -> RunConfig:
    """Validate a run's options and data once and make every inferred setting explicit: the model's options
    (channels, depths, ... read off the data), its schedule (--steps/--decay-steps from its epochs where
    unset) and the metric that picks best.ckpt."""
    model_class = get_model_class(run.model)
    if run.train.steps is not None and run.train.decay_steps is not None:
        run.train.validate()  # before the data is read
    run = RunConfig(run.model, _absolute_paths(run.train), _absolute_paths(run.options))
    options = model_class.resolve(run.options)
    run = RunConfig(run.model, model_class.schedule(run.train, options), options)
    run.train.validate()
    resolve_device(run.train.device)
    train = run.train
    if not train.eval_every_steps:  # the held-out evaluation's options mean nothing without it
        given = [flag for flag, value in (("--eval-metric", train.eval_metric), ("--eval-a", train.eval_a),
                                          ("--eval-b", train.eval_b), ("--eval-aligned", train.eval_aligned),
                                          ("--eval-data", train.eval_data)) if value]
        if given:
            raise UserError(f"{given[0]} applies to the held-out evaluation during training: add --eval-every N, "
                            f"or leave out {', '.join(given)}")
    check_time_limit(train)
    if train.sync_batch_norm and not dist_tools.from_environment().enabled:
        log.warning("--sync-bn synchronises batch norm across torchrun processes; this is one process, so it has "
                    "no effect")
    if run.train.eval_every_steps:  # checked before a run folder exists; the chosen metric made explicit
        from img2img.evaluation.evaluate import EvalData, check_training_evaluation, verify_held_out  # noqa: PLC0415

        metric = check_training_evaluation(model_class, run.train.eval_metric, EvalData.of_training(run.train),
                                           run.options)
        verify_held_out(EvalData.of_training(run.train))
        run = run.replace_train(eval_metric=metric)
    try:
        examples = model_class.dataset_size(run.options)
    except NotImplementedError:
        examples = None
    if examples is not None and examples < run.train.batch_size:
        raise UserError(f"--batch-size: the training data has {examples} examples, fewer than one batch of "
                        f"{run.train.batch_size}")
    check_runnable(run)
    return run


def refuse_run_inside_data(run: RunConfig, root: Path, option: str) -> None:
    """A one-line error for a run folder inside one of the run's data folders: its sample grids would be read
    as images of that folder (on --resume, as training images; at an evaluation, as held-out ones)."""
    for flag, folder in _folder_options(run, images=True):
        if checkpoint.within(root, folder):
            what = "move it out (a run resumes from any folder) and resume it there" if option == "--resume" else \
                "choose a run folder outside it"
            raise UserError(f"{option}: the run folder {root} lies inside {flag} {folder}, whose images its sample "
                            f"grids would join; {what}")


def train(run: RunConfig, out: str | Path, resolved: bool = False) -> TrainResult:
    """Start a new run in ``out`` (which must not hold one already) and train it to the end."""
    dirs = RunDir(out)
    refuse_run_inside_data(run, dirs.root, "--out")  # before the data is checked, which can take minutes
    if not resolved:
        run = resolve_run(run)
    device = resolve_device(run.train.device)
    job = dist_tools.from_environment()
    with held(dirs.lock("--out") if job.is_main else None):
        if job.is_main:
            dirs.create("--out", fresh=True)
            dirs.write_config(run)
        try:
            result = Trainer(run, dirs.root, device, job=job).fit()
        except BaseException:
            dist_tools.teardown(job, wait=False)
            raise
        dist_tools.teardown(job)
    return result


def resume(path: str | Path, steps: int | None = None, stop_after_steps: int | None = None,
           model: str | None = None, moves: dict[str, str] | None = None, out: str | Path | None = None,
           **changes: Any) -> TrainResult:
    """Continue the run whose checkpoint (or run folder) is ``path``, in that run's folder, or in the new run
    folder ``out`` (the checkpoint's folder left as it is: a checkpoint file kept elsewhere, a run branched).

    ``model``: the model the caller expects (``img2img train MODEL --resume``); a run of another is refused.
    ``moves``: new places of the run's data folders, by field (:func:`relocate_data`).
    ``changes``: new values of the settings that do not change what the run computes (``device`` and the
    speed settings, see :data:`~img2img.config.RESUMABLE_SETTINGS`)."""
    payload, run = open_checkpoint(path, "--resume")
    if "optimizers" not in payload:
        raise UserError(f"--resume: {payload['path']} holds imported generator weights only; it translates and "
                        "exports but cannot continue training")
    if model is not None and run.model != model:
        raise UserError(f"--resume: {payload['path']} is from a {run.model} run, not {model}; continue it with "
                        f"`img2img train {run.model} --resume {path}`")
    unknown = sorted(set(changes) - set(RESUMABLE_SETTINGS))
    if unknown:
        raise ValueError(f"resume cannot change {', '.join(unknown)}")
    changes = {key: value for key, value in changes.items() if value is not None}
    if steps is not None:
        if steps < int(payload["step"]):
            raise UserError(f"--steps: {steps} is fewer than the {payload['step']} steps the run has done")
        changes["steps"] = steps
    if changes:
        run = run.replace_train(**changes)
    check_time_limit(run.train)
    run = relocate_data(run, moves or {}, path)
    run_root = Path(payload["path"]).resolve().parent
    if run_root.name == "checkpoints":
        run_root = run_root.parent
    option = "--resume" if out is None else "--out"
    if out is not None:  # a new run folder, whose best.ckpt will be the best of its own evaluations
        run_root, payload = Path(out), {**payload, "best": None}
    refuse_run_inside_data(run, run_root, option)
    dirs = RunDir(run_root)
    job = dist_tools.from_environment()
    if job.is_main and out is not None:  # before the data is checked, which can take minutes
        dirs.check_fresh("--out")
    elif job.is_main:
        dirs.check_resumable(path)
    get_model_class(run.model).resolve(run.options)  # the data checked again (every file decoded) before a step
    if run.train.eval_every_steps:  # and the held-out data
        from img2img.evaluation.evaluate import EvalData, verify_held_out  # noqa: PLC0415

        verify_held_out(EvalData.of_training(run.train))
    with held(dirs.lock(option) if job.is_main else None):
        if job.is_main:
            dirs.create(option, fresh=out is not None)
            if out is None:
                dirs.check_resumable(path)  # again, under the lock
            dirs.write_config(run)
            step = int(payload["step"])
            later = [saved for saved in dirs.saved_steps() if saved > step]
            if later:  # going back: said, as the later checkpoints will be replaced as training passes them
                log.warning("--resume: %s is step %d, and the run went on to step %d: training goes on from "
                            "step %d again, and replaces what the run logged and saved after it", payload["path"],
                            step, later[-1], step)
        try:
            trainer = Trainer(run, run_root, resolve_device(run.train.device), resume=payload, job=job)
            result = trainer.fit(stop_after_steps)
        except BaseException:
            dist_tools.teardown(job, wait=False)
            raise
        dist_tools.teardown(job)
    return result
