"""Command-line pieces every verb module shares: argparse types and the flags several verbs take."""

from __future__ import annotations

import argparse
import math

from genie2.data.envs import DEFAULT_ENV, PRESETS


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    if not text.strip().lstrip("+").isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def finite_float(text: str) -> float:
    """argparse type: a finite number (NaN and inf are refused)."""
    if not math.isfinite(value := float(text)):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


# flags several verbs share, each with one help text
SHARED = {
    "--skip-corrupt": dict(action="store_true", help="skip damaged episode files with a warning (default: stop)"),
    "--quiet": dict(action="store_true", help="no progress bars (default: shown)"),
    "--device": dict(help="cpu or cuda (default: cuda if available, else cpu; CUDA_VISIBLE_DEVICES=N picks the GPU)"),
    "--resume": dict(
        action="store_true",
        help="continue the run in --out from its last checkpoint (--steps may extend it; its other settings are "
        "the run's); a run killed before its first checkpoint (or a new --out) starts from step 0, its leftover "
        "metrics, logs and samples removed; a folder holding other files is refused",
    ),
    "--raster": dict(
        choices=["sequential", "speculative", "diagonal"],
        help="how a raster model fills a frame (default: the world's own, saved in its config): sequential, one "
        "code a pass; speculative, whole-frame passes over the previous frame as a draft, the same codes in fewer "
        "passes where little changes; diagonal, at least one anti-diagonal of codes a pass (at most h + w - 1 "
        "passes; approximate)",
    ),
    "--cond-scale": dict(
        type=finite_float,
        default=1.0,
        help="classifier-free guidance scale on the action (default 1: no guidance; above 1 the action counts "
        "more, at twice the compute a frame)",
    ),
}
DECODE_STEPS = "passes per frame of a parallel (MaskGIT) model: fewer passes, faster frames"
ENV = f"a preset ({', '.join(PRESETS)}) or any Gymnasium env id with rgb_array frames (default {DEFAULT_ENV})"
WORLD = (
    "a shipped world (minigrid, crafter, minigrid-latent) or a world-model run or checkpoint folder from genie2 train"
)


def add_shared(p: argparse.ArgumentParser, *flags: str) -> None:
    """Add flags several verbs share (SHARED) to a verb's parser."""
    for flag in flags:
        p.add_argument(flag, **SHARED[flag])
