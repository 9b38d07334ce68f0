"""Train the world model on pre-tokenized clips: `genie2 train`, on one CPU or many GPUs.

The same code runs under `python -m genie2.cli train ...` and `accelerate launch -m genie2.cli
train ...` (Hugging Face Accelerate: DDP across processes, bf16 autocast on GPUs, gradient
accumulation). Codes the dataset lacks are encoded first, on the main process. A stop signal
(SIGINT/SIGTERM) or a non-finite loss on any process stops every process after the same step.
The loop is the one every trainer shares (`genie2.train.loop`); this file supplies its step, its
evaluation and its checkpoint (`WorldRun`). A run folder holds:

    RUN/training.json        the resolved training config
    RUN/checkpoints/step-N/  config.json + model.safetensors (world model and its tokenizer) + trainer/,
                             dataset.json + start-frames.safetensors + training.json (for players and eval)
    RUN/config.json, RUN/model.safetensors   the final model (Genie2.from_pretrained(RUN)): with the
                             WORLD_FILES, links into RUN/.export, the last checkpoint's copy (export_latest)
    RUN/logs/                TensorBoard scalars (also RUN/metrics.jsonl, one row per step, global batch losses)
    RUN/samples/step-N.gif   a rollout from a validation prompt beside the ground truth

Dimension legend: b batch, t time, h w latent height and width, a keys per step.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from genie2.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from genie2.data.clips import ClipDataset
from genie2.data.codes import encode_dataset, weights_hash
from genie2.data.episode import atomic_write, episode_indices, episode_path
from genie2.errors import InputError
from genie2.helpers import to_uint8
from genie2.lam.label import check_same_actions, default_labels_dir, label_dataset
from genie2.model.config import Genie2Config
from genie2.model.genie2 import Genie2
from genie2.presets import WORLD_PRESETS, PresetConfig
from genie2.tokenizer.model import Tokenizer
from genie2.train.loop import Run, Schedule, TrainLoop, make_accelerator
from genie2.train.run import (
    SeededBatches,
    cosine_lr,
    open_run,
    resume_from,
    run_config,
    save_checkpoint,
    tidy_run,
    train_state,
)
from genie2.world import WORLD_FILES, write_world_files

OPTIMIZERS = ("adamw", "sgd")


@dataclass
class Training(PresetConfig):
    """How to train a world model; saved as RUN/training.json and with every checkpoint."""

    PRESETS: ClassVar[dict] = WORLD_PRESETS

    # Genie2Config fields to set (dim, depth, heads, ...); the tokenizer and the dataset give the rest
    model: dict = field(default_factory=dict)
    steps: int = 3000
    batch_size: int = 8  # clips per optimizer step, over all processes and accumulation steps
    grad_accum: int = 1
    clip_frames: int = 8
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 250
    keep_checkpoints: int = 2  # the newest checkpoints kept (at least 1: resuming needs one)
    eval_every: int = 500  # rollout GIF and validation loss
    val_clips: int = 32
    ema: float | None = None  # e.g. 0.999: keep an exponential moving average of the weights and export it
    # "sgd" is plain SGD (no momentum): its step is linear in the gradient, so runs whose gradients differ
    # by float noise stay that close (the tests compare runs with it); AdamW divides by the gradient's RMS,
    # which turns noise on a near-zero gradient into a whole step of size lr
    optimizer: str = "adamw"
    # the share of clips whose first frame reads "no key" (-1) as its action, as an episode's first frame
    # does: a session starts from a frame whose action is unknown, and with the keys only at episode
    # starts a model never learnt that context (the 2026-12-01 world did not turn right from it)
    first_no_key: float = 0.5

    def check(self) -> None:
        """Clear errors for settings that cannot train."""
        positive = ("steps", "batch_size", "grad_accum", "clip_frames", "checkpoint_every", "eval_every")
        for name in (*positive, "keep_checkpoints"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive int, got {value!r}")
        if self.clip_frames < 2:
            raise InputError("clip_frames must be >= 2: the model learns the next frame from earlier ones")
        if not isinstance(self.first_no_key, (int, float)) or not 0 <= self.first_no_key <= 1:
            raise InputError(f"first_no_key must be a share in [0, 1], got {self.first_no_key!r}")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        given = {f.name for f in fields(Genie2Config)} - {"dim_latent", "vq_codebook_size", "num_actions"}
        unknown = sorted(set(self.model) - given)
        if unknown:
            raise InputError(f"model has keys Genie2 does not take: {unknown}; it takes {sorted(given)}")


def collate(dataset: ClipDataset, items: list[int]) -> dict:
    """Stack clips into a batch: codes (b t h w), actions (b t a), video_time_len (b); rewards and
    terminated (b t) when the dataset reads them."""
    clips = [dataset[i] for i in items]
    stacked = ("codes", "actions", "rewards", "terminated")
    batch = {key: torch.stack([c[key] for c in clips]) for key in stacked if key in clips[0]}
    return batch | dict(video_time_len=torch.tensor([c["video_time_len"] for c in clips]))


def build_model(config: Training, tokenizer: Tokenizer, dataset: ClipDataset) -> Genie2:
    """The world model over the tokenizer's codes with the dataset's action space."""
    info = dataset.info
    multi = info.max_num_actions > 1
    extra = dict(allow_multiple_actions=True, max_num_actions=info.max_num_actions) if multi else {}
    # generation attends to as many past frames as the clips showed a frame in training, saved in its config
    extra["max_context_frames"] = config.clip_frames - 1
    return Genie2.from_tokenizer(tokenizer, num_actions=info.num_actions, **{**extra, **config.model})


def world_loss(model, batch: dict, device, drop_actions: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """The world-model loss on a batch and its parts (with the outcome heads' when the batch has rewards)."""
    total, (state, commit, action, *outcome) = model(
        state_codes=batch["codes"].to(device),
        actions=batch["actions"].to(device),
        video_time_len=batch["video_time_len"].to(device),
        drop_actions=drop_actions.to(device) if drop_actions is not None else None,
        rewards=batch.get("rewards"),
        terminated=batch.get("terminated"),
    )
    parts = dict(loss=total.item(), state_loss=state.item(), action_loss=action.item())
    return total, parts | ({"outcome_loss": outcome[0].item()} if outcome else {})


def train(
    data: str,
    codes: str,
    tokenizer_path: str,
    out: str,
    config: Training,
    resume: bool = False,
    progress: bool = True,
    skip_corrupt: bool = False,
    cpu: bool | None = None,
    steps: int | None = None,
    deadline: float | None = None,
    lam: str | None = None,
) -> Path:
    """Train (or resume) a world model; returns the run folder, itself a world-model checkpoint.
    Codes missing from `codes` are encoded first; resuming a run that has no whole checkpoint yet
    starts it again from step 0 (see `open_run`). With a `deadline` (a time.time()), a run slower
    than planned trains fewer steps, re-planned as it goes, to finish by then. With `lam` (a LAM folder) it
    trains on that LAM's latent actions instead of the episodes' own, labelling the missing ones first."""
    out_dir, (checkpoint, state) = Path(out), open_run(out, resume)
    config = run_config(config, state, steps)
    config.check()
    if state:
        check_same_actions(out_dir, lam)
    codes_missing = _codes_missing(data, codes, tokenizer_path)
    accelerator = _accelerator(config, out_dir, cpu)
    if accelerator.is_main_process:  # the others wait: one process writes the run folder and the codes
        tidy_run(out_dir, state)
        if codes_missing:
            encode_dataset(data, tokenizer_path, codes, skip_corrupt=skip_corrupt, progress=progress)
        if lam:  # resumable: only the episodes not labelled yet
            label_dataset(data, lam, skip_corrupt=skip_corrupt, progress=progress, device="cpu")
    accelerator.wait_for_everyone()
    actions = str(default_labels_dir(data, lam)) if lam else None
    clips = dict(
        skip_corrupt=skip_corrupt, codes=codes, outcomes=bool(config.model.get("learn_rewards")), actions=actions
    )
    dataset, val = (ClipDataset(data, config.clip_frames, split, **clips) for split in ("train", "val"))

    torch.manual_seed(config.seed)
    model = _model(config, tokenizer_path, dataset, checkpoint, state, data)

    def world_files(folder: Path) -> None:  # the config as it is then: a re-planned run saves its new steps
        write_world_files(folder, data, asdict(config), skip_corrupt, dataset.info)

    run, start = WorldRun.start(accelerator, config, model, dataset, val, state, out_dir, world_files)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(asdict(config), indent=2)
        atomic_write(out_dir / "training.json", lambda tmp: tmp.write_text(text))

    tokens_per_step = config.batch_size * config.clip_frames * (math.prod(model.tokenizer.latent_shape) + 1)
    schedule = Schedule(config.steps, config.checkpoint_every, config.eval_every, tokens_per_step, "tokens")
    names = (CONFIG_FILE, WEIGHTS_FILE, *WORLD_FILES)
    replan = partial(setattr, config, "steps")  # the learning rate's schedule follows the new last step
    loop = TrainLoop(accelerator, out_dir, schedule, run.step, run.evaluate, run.save, names, "world-model", progress,
                     deadline, replan)  # fmt: skip
    loop.run(start)
    return out_dir


def make_optimizer(config: Training, params: list) -> torch.optim.Optimizer:
    """The optimizer `config.optimizer` names: AdamW (the default) or plain SGD."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.95))


def _accelerator(config: Training, out_dir: Path, cpu: bool | None):
    """The run's Accelerator (bf16 autocast on GPUs, TensorBoard in RUN/logs), once the global batch is
    known to split evenly over its processes and accumulation steps."""
    cpu = not torch.cuda.is_available() if cpu is None else cpu
    accelerator = make_accelerator(out_dir, cpu, "no" if cpu else "bf16", config.grad_accum, "tensorboard")
    world = accelerator.num_processes * config.grad_accum
    if config.batch_size % world:
        raise InputError(f"batch_size {config.batch_size} must divide by processes x grad_accum = {world}")
    return accelerator


def _model(config: Training, tokenizer_path: str, dataset: ClipDataset, checkpoint, state, data: str) -> Genie2:
    """A new world model over the tokenizer, or the one resumed (its raw weights, with EMA)."""
    tokenizer = Tokenizer.from_pretrained(tokenizer_path)
    model = Genie2.from_pretrained(checkpoint) if state else build_model(config, tokenizer, dataset)
    if state and "raw" in state:  # with EMA the checkpoint holds the average; training resumes from the raw weights
        model.load_state_dict(state["raw"])
    if model.num_actions != dataset.info.num_actions:
        raise InputError(
            f"the model has {model.num_actions} actions but {data} has {dataset.info.num_actions}; "
            "train a new model for this dataset"
        )
    return model


@dataclass
class WorldRun(Run):
    """A world-model run's parts, with the step, evaluation and checkpoint the shared loop calls."""

    val: ClipDataset
    batches: SeededBatches
    ema: Any  # torch's AveragedModel, or None
    out: Path
    world_files: Callable[[Path], None]  # writes what players and eval read beside a checkpoint's model

    @classmethod
    def start(cls, accelerator, config: Training, model: Genie2, dataset, val, state, out: Path, world_files):
        """The run's parts at step 0, or at the step `state` was saved at; and that step."""
        model.train()
        optimizer = make_optimizer(config, [p for p in model.parameters() if p.requires_grad])
        batches = SeededBatches(len(dataset), config.batch_size, config.seed)
        step = resume_from(state, optimizer, batches) if state else 0
        ema = None
        if config.ema:  # torch's AveragedModel with an EMA update
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
            if state:
                ema.module.load_state_dict(state["ema"])
                ema.n_averaged.copy_(state["ema_count"])
        model, optimizer = accelerator.prepare(model, optimizer)
        return cls(accelerator, config, model, optimizer, dataset, val, batches, ema, out, world_files), step

    def step(self, step: int) -> tuple[dict, dict]:
        """One optimizer step on this process's share of the global batch: its losses; the gradient
        norm, the seconds it took and the learning rate."""
        config, rank, processes = self.config, self.accelerator.process_index, self.accelerator.num_processes
        # classifier-free action dropout drawn per clip of the global batch, so it does not depend
        # on how the batch is split over processes
        drop = torch.rand(config.batch_size, generator=torch.Generator().manual_seed(config.seed * 100_003 + step))
        drop = drop < self.unwrapped.cfg_train_action_dropout
        no_key = torch.rand(config.batch_size, generator=torch.Generator().manual_seed(2 * step + 1 + config.seed))
        no_key = no_key < config.first_no_key  # per clip of the global batch, like the dropout
        items, drop, no_key = self.batches.next()[rank::processes], drop[rank::processes], no_key[rank::processes]
        lr = cosine_lr(step, config.lr, config.warmup, config.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        losses, grad_norm = self._update(items, drop, no_key, step)
        if self.ema is not None:
            self.ema.update_parameters(self.unwrapped)
        return losses, dict(grad_norm=grad_norm, step_seconds=time.perf_counter() - start, lr=lr)

    def _update(self, items: list, drop: torch.Tensor, no_key: torch.Tensor, step: int) -> tuple[dict, float]:
        """The optimizer step on this process's share of a batch (`items`, in grad_accum micro-batches;
        the clips `no_key` marks read "no key" for their first frame): its mean losses and the gradient
        norm before clipping."""
        accelerator, config = self.accelerator, self.config
        per_micro = config.batch_size // (accelerator.num_processes * config.grad_accum)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]  # the trainable ones
        means, grad_norm = {}, math.nan
        for micro in range(config.grad_accum):
            with accelerator.accumulate(self.model):
                part = slice(micro * per_micro, (micro + 1) * per_micro)
                batch = collate(self.dataset, items[part])
                batch["actions"][no_key[part], 0] = -1
                loss, parts = world_loss(self.model, batch, accelerator.device, drop[part])
                if _test_nan_at(accelerator.process_index, step):
                    loss, parts = loss * math.nan, dict(parts, loss=math.nan)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    grad_norm = float(accelerator.clip_grad_norm_(params, config.grad_clip))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            means = {k: means.get(k, 0.0) + v / config.grad_accum for k, v in parts.items()}
        return means, grad_norm

    @torch.no_grad()
    def evaluate(self, step: int) -> dict:
        """Validation losses (`val_losses`) and a rollout GIF from a validation prompt beside the
        ground truth, on the main process ({} on the others)."""
        if not self.accelerator.is_main_process:
            return {}
        model, device = self.unwrapped, self.accelerator.device
        scalars = val_losses(model, self.val, self.config.val_clips, device)
        model.eval()
        clip = self.val[0]  # the first of the clips val_losses reads
        codes, actions = clip["codes"][None].to(device), clip["actions"][None].to(device)
        length = clip["video_time_len"]
        truth = model.tokenizer.decode(codes[:, :length])[0]
        image = truth[:1].permute(0, 3, 1, 2)  # b c H W
        dream = model.generate(image, length - 1, actions=actions[:, :length], temperature=0.0)
        dream = dream[0].permute(1, 2, 3, 0)  # t H W c
        save_side_by_side(truth.cpu(), dream.cpu(), self.out / "samples" / f"step-{step:08d}.gif")
        model.train()
        return scalars

    def save(self, step: int) -> None:
        """Write checkpoints/step-N: the model (with EMA, the average), the world files and the trainer state."""
        state, model = train_state(step, self.config, self.optimizer, self.batches), self.unwrapped
        if self.ema is not None:  # the checkpoint's model is the average; the raw weights go with the state
            state["ema"] = self.ema.module.state_dict()
            state["raw"], state["ema_count"] = model.state_dict(), self.ema.n_averaged
            model = self.ema.module
        save_checkpoint(self.out, step, model, state, self.config.keep_checkpoints, self.world_files)


def _test_nan_at(rank: int, step: int) -> bool:
    """TEST HOOK: GENIE2_TEST_NAN_AT=RANK:STEP turns that process's loss at that step (0-based) into NaN,
    so tests/test_train.py can check that every process stops together. Unset in real runs."""
    return os.environ.get("GENIE2_TEST_NAN_AT") == f"{rank}:{step}"


def _codes_missing(data: str, codes: str, tokenizer_path: str) -> bool:
    """Whether `codes` lacks codes.json or some episode's codes; refuses codes made by another
    tokenizer than the one given."""
    meta_file = Path(codes) / "codes.json"
    if not meta_file.is_file():
        return True
    meta = json.loads(meta_file.read_text())
    if meta.get("tokenizer_sha256") != weights_hash(tokenizer_path):
        raise InputError(
            f"{codes} was encoded with another tokenizer ({meta.get('tokenizer')}); "
            "pass --codes with a new folder, or leave it out to use DATA/codes/<this tokenizer's hash>"
        )
    return any(not (Path(codes) / episode_path(data, index).name).is_file() for index in episode_indices(data))


@torch.no_grad()
def val_losses(model: Genie2, val: ClipDataset, clips: int, device) -> dict:
    """Validation losses over `clips` clips spread through `val`, and how much the actions tell
    the model (`val_action_gain`: the state loss with the actions hidden minus with them, nats
    per code, 0 while the model ignores the keys)."""
    was_training = model.training
    model.eval()
    items = np.linspace(0, len(val) - 1, min(clips, len(val))).round().astype(int).tolist()
    batches = [collate(val, items[i : i + 8]) for i in range(0, len(items), 8)]
    losses = [world_loss(model, batch, device)[1] for batch in batches]
    scalars = {f"val_{k}": float(np.mean([loss[k] for loss in losses])) for k in losses[0]}
    if model.num_actions is not None:
        blind = []
        for batch in batches:  # the same clips with every action hidden (the null action)
            hidden = torch.ones(len(batch["codes"]), dtype=torch.bool)
            blind.append(world_loss(model, batch, device, hidden)[1]["state_loss"])
        scalars["val_action_gain"] = float(np.mean(blind)) - scalars["val_state_loss"]
    model.train(was_training)
    return scalars


def save_side_by_side(truth: torch.Tensor, dream: torch.Tensor, path: Path, scale: int = 2) -> None:
    """A GIF with ground truth (left) and the model's rollout (right); frames t H W 3 in [0, 1]."""
    import imageio.v3 as iio

    frames = torch.cat((truth, torch.ones_like(truth[:, :, :2]), dream), dim=2)
    frames = to_uint8(frames).numpy()
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    atomic_write(path, lambda tmp: iio.imwrite(tmp, frames, extension=".gif", duration=200, loop=0))
