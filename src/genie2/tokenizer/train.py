"""Train the frame tokenizer on a dataset's frames: `genie2 train-tokenizer`.

The run folder ends up as a tokenizer checkpoint (config.json + model.safetensors, links into
the last checkpoint's copy in .export, loaded by `Tokenizer.from_pretrained(out)`), with
checkpoints/ for resuming, samples/ (originals above reconstructions, PNG), metrics.jsonl and
eval.json. It runs on the loop every trainer shares (`genie2.train.loop`, on Hugging Face Accelerate:
one CPU or GPU, or DDP under `accelerate launch`); this file supplies its step, its evaluation and its
checkpoint (`TokenizerRun`).

Dimension legend: b batch, t time, H W frame size.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from genie2.checkpoint import CONFIG_FILE, WEIGHTS_FILE, config_from_dict
from genie2.data.clips import ClipDataset
from genie2.data.episode import atomic_write
from genie2.errors import InputError
from genie2.evaluate import bad_tiles, psnr
from genie2.helpers import to_uint8
from genie2.presets import TOKENIZER_PRESETS, PresetConfig
from genie2.tokenizer.model import Tokenizer, TokenizerConfig, codebook_stats
from genie2.train.loop import Run, Schedule, TrainLoop, float32_accelerator
from genie2.train.run import (
    SeededBatches,
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
    # this share of each batch is drawn in proportion to `patch_rarity`, so every distinct f x f patch
    # content (a sprite state in 1 frame of 1,000) is seen about as often as the floor; the rest uniformly
    rare_share: float = 0.0

    def __post_init__(self):
        if isinstance(self.model, dict):  # from saved JSON
            self.model = config_from_dict(TokenizerConfig, self.model)


class FrameBatches(SeededBatches):
    """Seeded, resumable batches of single frames (b 1 H W 3, uint8) from a dataset: of each batch, the
    share of process `rank` of `processes`. With `weights`, the first `rare` items of each batch are
    drawn in proportion to them instead (a draw seeded by where the run is, so resuming repeats it)."""

    def __init__(
        self, dataset: ClipDataset, batch_size: int, seed: int, rank: int = 0, processes: int = 1, weights=None, rare=0
    ):
        super().__init__(len(dataset), batch_size, seed)
        self.dataset, self.rank, self.processes = dataset, rank, processes
        self.rare = rare if weights is not None else 0
        # what rng.choice(p=weights) searches, worked out once rather than every batch: the same draws
        cumulative = weights.cumsum() if self.rare else None
        self.cumulative = cumulative / cumulative[-1] if self.rare else None

    def next(self) -> torch.Tensor:
        """This process's frames of the next batch."""
        items = super().next()
        if self.rare:
            uniform = np.random.default_rng([self.seed, self.epoch, self.position]).random(self.rare)
            items[: self.rare] = self.cumulative.searchsorted(uniform, side="right").tolist()
        return torch.stack([self.dataset[i]["frames"] for i in items[self.rank :: self.processes]])


def patch_rarity(dataset: ClipDataset, f: int) -> np.ndarray:
    """Per frame of a single-frame dataset, the sum over its f x f patches of 1 / (how often that patch's
    content occurs in the dataset): each distinct content weighs 1 in all, so frames drawn in proportion
    show every content about equally often. Normalised to sum to 1; contents are told apart by a 64-bit hash."""
    multiplier = np.random.default_rng(0).integers(1, 2**63, size=f * f * 3, dtype=np.uint64) | np.uint64(1)
    hashes = []
    for position, index in enumerate(dataset.episodes):
        frames = dataset._file(index).get_slice("frames")[: dataset.lengths[position]]
        patches = rearrange(frames, "t (h p) (w q) c -> t (h w) (p q c)", p=f, q=f).astype(np.uint64)
        hashes.append(patches @ multiplier)
    hashes = np.concatenate(hashes)
    if len(hashes) != len(dataset):
        raise ValueError("patch_rarity needs a dataset of single frames at stride 1")
    _, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    weights = (1.0 / counts[inverse.reshape(hashes.shape)]).sum(1)
    return weights / weights.sum()


