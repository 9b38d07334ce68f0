"""How faithful and how controllable is a world model: `genie2 eval`.

`evaluate_world` rolls out held-out
episodes with their real actions and with random ones and reports, per horizon step,
PSNR and SSIM (torchmetrics) against the real frames, the tokenizer's own reconstruction
(the ceiling) and Genie's controllability metric, delta PSNR (arXiv 2402.15391): PSNR with
the real actions minus PSNR with random actions.

Dimension legend: k prompt frames, H horizon, h w frame height and width, a keys per step.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from einops import rearrange, reduce
from torch import Tensor
from tqdm.auto import tqdm

from genie2.checkpoint import WEIGHTS_FILE
from genie2.data.clips import episode_files, split_episodes
from genie2.data.episode import DatasetInfo, Episode, atomic_write, episode_indices, episode_length
from genie2.errors import InputError
from genie2.helpers import to_uint8
from genie2.model.config import check_positive_int
from genie2.model.decoding import Rollout, Sampling
from genie2.model.masking import decode_passes, raster_fill

REPORT_VERSION = 1


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """Peak signal-to-noise ratio (dB) per item of frames in [0, 1] (n ...), capped at 100 dB
    (identical frames); `pred` is clamped to [0, 1] first."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    dims = tuple(range(1, pred.ndim))
    value = peak_signal_noise_ratio(
        pred.clamp(0, 1).float(), target.float(), data_range=1.0, reduction="none", dim=dims
    )
    return value.clamp(max=100.0).nan_to_num(100.0, posinf=100.0)


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Per-frame mean squared error of uint8 frames (n h w 3), on the [0, 1] scale."""
    return ((pred.float() - target.float()) / 255).square().flatten(1).mean(-1)


BAD_PIXEL = 40  # of 255: a pixel further off than this is visibly wrong (a sprite's edge, its colour)


def bad_tiles(pred: Tensor, target: Tensor, tile: int = 8) -> Tensor:
    """The sprite-level error: per frame of uint8 frames (n h w 3), the share of its tile x tile
    squares with a pixel off by more than BAD_PIXEL. A sprite covering 1.5% of a frame barely
    moves PSNR; drawn wrong, it is one bad tile in 64."""
    h, w = pred.shape[1] - pred.shape[1] % tile, pred.shape[2] - pred.shape[2] % tile  # whole tiles only
    error = (pred[:, :h, :w].int() - target[:, :h, :w].int()).abs()
    worst = reduce(error, "n (h p) (w q) c -> n h w", "max", p=tile, q=tile)
    return (worst > BAD_PIXEL).float().flatten(1).mean(-1)


def psnr_of_mean_mse(mse_per_step: Tensor) -> Tensor:
    """PSNR (dB, capped at 100) of the mean error over episodes (episodes H -> H): averaging errors
    first keeps one identical frame (PSNR capped at 100) from lifting a whole step's mean."""
    return (10 * torch.log10(1 / mse_per_step.mean(0).clamp(min=1e-10))).clamp(max=100.0)


