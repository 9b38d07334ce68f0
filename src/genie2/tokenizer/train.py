"""Train the frame tokenizer on a dataset's frames: `genie2 train-tokenizer`.

The run folder ends up as a tokenizer checkpoint (config.json + model.safetensors, links into
the last checkpoint's copy in .export, loaded by `Tokenizer.from_pretrained(out)`), with
checkpoints/ for resuming, samples/ (originals above reconstructions, PNG), metrics.jsonl and
eval.json.

Dimension legend: b batch, t time, H W frame size.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from genie2.data.clips import ClipDataset
from genie2.data.episode import atomic_write
from genie2.errors import InputError
from genie2.evaluate import psnr
from genie2.helpers import to_uint8
from genie2.presets import TOKENIZER_PRESETS, PresetConfig
from genie2.tokenizer.model import CONFIG_FILE, WEIGHTS_FILE, Tokenizer, TokenizerConfig, codebook_stats
from genie2.train.run import (
    SeededBatches,
    StopFlag,
    cosine_lr,
    export_latest,
    latest_checkpoint,
    open_run,
    rng_state,
    save_checkpoint,
    set_rng_state,
    tidy_run,
)


@dataclass
class TokenizerTraining(PresetConfig):
    """How to train a tokenizer; saved with every checkpoint."""

    PRESETS: ClassVar[dict] = TOKENIZER_PRESETS

    model: TokenizerConfig = field(default_factory=TokenizerConfig)
    steps: int = 2500
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    seed: int = 0
    eval_every: int = 500
    checkpoint_every: int = 250
    val_frames: int = 512
    grad_clip: float = 1.0
    ae_warmup: float = 0.45  # this fraction of the steps trains without quantization, then the codebook is seeded

    def __post_init__(self):
        if isinstance(self.model, dict):  # from saved JSON
            self.model = TokenizerConfig(**self.model)


class FrameBatches(SeededBatches):
    """Seeded, resumable batches of single frames (b 1 H W 3, uint8) from a dataset."""

    def __init__(self, dataset: ClipDataset, batch_size: int, seed: int, epoch: int = 0, position: int = 0):
        super().__init__(len(dataset), batch_size, seed, epoch, position)
        self.dataset = dataset

    def next(self) -> torch.Tensor:
        """The next batch of frames."""
        return torch.stack([self.dataset[i]["frames"] for i in super().next()])


def val_frames(data: str, count: int, skip_corrupt: bool = False) -> torch.Tensor:
    """Up to `count` validation frames (n 1 H W 3), evenly spread over the split."""
    dataset = ClipDataset(data, clip_frames=1, split="val", stride=1, skip_corrupt=skip_corrupt)
    picks = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
    return torch.stack([dataset[int(i)]["frames"] for i in picks])


@torch.no_grad()
def evaluate(tokenizer: Tokenizer, frames: torch.Tensor, batch_size: int = 64) -> dict:
    """PSNR (dB), codebook usage and perplexity, and encode+decode frames/s on `frames`."""
    was_training = tokenizer.training
    tokenizer.eval()
    scores, codes, start = [], [], time.perf_counter()
    for chunk in frames.split(batch_size):
        chunk_codes = tokenizer.encode(chunk)
        recon = tokenizer.decode(chunk_codes)
        scores.append(psnr(recon.flatten(0, 1).cpu(), chunk.flatten(0, 1).float() / 255))
        codes.append(chunk_codes.cpu())
    seconds = time.perf_counter() - start
    tokenizer.train(was_training)
    stats = codebook_stats(torch.cat(codes), tokenizer.num_codes)
    return dict(psnr=float(torch.cat(scores).mean()), **stats, frames_per_s=len(frames) / seconds)


def seed_codebook(tokenizer: Tokenizer, dataset: ClipDataset, seed: int, batch_size: int, frames: int = 1024) -> None:
    """Seed the codebook from the warmed-up encoder's latents on `frames` training frames."""
    picks = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:frames].tolist()
    batch = torch.stack([dataset[i]["frames"] for i in picks])
    with torch.no_grad():
        latents = torch.cat([tokenizer.encode_latents(chunk) for chunk in batch.split(128)])
    h, w = tokenizer.latent_shape
    tokenizer.init_codebook(latents.flatten(0, -2), batch_tokens=batch_size * h * w)


