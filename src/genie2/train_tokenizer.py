"""Train the frame tokenizer on a dataset's frames: `genie2 train-tokenizer`.

The run folder ends up as a tokenizer checkpoint (config.json + model.safetensors, loaded
by `Tokenizer.from_pretrained(out)`), with checkpoints/ for resuming, samples/ (originals
above reconstructions, PNG), metrics.jsonl and eval.json.

Dimension legend: b batch, t time, H W frame size.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from genie2.checkpoint import latest_checkpoint, load_state, save_checkpoint
from genie2.data.clips import ClipDataset
from genie2.presets import TOKENIZER_PRESETS
from genie2.tokenizer import CONFIG_FILE, WEIGHTS_FILE, Tokenizer, TokenizerConfig, codebook_stats, psnr


@dataclass
class TokenizerTraining:
    """How to train a tokenizer; saved with every checkpoint."""

    model: TokenizerConfig = field(default_factory=TokenizerConfig)
    steps: int = 2500
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 500
    checkpoint_every: int = 250
    val_frames: int = 512
    ae_warmup: float = 0.45  # this fraction of the steps trains without quantization, then the codebook is seeded

    @classmethod
    def preset(cls, name: str, **overrides) -> TokenizerTraining:
        """A preset by name with some fields overridden (None values are ignored)."""
        if name not in TOKENIZER_PRESETS:
            raise ValueError(f"unknown tokenizer preset {name!r}; presets: {sorted(TOKENIZER_PRESETS)}")
        values = TOKENIZER_PRESETS[name]()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def from_dict(cls, data: dict) -> TokenizerTraining:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["model"] = TokenizerConfig(**values["model"])
        return cls(**values)


def lr_at(step: int, config: TokenizerTraining) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))


class FrameBatches:
    """Seeded, resumable batches of single frames: epoch e visits frames in the order of
    randperm(seed + e), so (epoch, position) says exactly where a run stopped."""

    def __init__(self, dataset: ClipDataset, batch_size: int, seed: int, epoch: int = 0, position: int = 0):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.epoch, self.position = epoch, position

    def next(self) -> torch.Tensor:
        """The next batch of frames (b 1 H W 3, uint8)."""
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        if self.position + self.batch_size > len(order):
            self.epoch, self.position = self.epoch + 1, 0
            return self.next()
        items = order[self.position : self.position + self.batch_size].tolist()
        self.position += self.batch_size
        return torch.stack([self.dataset[i]["frames"] for i in items])


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


def seed_codebook(tokenizer: Tokenizer, dataset: ClipDataset, seed: int, frames: int = 1024) -> None:
    """Seed the codebook from the warmed-up encoder's latents on `frames` training frames."""
    picks = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:frames].tolist()
    batch = torch.stack([dataset[i]["frames"] for i in picks])
    with torch.no_grad():
        latents = torch.cat([tokenizer.encode_latents(chunk) for chunk in batch.split(128)])
    tokenizer.init_codebook(latents.flatten(0, -2))


def save_samples(tokenizer: Tokenizer, frames: torch.Tensor, path: Path) -> None:
    """A PNG with frames in the top row and their reconstructions below."""
    with torch.no_grad():
        recon = tokenizer.decode(tokenizer.encode(frames)).cpu()
    top = frames[:, 0].numpy()
    bottom = (recon[:, 0].numpy() * 255).round().astype(np.uint8)
    grid = np.concatenate((np.concatenate(list(top), axis=1), np.concatenate(list(bottom), axis=1)), axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)


