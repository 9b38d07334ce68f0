"""Train the latent action model on a dataset's consecutive frames: `genie2 train-lam`.

The run folder ends up as a LAM checkpoint (config.json + model.safetensors, loaded by
`LatentActionModel.from_pretrained(out)` or `genie2.load_lam(out)`), with checkpoints/ for resuming,
samples/ (PNG: frame t, frame t+1 and the prediction from the inferred latent action for 8 pairs,
then one frame under each latent action), metrics.jsonl, TensorBoard logs and eval.json. The data's
action labels are never trained on: where a dataset has them, each evaluation also scores how the
latent actions agree with them (`genie2.lam.agreement`). It runs on the loop every trainer shares
(`genie2.train.loop`).

Dimension legend: b batch, t time (2: a frame and the next), H W frame size, k latent actions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image

from genie2.checkpoint import CONFIG_FILE, WEIGHTS_FILE, config_from_dict
from genie2.data.clips import ClipDataset
from genie2.data.episode import atomic_write
from genie2.errors import InputError
from genie2.evaluate import psnr
from genie2.helpers import to_uint8
from genie2.lam.agreement import agreement, fit_table, visibly_changed
from genie2.lam.model import LAMConfig, LatentActionModel, collapse, vocabulary_stats
from genie2.presets import LAM_PRESETS, PresetConfig
from genie2.tokenizer.train import FrameBatches
from genie2.train.loop import Run, Schedule, TrainLoop, float32_accelerator
from genie2.train.run import (
    cosine_lr,
    open_run,
    resume_from,
    run_config,
    save_checkpoint,
    tidy_run,
    train_state,
    write_eval,
)


@dataclass
class LAMTraining(PresetConfig):
    """How to train a latent action model; saved with every checkpoint."""

    PRESETS: ClassVar[dict] = LAM_PRESETS

    model: LAMConfig = field(default_factory=LAMConfig)
    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-4
    warmup: int = 100
    seed: int = 0
    eval_every: int = 500
    checkpoint_every: int = 250
    val_pairs: int = 1024
    grad_clip: float = 1.0

    def __post_init__(self):
        if isinstance(self.model, dict):  # from saved JSON
            self.model = config_from_dict(LAMConfig, self.model)


def val_pairs(data: str, count: int, skip_corrupt: bool = False, split: str = "val") -> dict:
    """Up to `count` consecutive frame pairs (n 2 H W 3, uint8) of a split, evenly spread over it, with the
    action between each pair's frames (n,; -1 where the data has none, or several keys a step)."""
    dataset = ClipDataset(data, clip_frames=2, split=split, stride=1, skip_corrupt=skip_corrupt)
    picks = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
    items = [item for i in picks if (item := dataset[int(i)])["video_time_len"] == 2]  # not a one-frame episode
    if not items:
        raise InputError(f"{data} has no two consecutive frames in its {split} split to validate a LAM on")
    actions = torch.stack([item["actions"][1, 0] for item in items])  # the key leading into frame t+1
    if dataset.info.max_num_actions != 1:
        actions = torch.full_like(actions, -1)
    return dict(frames=torch.stack([item["frames"] for item in items]), actions=actions, info=dataset.info)


@torch.no_grad()
def evaluate(lam: LatentActionModel, pairs: dict, batch_size: int = 256) -> dict:
    """On frame pairs (`val_pairs`): the PSNR of the predicted next frame and of copying frame t, the
    vocabulary's use (and a collapse warning), and, where the pairs have true actions, their agreement
    with the latent ones (on the labelled pairs) under the best latent -> action table for these pairs."""
    frames, actions = pairs["frames"], pairs["actions"]
    latents = lam.infer(frames, batch_size)[:, 0]
    chunks = zip(frames.split(batch_size), latents.split(batch_size), strict=True)
    predicted = torch.cat([lam.predict(chunk[:, 0], ids).cpu() for chunk, ids in chunks])
    target = frames[:, 1].float() / 255
    stats = vocabulary_stats(latents, lam.num_actions)
    scores = dict(
        psnr=float(psnr(predicted, target).mean()), copy_psnr=float(psnr(frames[:, 0].float() / 255, target).mean())
    )
    scores.update(stats, collapsed=collapse(stats) is not None)
    labelled = actions >= 0  # steps with a true action to agree with (none in a video without a log)
    if labelled.any():
        latents, actions, frames = latents[labelled], actions[labelled], frames[labelled]
        changed = visibly_changed(frames[:, 0], frames[:, 1])
        num_actions = pairs["info"].num_actions
        table = fit_table(latents, actions, changed, lam.num_actions, num_actions)
        found = agreement(latents, actions, changed, table, num_actions)
        scores.update(nmi=found["nmi"], mapped_accuracy=found["mapped_accuracy"])
    return scores