def save_samples(tokenizer: Tokenizer, frames: torch.Tensor, path: Path) -> None:
    """A PNG with frames in the top row and their reconstructions below."""
    with torch.no_grad():
        recon = tokenizer.decode(tokenizer.encode(frames)).cpu()
    top = frames[:, 0].numpy()
    bottom = to_uint8(recon[:, 0]).numpy()
    grid = np.concatenate((np.concatenate(list(top), axis=1), np.concatenate(list(bottom), axis=1)), axis=0)
    image = Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def check_training(config: TokenizerTraining) -> None:
    """Clear errors for settings that cannot train."""
    for name in ("steps", "batch_size", "eval_every", "checkpoint_every", "val_frames"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive int, got {value!r}")
    if not 0.0 <= config.ae_warmup < 1.0:
        raise InputError(f"ae_warmup must be in [0, 1), got {config.ae_warmup!r}")
    if config.model.temporal:
        raise InputError("train-tokenizer trains on single frames; temporal=True tokenizers are not supported yet")


def train_tokenizer(
    data: str,
    out: str,
    config: TokenizerTraining,
    resume: bool = False,
    progress: bool = True,
    skip_corrupt: bool = False,
    device: str | None = None,
    steps: int | None = None,
) -> dict:
    """Train (or resume) a tokenizer on the frames of `data`; returns the final eval. When
    resuming, the run's saved config is used; `steps` may extend it. Resuming a run that has no
    whole checkpoint yet starts it again from step 0 (see `open_run`)."""
    out_dir, (checkpoint, state) = Path(out), open_run(out, resume)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if state:
        config = TokenizerTraining.from_dict(state["config"])
    config.steps = steps or config.steps
    check_training(config)
    dataset = ClipDataset(data, clip_frames=1, split="train", stride=1, skip_corrupt=skip_corrupt)
    if dataset.info.frame_size != config.model.frame_size:
        config.model = TokenizerConfig(**{**asdict(config.model), "frame_size": dataset.info.frame_size})
    val = val_frames(data, config.val_frames, skip_corrupt)

    torch.manual_seed(config.seed)
    tokenizer = Tokenizer.from_pretrained(checkpoint, device) if state else Tokenizer(config.model).to(device)
    tokenizer.train()
    optimizer = torch.optim.AdamW(tokenizer.parameters(), lr=config.lr, weight_decay=0.0, betas=(0.9, 0.99))
    batches, step = FrameBatches(dataset, config.batch_size, config.seed), 0
    if state:
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        step = state["step"]
        batches = FrameBatches(dataset, config.batch_size, config.seed, state["epoch"], state["position"])
    tidy_run(out_dir, state)
    out_dir.mkdir(parents=True, exist_ok=True)

    def checkpoint_now() -> None:
        position = dict(step=step, epoch=batches.epoch, position=batches.position)
        state = dict(config=asdict(config), optimizer=optimizer.state_dict(), rng=rng_state(), **position)
        save_checkpoint(out_dir, step, tokenizer, state)

    warmup_steps = int(config.ae_warmup * config.steps)
    bar = tqdm(total=config.steps, initial=step, desc="train-tokenizer", unit="step", disable=not progress)
    start, seen = time.perf_counter(), 0
    with bar, StopFlag() as stop, (out_dir / "metrics.jsonl").open("a") as log:
        while step < config.steps:
            if step == warmup_steps and warmup_steps > 0:
                seed_codebook(tokenizer, dataset, config.seed, config.batch_size)
            frames, lr = batches.next(), cosine_lr(step, config.lr, config.warmup, config.steps)
            record = train_step(tokenizer, optimizer, frames, lr, step >= warmup_steps, config.grad_clip)
            if not math.isfinite(record["loss"]):
                kept = "the last checkpoint is kept" if latest_checkpoint(out_dir) else "no checkpoint was written"
                raise FloatingPointError(f"non-finite tokenizer loss at step {step}; {kept}")
            step, seen = step + 1, seen + config.batch_size
            record.update(step=step, frames_per_s=seen / (time.perf_counter() - start))
            bar.update(1)
            bar.set_postfix({k: f"{record[k]:.4g}" for k in ("loss", "psnr", "batch_usage", "frames_per_s")})
            if step % config.eval_every == 0 or step == config.steps:
                record["val"] = evaluate(tokenizer, val)
                save_samples(tokenizer, val[:8], out_dir / "samples" / f"step-{step:08d}.png")
            log.write(json.dumps(record) + "\n")
            log.flush()
            if step % config.checkpoint_every == 0 or step == config.steps or stop.raised:
                checkpoint_now()
            if stop.raised:
                raise KeyboardInterrupt(f"stopped at step {step}; the checkpoint there is kept")
    return export(out_dir, tokenizer, val)


def train_step(tokenizer: Tokenizer, optimizer, frames: torch.Tensor, lr: float, quantize: bool, clip: float) -> dict:
    """One optimisation step on a batch of frames; returns loss, PSNR and codebook usage."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss, parts = tokenizer(frames, quantize=quantize)
    optimizer.zero_grad(set_to_none=True)
    if torch.isfinite(loss):
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tokenizer.parameters(), clip)
        optimizer.step()
    target = frames.flatten(0, 1).float() / 255
    return dict(
        loss=loss.item(),
        psnr=float(psnr(parts["recon"].flatten(0, 1).cpu(), target).mean()),
        batch_usage=codebook_stats(parts["codes"].cpu(), tokenizer.num_codes)["usage"] if quantize else 0.0,
    )


def export(out_dir: Path, tokenizer: Tokenizer, val: torch.Tensor) -> dict:
    """Make the run folder itself a tokenizer checkpoint and write eval.json."""
    export_latest(out_dir, (CONFIG_FILE, WEIGHTS_FILE))
    result = evaluate(tokenizer, val)
    result["parameters"] = sum(p.numel() for p in tokenizer.parameters())
    atomic_write(out_dir / "eval.json", lambda tmp: tmp.write_text(json.dumps(result, indent=2)))
    return result