def psnr_ssim(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Per-frame PSNR (dB, capped at 100) and SSIM of uint8 frames (n h w 3)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    x = rearrange(pred.float() / 255, "n h w c -> n c h w")
    y = rearrange(target.float() / 255, "n h w c -> n c h w")
    return psnr(x, y), structural_similarity_index_measure(x, y, data_range=1.0, reduction="none")


class CopyLastFrame:
    """A baseline world: every dreamed frame is the last prompt frame."""

    def rollout(self, prompt_frames, actions, temperature=0.0, seed=0, decode_steps=None, raster=None, cond_scale=1.0):
        prompt = torch.as_tensor(np.asarray(prompt_frames))
        return prompt[-1:].expand(len(actions) - len(prompt), -1, -1, -1).clone()


@torch.no_grad()
def reconstructed(tokenizer, frames: Tensor) -> Tensor:
    """A tokenizer's own reconstruction of real frames (t h w 3 uint8): what a world that predicts every
    code right dreams, the ceiling of any world behind that tokenizer."""
    return to_uint8(tokenizer.decode(tokenizer.encode(frames[None]))[0]).cpu()


def eval_episodes(data: str | Path, split: str, count: int, length: int, skip_corrupt: bool = False) -> list[Path]:
    """Up to `count` episode files of a split with at least `length` frames."""
    chosen = set(split_episodes(episode_indices(data), split))
    found = [path for index, path in episode_files(data, skip_corrupt) if index in chosen]
    long_enough = [p for p in found if episode_length(p) >= length]  # headers only; episodes load once, later
    if not long_enough:
        raise InputError(f"no {split} episode of {data} has {length} frames (prompt + horizon); lower --horizon")
    return long_enough[:count]


def randomised_actions(actions: Tensor, k: int, num_actions: int, rng: np.random.Generator) -> Tensor:
    """`actions` (t a) with every step after the first k replaced by one uniformly random key."""
    drawn = actions.clone()
    drawn[k:, 0] = torch.from_numpy(rng.integers(0, num_actions, len(actions) - k))
    drawn[k:, 1:] = -1
    return drawn


def check_actions_match(model, action_map, info: DatasetInfo, data) -> None:
    """A clear error where the data's actions are not the ones the world plays (a world of latent actions
    plays the real ones of its `action_map`)."""
    played = len(action_map.from_action) if action_map is not None else model.num_actions if model else None
    if info.num_actions == 0:
        raise InputError(
            f"{data} has no action labels (a video imported without --actions): evaluate on labelled episodes"
        )
    if played is not None and played != info.num_actions:
        raise InputError(f"the world plays {played} actions but {data} has {info.num_actions}")


def evaluate_world(
    world,
    data: str | Path,
    split: str = "val",
    episodes: int = 16,
    horizon: int = 16,
    prompt_frames: int = 1,
    seed: int = 0,
    progress: bool = True,
    skip_corrupt: bool = False,
    decode_steps: int | None = None,
    raster: str | None = None,
    cond_scale: float = 1.0,
) -> dict:
    """Roll out held-out episodes with real and random actions; every number of the report. Frames decode
    as `decode_steps` (a parallel model's passes; None: its own) and `raster` (Sampling.raster; None: its own)
    say, guided toward the actions by `cond_scale` (1: no guidance)."""
    for name, value in (("episodes", episodes), ("horizon", horizon), ("prompt_frames", prompt_frames)):
        check_positive_int(name, value)
    info, model, action_map = DatasetInfo.load(data), getattr(world, "model", None), getattr(world, "action_map", None)
    check_actions_match(model, action_map, info, data)
    tile = model.tokenizer.config.downsample if model is not None else 8  # bad_tiles' squares: one code's
    k, rng = prompt_frames, np.random.default_rng(seed)
    scores: dict[str, list] = {}
    videos, seconds, dreamed = [], 0.0, 0
    paths = eval_episodes(data, split, episodes, k + horizon, skip_corrupt)
    decoding_knobs = dict(decode_steps=decode_steps, raster=raster, cond_scale=cond_scale)
    for path in tqdm(paths, desc="eval", disable=not progress):
        episode = Episode.load(path)
        frames = torch.from_numpy(episode.frames[: k + horizon])
        actions = torch.from_numpy(episode.actions[: k + horizon])
        random_actions = randomised_actions(actions, k, info.num_actions, rng)
        start = time.perf_counter()
        real = world.rollout(frames[:k], actions, seed=seed, **decoding_knobs)
        seconds, dreamed = seconds + time.perf_counter() - start, dreamed + horizon
        fake = world.rollout(frames[:k], random_actions, seed=seed, **decoding_knobs)
        truth = frames[k:]
        copy = frames[k - 1 : k].expand(horizon, -1, -1, -1)  # the do-nothing baseline: the last real frame
        predictions = {"": real, "_random": fake, "_copy": copy}
        if model is not None:  # the tokenizer's own reconstruction: the ceiling
            predictions["tokenizer"] = reconstructed(model.tokenizer, truth)
        for kind, pred in predictions.items():
            _score(scores, kind, pred, truth, tile)
        if len(videos) < 4:
            videos.append(torch.cat((truth, real, fake), dim=2))  # side by side: truth | real actions | random
    per_step = {name: torch.stack(v) for name, v in scores.items()}  # episodes H
    per_step["delta_psnr"] = per_step["psnr"] - per_step["psnr_random"]
    return dict(
        version=REPORT_VERSION,
        episodes=len(per_step["psnr"]),
        horizon=horizon,
        prompt_frames=k,
        **decoding_report(model, decode_steps, raster, cond_scale),
        **summarise(per_step),
        frames_per_s=dreamed / seconds,
        videos=videos,
        outcomes=outcome_scores(model, paths, progress, action_map),
    )


def decoding_report(model, decode_steps: int | None, raster: str | None, cond_scale: float) -> dict:
    """How a report's frames were decoded: the model's mode, its passes a frame, the raster fill and the
    guidance scale (None where the world has no model, as CopyLastFrame)."""
    if model is None:
        return dict(decoding=None, decode_steps=None, raster=None, cond_scale=cond_scale)
    steps, fill = decode_passes(model, decode_steps), raster_fill(model, raster)
    return dict(decoding=model.decoding, decode_steps=steps, raster=fill, cond_scale=cond_scale)


@torch.no_grad()
def outcome_scores(model, paths: list[Path], progress: bool = True, action_map=None) -> dict | None:
    """How well a model's outcome heads (learn_rewards) tell rewards and episode ends on whole
    episodes, each frame teacher-forced through the rollout a WorldEnv steps: precision and recall of
    the frames with a positive reward (the goal reached) and of the frames that end an episode, with
    how many there were; None for a model without the heads. A world of latent actions takes the
    episodes' real actions through its `action_map`."""
    from torchmetrics.functional.classification import binary_precision, binary_recall

    if getattr(model, "outcomes", None) is None:
        return None
    predicted, real = {"reward": [], "end": []}, {"reward": [], "end": []}
    for path in tqdm(paths, desc="eval rewards", disable=not progress):
        episode = Episode.load(path)
        video = rearrange(torch.from_numpy(episode.frames), "t h w c -> 1 c t h w").to(model.device)
        _, codes, _ = model.encode_state(video.float() / 255)
        actions = torch.from_numpy(episode.actions).long()
        actions = (action_map.from_actions(actions) if action_map is not None else actions)[None].to(model.device)
        rollout = Rollout(model, codes[:, :1], actions[:, :1], Sampling(temperature=0.0, raster="speculative"), False)
        for t in range(1, codes.shape[1]):  # a frame's reward is received on arriving at it
            rollout.step(actions[:, t], codes=codes[:, t])
            sign, ended = rollout.outcome()
            predicted["reward"].append(sign > 0)
            predicted["end"].append(ended)
        real["reward"].append(torch.from_numpy(episode.rewards[1:] > 0))
        real["end"].append(torch.from_numpy(episode.terminated[1:]))
    scores = {}
    for name in ("reward", "end"):
        guess, truth = torch.cat(predicted[name]).cpu().long(), torch.cat(real[name]).long()
        scores |= {
            f"{name}_precision": float(binary_precision(guess, truth)),
            f"{name}_recall": float(binary_recall(guess, truth)),
        }
        scores[f"{name}_frames"] = int(truth.sum())
    return scores


def summarise(per_step: dict[str, Tensor]) -> dict:
    """The report's metrics from per-episode scores (episodes H each): the mean, spread and overall mean
    of each, and per step the PSNR of the episodes' mean error (what the plot draws; see psnr_of_mean_mse)."""
    return dict(
        metrics={
            name: dict(mean=v.mean(0).tolist(), std=v.std(0, unbiased=False).tolist(), overall=float(v.mean()))
            for name, v in per_step.items()
        },
        psnr_of_mean_mse={
            name.replace("mse", "psnr"): psnr_of_mean_mse(v).tolist() for name, v in per_step.items() if "mse" in name
        },
    )


def _score(scores: dict, kind: str, pred: Tensor, truth: Tensor, tile: int) -> None:
    """Add one episode's per-frame PSNR, SSIM, MSE and bad tiles of `pred` to `scores` under `kind`'s
    names (psnr, psnr_random, psnr_copy, tokenizer_psnr, ...)."""
    psnr, ssim = psnr_ssim(pred, truth)
    metrics = (("psnr", psnr), ("ssim", ssim), ("mse", mse(pred, truth)), ("bad_tiles", bad_tiles(pred, truth, tile)))
    for metric, value in metrics:
        name = f"tokenizer_{metric}" if kind == "tokenizer" else f"{metric}{kind}"
        scores.setdefault(name, []).append(value)


def write_report(report: dict, out: str | Path, checkpoint: str | Path | None, config: dict) -> Path:
    """report.json, psnr.png (PSNR, SSIM and delta PSNR against the horizon) and rollouts.gif into `out`."""
    import imageio.v3 as iio
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    videos = report.pop("videos")
    weights = Path(checkpoint) / WEIGHTS_FILE if checkpoint else None
    report["checkpoint"] = str(checkpoint) if checkpoint else None
    report["checkpoint_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest() if weights else None
    report["config"] = config
    atomic_write(out / "report.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2)))

    figure = plot_report(report, plt)
    atomic_write(out / "psnr.png", lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    plt.close(figure)

    if videos:
        frames = torch.cat(videos, dim=1).numpy().repeat(2, axis=1).repeat(2, axis=2)
        atomic_write(out / "rollouts.gif", lambda tmp: iio.imwrite(tmp, frames, extension=".gif", duration=200, loop=0))
    return out


LINES = (("", "real actions"), ("_random", "random actions"), ("_copy", "copy the last real frame"))


def plot_report(report: dict, plt):
    """Three panels against the horizon step: PSNR of the episodes' mean error (averaging PSNRs
    would let frames the copy baseline matches exactly, capped at 100 dB, stretch the axis), SSIM
    (mean and spread over episodes), and delta PSNR, the controllability, on its own axis."""
    steps, metrics = np.arange(1, report["horizon"] + 1), report["metrics"]
    figure, (psnr_axis, ssim_axis, delta_axis) = plt.subplots(1, 3, figsize=(15, 4))
    for kind, label in (*LINES, ("tokenizer", "tokenizer ceiling")):
        name = "tokenizer_psnr" if kind == "tokenizer" else f"psnr{kind}"
        if name in report.get("psnr_of_mean_mse", {}):
            psnr_axis.plot(steps, report["psnr_of_mean_mse"][name], label=label)
        name = "tokenizer_ssim" if kind == "tokenizer" else f"ssim{kind}"
        if name in metrics:
            mean, std = np.array(metrics[name]["mean"]), np.array(metrics[name]["std"])
            ssim_axis.plot(steps, mean, label=label)
            ssim_axis.fill_between(steps, mean - std, mean + std, alpha=0.2)
    mean, std = np.array(metrics["delta_psnr"]["mean"]), np.array(metrics["delta_psnr"]["std"])
    delta_axis.plot(steps, mean, label="real minus random actions")
    delta_axis.fill_between(steps, mean - std, mean + std, alpha=0.2)
    delta_axis.axhline(0.0, color="grey", linewidth=0.8)
    for axis, ylabel in ((psnr_axis, "PSNR of mean MSE (dB)"), (ssim_axis, "SSIM"), (delta_axis, "delta PSNR (dB)")):
        axis.set_xlabel("horizon step")
        axis.set_ylabel(ylabel)
        axis.legend()
    figure.tight_layout()
    return figure