def val_frames(data: str, count: int, skip_corrupt: bool = False, split: str = "val") -> torch.Tensor:
    """Up to `count` frames (n 1 H W 3) of a split (default the validation one), evenly spread over it."""
    dataset = ClipDataset(data, clip_frames=1, split=split, stride=1, skip_corrupt=skip_corrupt)
    picks = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
    return torch.stack([dataset[int(i)]["frames"] for i in picks])


@torch.no_grad()
def evaluate(tokenizer: Tokenizer, frames: torch.Tensor, batch_size: int = 64) -> dict:
    """PSNR (dB), the sprite-level error (share of bad f x f tiles, `evaluate.bad_tiles`), codebook
    usage and perplexity, and encode+decode frames/s on `frames`."""
    was_training = tokenizer.training
    tokenizer.eval()
    scores, bad, codes, start = [], [], [], time.perf_counter()
    for chunk in frames.split(batch_size):
        chunk_codes = tokenizer.encode(chunk)
        recon = tokenizer.decode(chunk_codes).flatten(0, 1).cpu()
        scores.append(psnr(recon, chunk.flatten(0, 1).float() / 255))
        bad.append(bad_tiles(to_uint8(recon), chunk.flatten(0, 1), tokenizer.config.downsample))
        codes.append(chunk_codes.cpu())
    seconds = time.perf_counter() - start
    tokenizer.train(was_training)
    stats = codebook_stats(torch.cat(codes), tokenizer.num_codes)
    scores = dict(psnr=float(torch.cat(scores).mean()), bad_tiles=float(torch.cat(bad).mean()))
    return dict(scores, **stats, frames_per_s=len(frames) / seconds)


def seed_codebook(
    tokenizer: Tokenizer, dataset: ClipDataset, seed: int, batch_size: int, frames: int = 4096, max_latents: int = 65536
) -> None:
    """Seed the codebook from the warmed-up encoder's latents of the distinct f x f patches of `frames`
    training frames (at most `max_latents` of them): one latent per patch content, so a sprite in one
    tile of a thousand weighs in k-means++ as much as the floor does, and gets a code of its own."""
    picks = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:frames].tolist()
    batch = torch.stack([dataset[i]["frames"] for i in picks])  # n 1 H W 3
    with torch.no_grad():
        latents = torch.cat([tokenizer.encode_latents(chunk) for chunk in batch.split(128)]).flatten(0, -2)
    f = tokenizer.config.downsample
    patches = rearrange(batch, "n t (h p) (w q) c -> (n t h w) (p q c)", p=f, q=f)
    distinct = first_of_each(torch.unique(patches, dim=0, return_inverse=True)[1])
    distinct = distinct[torch.randperm(len(distinct), generator=torch.Generator().manual_seed(seed))[:max_latents]]
    h, w = tokenizer.latent_shape
    tokenizer.init_codebook(latents[distinct.to(latents.device)], batch_tokens=batch_size * h * w)


def first_of_each(inverse: torch.Tensor) -> torch.Tensor:
    """The index of each value's first occurrence in `inverse` (as torch.unique's return_inverse gives)."""
    positions = torch.arange(len(inverse))
    first = torch.full((int(inverse.max()) + 1,), len(inverse))
    return first.scatter_reduce_(0, inverse, positions, "amin")


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
    if not 0.0 <= config.rare_share <= 1.0:
        raise InputError(f"rare_share must be in [0, 1], got {config.rare_share!r}")
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
    config = run_config(config, state, steps)
    check_training(config)
    accelerator = float32_accelerator(out_dir, device, config.batch_size)
    dataset = ClipDataset(data, clip_frames=1, split="train", stride=1, skip_corrupt=skip_corrupt)
    if dataset.info.frame_size != config.model.frame_size:
        config.model = TokenizerConfig(**{**asdict(config.model), "frame_size": dataset.info.frame_size})
    val = val_frames(data, config.val_frames, skip_corrupt)

    torch.manual_seed(config.seed)
    run, start = TokenizerRun.start(accelerator, config, dataset, val, checkpoint, state, out_dir)
    if accelerator.is_main_process:  # the others wait: one process writes the run folder
        tidy_run(out_dir, state)
        out_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    schedule = Schedule(config.steps, config.checkpoint_every, config.eval_every, config.batch_size, "frames")
    names = (CONFIG_FILE, WEIGHTS_FILE)
    loop = TrainLoop(accelerator, out_dir, schedule, run.step, run.evaluate, run.save, names, "tokenizer", progress)
    loop.run(start)
    return run.final_eval()