def save_samples(lam: LatentActionModel, frames: torch.Tensor, path: Path) -> None:
    """A PNG: frame t, frame t+1 and the prediction from its inferred latent action for each pair (three
    rows), then the first pair's frame t under each latent action (the last row)."""
    with torch.no_grad():
        latents = lam.infer(frames)[:, 0]
        predicted = to_uint8(lam.predict(frames[:, 0], latents).cpu())
        every = torch.arange(lam.num_actions)
        each = to_uint8(lam.predict(frames[:1, 0].expand(len(every), -1, -1, -1), every).cpu())
    rows = [frames[:, 0], frames[:, 1], predicted, each]
    width = max(len(row) for row in rows)
    rows = [torch.cat((row, row.new_zeros((width - len(row), *row.shape[1:]))), 0) for row in rows]
    grid = torch.cat([torch.cat(list(row), dim=1) for row in rows], dim=0).numpy()
    image = Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def check_training(config: LAMTraining) -> None:
    """Clear errors for settings that cannot train."""
    for name in ("steps", "batch_size", "eval_every", "checkpoint_every", "val_pairs"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive int, got {value!r}")
    if not config.lr > 0:
        raise InputError(f"lr must be > 0, got {config.lr!r}")


def train_lam(
    data: str,
    out: str,
    config: LAMTraining,
    resume: bool = False,
    progress: bool = True,
    skip_corrupt: bool = False,
    device: str | None = None,
    steps: int | None = None,
) -> dict:
    """Train (or resume) a latent action model on the consecutive frames of `data` (its action labels
    unused); returns the final eval. Resuming uses the run's saved config; `steps` may extend it."""
    out_dir, (checkpoint, state) = Path(out), open_run(out, resume)
    config = run_config(config, state, steps)
    check_training(config)
    accelerator = float32_accelerator(out_dir, device, config.batch_size)
    dataset = ClipDataset(data, clip_frames=2, split="train", stride=1, skip_corrupt=skip_corrupt)
    if dataset.info.frame_size != config.model.frame_size:
        config.model = LAMConfig(**{**asdict(config.model), "frame_size": dataset.info.frame_size})
    val = val_pairs(data, config.val_pairs, skip_corrupt)

    torch.manual_seed(config.seed)
    run, start = LAMRun.start(accelerator, config, dataset, val, checkpoint, state, out_dir)
    if accelerator.is_main_process:  # the others wait: one process writes the run folder
        tidy_run(out_dir, state)
        out_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    schedule = Schedule(config.steps, config.checkpoint_every, config.eval_every, config.batch_size, "pairs")
    names = (CONFIG_FILE, WEIGHTS_FILE)
    TrainLoop(accelerator, out_dir, schedule, run.step, run.evaluate, run.save, names, "LAM", progress).run(start)
    return run.final_eval()


@dataclass
class LAMRun(Run):
    """A LAM run's parts, with the step, evaluation and checkpoint the shared loop calls."""

    batches: FrameBatches
    val: dict  # validation pairs (`val_pairs`)
    out: Path

    @classmethod
    def start(cls, accelerator, config: LAMTraining, dataset, val, checkpoint, state, out: Path):
        """The run's parts at step 0, or at the step `state` was saved at; and that step."""
        lam = LatentActionModel.from_pretrained(checkpoint) if state else LatentActionModel(config.model)
        lam.train()
        optimizer = torch.optim.AdamW(lam.parameters(), lr=config.lr, weight_decay=0.0, betas=(0.9, 0.99))
        rank, processes = accelerator.process_index, accelerator.num_processes
        batches = FrameBatches(dataset, config.batch_size, config.seed, rank, processes)
        step = resume_from(state, optimizer, batches) if state else 0
        model, optimizer = accelerator.prepare(lam, optimizer)
        return cls(accelerator, config, model, optimizer, dataset, batches, val, out), step

    def step(self, step: int) -> tuple[dict, dict]:
        """One optimizer step on this process's share of a batch of frame pairs: the loss, its parts and
        the batch's vocabulary use."""
        config, frames = self.config, self.batches.next()
        lr = cosine_lr(step, config.lr, config.warmup, config.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, parts = self.model(frames)
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)  # non-finite too: the loop stops the run before it is saved
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()
        usage = vocabulary_stats(parts["ids"].cpu(), self.unwrapped.num_actions)
        losses = dict(loss=loss.item(), recon=parts["recon"].item(), commit=parts["commit"].item())
        return losses, dict(lr=lr, batch_perplexity=usage["perplexity"])

    def evaluate(self, step: int) -> dict:
        """The validation scores (`evaluate`) and a PNG of samples, on the main process ({} on the others)."""
        if not self.accelerator.is_main_process:
            return {}
        self.unwrapped.eval()
        scores = evaluate(self.unwrapped, self.val)
        save_samples(self.unwrapped, self.val["frames"][:8], self.out / "samples" / f"step-{step:08d}.png")
        self.unwrapped.train()
        return {"val": scores}

    def save(self, step: int) -> None:
        """Write checkpoints/step-N: the LAM and the trainer state."""
        save_checkpoint(self.out, step, self.unwrapped, train_state(step, self.config, self.optimizer, self.batches))

    def final_eval(self) -> dict:
        """The trained LAM's validation scores and size, also written to RUN/eval.json (main process; {} on
        the others); warns when its vocabulary collapsed."""
        if not self.accelerator.is_main_process:
            return {}
        self.unwrapped.eval()
        result = evaluate(self.unwrapped, self.val)
        result["parameters"] = sum(p.numel() for p in self.unwrapped.parameters())
        if warning := collapse(result):
            print(f"warning: {warning}")
        return write_eval(self.out, result)