def train_tokenizer(
    data: str,
    out: str,
    config: TokenizerTraining,
    resume: bool = False,
    progress: bool = True,
    skip_corrupt: bool = False,
    device: str | None = None,
) -> dict:
    """Train (or resume) a tokenizer on the frames of `data`; returns the final eval."""
    out_dir = Path(out)
    checkpoint = latest_checkpoint(out_dir)
    if resume and checkpoint is None:
        raise FileNotFoundError(f"--resume: {out_dir} has no checkpoint to resume from")
    if not resume and out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} is not empty; pass --resume to continue that run, or choose a new --out")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dataset = ClipDataset(data, clip_frames=1, split="train", stride=1, skip_corrupt=skip_corrupt)
    if dataset.info.frame_size != config.model.frame_size:
        config.model = TokenizerConfig(**{**asdict(config.model), "frame_size": dataset.info.frame_size})
    val = val_frames(data, config.val_frames, skip_corrupt)

    torch.manual_seed(config.seed)
    tokenizer = Tokenizer(config.model).to(device)
    optimizer = torch.optim.AdamW(tokenizer.parameters(), lr=config.lr, weight_decay=0.0, betas=(0.9, 0.99))
    batches, step = FrameBatches(dataset, config.batch_size, config.seed), 0
    if resume:
        state = load_state(checkpoint)
        config = TokenizerTraining.from_dict(state["config"])
        tokenizer = Tokenizer.from_pretrained(checkpoint, device).train()
        optimizer = torch.optim.AdamW(tokenizer.parameters(), lr=config.lr, weight_decay=0.0, betas=(0.9, 0.99))
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        step = state["step"]
        batches = FrameBatches(dataset, config.batch_size, config.seed, state["epoch"], state["position"])
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.train()

    def checkpoint_now() -> None:
        state = dict(
            config=asdict(config),
            optimizer=optimizer.state_dict(),
            rng=torch.get_rng_state(),
            step=step,
            epoch=batches.epoch,
            position=batches.position,
        )
        save_checkpoint(out_dir, step, tokenizer, state)

    bar = tqdm(total=config.steps, initial=step, desc="train-tokenizer", unit="step", disable=not progress)
    start, seen = time.perf_counter(), 0
    with bar, (out_dir / "metrics.jsonl").open("a") as log:
        try:
            while step < config.steps:
                frames = batches.next()
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, config)
                warmup_steps = int(config.ae_warmup * config.steps)
                if step == warmup_steps and warmup_steps > 0:
                    seed_codebook(tokenizer, batches.dataset, config.seed)
                loss, parts = tokenizer(frames, quantize=step >= warmup_steps)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"non-finite tokenizer loss at step {step}; the last good checkpoint is kept"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(tokenizer.parameters(), config.grad_clip)
                optimizer.step()
                step, seen = step + 1, seen + frames.shape[0]
                batch_psnr = float(psnr(parts["recon"].flatten(0, 1).cpu(), frames.flatten(0, 1).float() / 255).mean())
                usage = codebook_stats(parts["codes"].cpu(), tokenizer.num_codes)["usage"]
                rate = seen / (time.perf_counter() - start)
                bar.set_postfix(
                    loss=f"{loss.item():.4f}", psnr=f"{batch_psnr:.1f}", usage=f"{usage:.0%}", fps=f"{rate:.0f}"
                )
                bar.update(1)
                record = dict(step=step, loss=loss.item(), psnr=batch_psnr, batch_usage=usage, frames_per_s=rate)
                if step % config.eval_every == 0 or step == config.steps:
                    record["val"] = evaluate(tokenizer, val)
                    save_samples(tokenizer, val[:8], out_dir / "samples" / f"step-{step:08d}.png")
                log.write(json.dumps(record) + "\n")
                log.flush()
                if step % config.checkpoint_every == 0 or step == config.steps:
                    checkpoint_now()
        except KeyboardInterrupt:  # Ctrl-C or SIGINT: keep the progress, then stop
            checkpoint_now()
            raise
    return export(out_dir, tokenizer, val)


def export(out_dir: Path, tokenizer: Tokenizer, val: torch.Tensor) -> dict:
    """Make the run folder itself a tokenizer checkpoint and write eval.json."""
    latest = latest_checkpoint(out_dir)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        tmp = out_dir / f".{name}.tmp"
        shutil.copyfile(latest / name, tmp)
        tmp.replace(out_dir / name)
    result = evaluate(tokenizer, val)
    result["parameters"] = sum(p.numel() for p in tokenizer.parameters())
    (out_dir / "eval.json").write_text(json.dumps(result, indent=2))
    return result