@dataclass
class TokenizerRun(Run):
    """A tokenizer run's parts, with the step, evaluation and checkpoint the shared loop calls."""

    batches: FrameBatches
    val: torch.Tensor  # validation frames (n 1 H W 3)
    out: Path

    @classmethod
    def start(cls, accelerator, config: TokenizerTraining, dataset, val, checkpoint, state, out: Path):
        """The run's parts at step 0, or at the step `state` was saved at; and that step."""
        tokenizer = Tokenizer.from_pretrained(checkpoint) if state else Tokenizer(config.model)
        tokenizer.train()
        optimizer = torch.optim.AdamW(tokenizer.parameters(), lr=config.lr, weight_decay=0.0, betas=(0.9, 0.99))
        rank, processes = accelerator.process_index, accelerator.num_processes
        rare = round(config.rare_share * config.batch_size)
        weights = patch_rarity(dataset, config.model.downsample) if rare else None
        batches = FrameBatches(dataset, config.batch_size, config.seed, rank, processes, weights, rare)
        step = resume_from(state, optimizer, batches) if state else 0
        model, optimizer = accelerator.prepare(tokenizer, optimizer)
        return cls(accelerator, config, model, optimizer, dataset, batches, val, out), step

    def step(self, step: int) -> tuple[dict, dict]:
        """One optimizer step on this process's share of a batch: its loss, PSNR and codebook usage."""
        config = self.config
        warmup_steps = int(config.ae_warmup * config.steps)
        if step == warmup_steps and warmup_steps > 0:  # the autoencoder has warmed up: quantize from here on
            seed_codebook(self.unwrapped, self.dataset, config.seed, config.batch_size)
        frames, lr = self.batches.next(), cosine_lr(step, config.lr, config.warmup, config.steps)
        quantize = step >= warmup_steps
        return train_step(self.model, self.optimizer, frames, lr, quantize, config.grad_clip, self.accelerator), {}

    def evaluate(self, step: int) -> dict:
        """The validation scores (`evaluate`) and a PNG of reconstructions, on the main process ({} on the others)."""
        if not self.accelerator.is_main_process:
            return {}
        scores = evaluate(self.unwrapped, self.val)
        save_samples(self.unwrapped, self.val[:8], self.out / "samples" / f"step-{step:08d}.png")
        return {"val": scores}

    def save(self, step: int) -> None:
        """Write checkpoints/step-N: the tokenizer and the trainer state."""
        save_checkpoint(self.out, step, self.unwrapped, train_state(step, self.config, self.optimizer, self.batches))

    def final_eval(self) -> dict:
        """The trained tokenizer's validation scores and size, also written to RUN/eval.json (by the
        main process; the others return {})."""
        if not self.accelerator.is_main_process:
            return {}
        result = evaluate(self.unwrapped, self.val)
        result["parameters"] = sum(p.numel() for p in self.unwrapped.parameters())
        return write_eval(self.out, result)


def train_step(
    tokenizer: Tokenizer, optimizer, frames: torch.Tensor, lr: float, quantize: bool, clip: float, accelerator=None
) -> dict:
    """One optimisation step on a batch of frames; returns loss, PSNR and codebook usage. `tokenizer`
    and `optimizer` may be the ones `accelerator` prepared (DDP across processes)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss, parts = tokenizer(frames, quantize=quantize)
    optimizer.zero_grad(set_to_none=True)
    # a non-finite loss goes backward too: under DDP a process that skipped it would leave the others
    # waiting in the gradient all-reduce; the loop stops the run before such a step is saved
    accelerator.backward(loss) if accelerator else loss.backward()
    torch.nn.utils.clip_grad_norm_(tokenizer.parameters(), clip)
    optimizer.step()
    num_codes = (accelerator.unwrap_model(tokenizer) if accelerator else tokenizer).num_codes
    target = frames.flatten(0, 1).float() / 255
    return dict(
        loss=loss.item(),
        psnr=float(psnr(parts["recon"].flatten(0, 1).cpu(), target).mean()),
        batch_usage=codebook_stats(parts["codes"].cpu(), num_codes)["usage"] if quantize else 0.0,
    )
