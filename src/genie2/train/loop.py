"""The training loop every trainer shares, on Hugging Face Accelerate (one CPU, one GPU, or DDP across many).

A trainer builds its model, optimizer and data, opens its run folder (`open_run`, `tidy_run`), then hands
`TrainLoop` three callables and runs it from the step it resumes at:

    step(step) -> (losses, info)   one optimizer step from `step` (0-based): this process's losses (a dict
                                   with "loss"; the loop averages them over processes) and values logged
                                   as they are (the learning rate, the gradient norm)
    evaluate(step) -> dict         after step `step` (1-based), every `eval_every` steps and at the last:
                                   what to add to that step's metrics row ({} on processes that skip it)
    save(step)                     write RUN/checkpoints/step-N (`save_checkpoint`); main process only

The loop owns the rest: the stop signals (`StopFlag`), one all-reduce a step, the progress bar with the
losses and a rate, RUN/metrics.jsonl (one row per step) and the trackers (TensorBoard where the trainer's
Accelerator has one), the checkpoint cadence (every `checkpoint_every` steps, at the last and at a stop),
and the final export of the last checkpoint into the run folder (`export_latest`).
"""

from __future__ import annotations

import atexit
import gc
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from genie2.errors import InputError
from genie2.train.run import METRICS_FILE, StopFlag, export_latest, latest_checkpoint


def make_accelerator(out: Path, cpu: bool, mixed_precision: str, grad_accum: int = 1, log_with: str | None = None):
    """An Accelerator for one run: DDP across processes, `log_with`'s tracker (if any) writing to RUN/logs."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState, DistributedType

    if AcceleratorState._shared_state.get("distributed_type") == DistributedType.NO:
        # Accelerate keeps one device and precision per process, and one process may run two trainers (the
        # demo trains the tokenizer, then the world model): on a single process each run sets its own
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(
        cpu=cpu,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=grad_accum,
        log_with=log_with,
        project_dir=str(out),
        # some parameters sit out some steps (the null action token when no clip drops its actions,
        # the tokenizer's codebook before quantization starts)
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def float32_accelerator(out: Path, device: str | None, batch_size: int):
    """The Accelerator of a frame model's run (tokenizer, LAM): on the CPU when `device` is "cpu", else on
    the GPU Accelerate picks (CUDA_VISIBLE_DEVICES chooses which; by default the GPU when there is one), in
    float32 (bf16 autocast for VQ codebook distances and their seeding is untried); once the batch is known
    to split evenly over its processes."""
    from genie2.helpers import resolve_device

    accelerator = make_accelerator(out, cpu=resolve_device(device).type == "cpu", mixed_precision="no")
    if batch_size % accelerator.num_processes:
        raise InputError(f"batch_size {batch_size} must divide by processes = {accelerator.num_processes}")
    return accelerator


@dataclass
class Run:
    """What every trainer's run holds; each trainer's run adds its own parts and the step,
    evaluation and checkpoint the loop calls."""

    accelerator: Any
    config: Any  # the trainer's config dataclass
    model: Any  # prepared: DDP-wrapped across processes
    optimizer: Any
    dataset: Any  # the training ClipDataset

    @property
    def unwrapped(self):
        """The model itself, without the DDP wrapper."""
        return self.accelerator.unwrap_model(self.model)


@dataclass
class Schedule:
    """How long a run trains, how often it checkpoints and evaluates, and what its rate counts."""

    steps: int
    checkpoint_every: int
    eval_every: int
    per_step: int  # how many `unit` one step trains on (the global batch's)
    unit: str  # "tokens": the rows' tokens_per_s and the bar's tokens/s

    def due(self, step: int, every: int) -> bool:
        """Whether something done every `every` steps (and at the last) is due after `step`."""
        return step % every == 0 or step == self.steps


@dataclass
class TrainLoop:
    """One run's loop over a trainer's step, evaluation and checkpoint (see the module docstring)."""

    accelerator: Any
    out: Path
    schedule: Schedule
    step: Callable[[int], tuple[dict, dict]]
    evaluate: Callable[[int], dict]
    save: Callable[[int], None]
    export: tuple[str, ...]  # the checkpoint's files the run folder links to at the end
    name: str  # what trains, for the progress bar and messages: "world-model", "tokenizer"
    progress: bool = True
    # a time.time() to finish by: every REPLAN_EVERY steps the run re-plans its last step to what its
    # measured rate fits before it, and tells the trainer (`replan(steps)`, e.g. for its learning rate)
    deadline: float | None = None
    replan: Callable[[int], None] | None = None

    replanned: bool = field(default=False, init=False)

    REPLAN_EVERY: ClassVar[int] = 10

    def run(self, start: int) -> None:
        """Train from step `start` to the last step, then export the last checkpoint into the run folder."""
        accelerator, schedule = self.accelerator, self.schedule
        accelerator.init_trackers("logs")
        show = self.progress and accelerator.is_main_process
        bar = tqdm(total=schedule.steps, initial=start, desc=self.name, unit="step", disable=not show)
        step, done, clock = start, 0, time.perf_counter()
        with bar, StopFlag() as stop:
            while step < schedule.steps:
                losses, info = self.step(step)
                stopping, losses = self._share(stop.raised, losses)
                if not math.isfinite(losses["loss"]):
                    kept = "the last checkpoint is kept" if latest_checkpoint(self.out) else "no checkpoint was written"
                    raise FloatingPointError(f"non-finite {self.name} loss at step {step}; {kept}")
                step, done = step + 1, done + 1
                rate = done * schedule.per_step / (time.perf_counter() - clock)
                bar.update(1)
                bar.set_postfix({**{k: f"{v:.4g}" for k, v in losses.items()}, f"{schedule.unit}/s": f"{rate:.0f}"})
                row = {"step": step, **losses, **info, f"{schedule.unit}_per_s": rate}
                if self.deadline is not None and done % self.REPLAN_EVERY == 0:
                    self._fit_deadline(step, (time.perf_counter() - clock) / done, bar)
                if schedule.due(step, schedule.eval_every):
                    row.update(self.evaluate(step))
                self._log(row)
                if schedule.due(step, schedule.checkpoint_every) or stopping:
                    self._checkpoint(step)
                if stopping:
                    raise KeyboardInterrupt(f"stopped at step {step}; the checkpoint there is kept")
        _end(accelerator)
        if accelerator.is_main_process:
            export_latest(self.out, self.export)

    def _fit_deadline(self, step: int, seconds_per_step: float, bar) -> None:
        """Shorten the run to the steps that fit before the deadline at the rate measured so far (the same
        on every process: the smallest fit wins)."""
        fit = step + max(0, int((self.deadline - time.time()) / seconds_per_step))
        fit = int(self.accelerator.gather(torch.tensor([fit], device=self.accelerator.device)).min())
        if fit >= self.schedule.steps:
            return
        self.schedule.steps = max(step, fit)
        bar.total = self.schedule.steps
        if self.replan is not None:
            self.replan(self.schedule.steps)
        if self.accelerator.is_main_process and not self.replanned:
            tqdm.write(f"{self.name}: slower than planned ({seconds_per_step:.2f} s/step); "
                       f"re-planned to {self.schedule.steps} steps to finish in time")  # fmt: skip
        self.replanned = True

    def _share(self, stop: bool, losses: dict) -> tuple[bool, dict]:
        """Whether any process was signalled to stop, and the losses averaged over processes (the global batch's).

        One all-reduce a step: a stop signal or a non-finite loss on any process stops every process after
        this same step (one that stopped alone would wait at the checkpoint's barrier while the others wait
        for it in the next gradient all-reduce)."""
        shared = torch.tensor([stop, *losses.values()], device=self.accelerator.device)
        shared = self.accelerator.reduce(shared, "sum").tolist()
        processes = self.accelerator.num_processes
        return shared[0] > 0, {k: v / processes for k, v in zip(losses, shared[1:], strict=True)}

    def _log(self, row: dict) -> None:
        """One step's row: to the trackers and to RUN/metrics.jsonl (main process)."""
        self.accelerator.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])
        if self.accelerator.is_main_process:
            with (self.out / METRICS_FILE).open("a") as log:
                log.write(json.dumps(row) + "\n")

    def _checkpoint(self, step: int) -> None:
        """The trainer's checkpoint of `step`, written by the main process while the others wait."""
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            self.save(step)
        self.accelerator.wait_for_everyone()  # no process leaves before the checkpoint is whole


def _end(accelerator) -> None:
    """Finish the trackers; leave the process group (when there is one) at exit.

    Not now, as `end_training` would: the trainer's DDP-wrapped model, freed when it returns, would then
    hold the group's last reference, and its destructor joins gloo's threads while holding the GIL they
    wait for, a hang at exit (pytorch/pytorch#56297). At exit the model is gone first."""
    for tracker in accelerator.trackers:
        tracker.finish()
    if torch.distributed.is_initialized():
        atexit.unregister(_leave_process_group)  # once, however many runs this process trains
        atexit.register(_leave_process_group)


def _leave_process_group() -> None:
    """Destroy the process group once nothing else holds it (see `_end`)."""
    gc.collect()  # a DDP model kept alive by a reference cycle goes first
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
