"""Tokenizer quality and speed on the default env: collect, train with a preset, evaluate on
the held-out validation episodes. Prints a table, writes JSON.

    python benchmarks/tokenizer.py                      # cpu preset, 60 episodes of MiniGrid DoorKey, patch encoder
    python benchmarks/tokenizer.py --encoder conv       # the strided-conv encoder (the default before the patch one)
    python benchmarks/tokenizer.py --preset gpu --device cuda --out benchmarks/results/tokenizer-cuda.json
    python benchmarks/tokenizer.py --data demo/data --steps 2636 --hard-tile-share 0 \
        --out benchmarks/results/tokenizer-ablation-cpu.jsonl   # one row of an ablation (a .jsonl gets a line)
    python benchmarks/tokenizer.py --data crafter --eval-data crafter-heldout --preset crafter-cpu \
        --steps 3000 --codebook-size 512 --out benchmarks/results/tokenizer-crafter-cpu.jsonl  # scored on held-out ones

On MiniGrid frames (64x64) it also draws every DoorKey sprite state through the tokenizer and counts
those drawn wrong (genie2.data.sprites).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from report import write_report

from genie2.data.collect import collect
from genie2.data.envs import DEFAULT_ENV
from genie2.data.sprites import sprite_report
from genie2.tokenizer.model import ENCODERS, Tokenizer
from genie2.tokenizer.train import TokenizerTraining, evaluate, train_tokenizer, val_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default=DEFAULT_ENV, help="preset or Gymnasium env id")
    parser.add_argument("--episodes", type=int, default=60, help="episodes to collect (10%% held out)")
    parser.add_argument("--preset", default="cpu", help="tokenizer preset")
    parser.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    parser.add_argument(
        "--encoder", choices=ENCODERS, default="patch", help="patch: each code from its own patch; conv: strided convs"
    )
    parser.add_argument("--hard-tile-share", type=float, default=None, help="override the preset's hard_tile_share")
    parser.add_argument("--ae-warmup", type=float, default=None, help="override the preset's ae_warmup")
    parser.add_argument("--rare-share", type=float, default=None, help="override the preset's rare_share")
    parser.add_argument(
        "--dead-code-threshold", type=float, default=None, help="override the preset's dead_code_threshold"
    )
    parser.add_argument("--codebook-size", type=int, default=None, help="override the preset's VQ codebook size")
    parser.add_argument("--quantizer", choices=["vq", "fsq"], default=None, help="override the preset's quantizer")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--data", default=None, help="use this dataset instead of collecting one")
    parser.add_argument(
        "--eval-data", default=None, help="score on all of this dataset's episodes (default: --data's validation split)"
    )
    parser.add_argument("--val-frames", type=int, default=2048, help="validation frames to score")
    parser.add_argument(
        "--out", default=None, help="where to write the JSON (default benchmarks/results/tokenizer-ENCODER-cpu.json)"
    )
    args = parser.parse_args()
    args.out = args.out or f"benchmarks/results/tokenizer-{args.encoder}-cpu.json"

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or str(Path(tmp) / "data")
        if not args.data:
            collect(data, args.env, args.episodes, workers=2, progress=False)
        overrides = dict(steps=args.steps, ae_warmup=args.ae_warmup, rare_share=args.rare_share)
        config = TokenizerTraining.preset(args.preset, **overrides)
        share = config.model.hard_tile_share if args.hard_tile_share is None else args.hard_tile_share
        dead = config.model.dead_code_threshold if args.dead_code_threshold is None else args.dead_code_threshold
        model = dict(encoder=args.encoder, hard_tile_share=share, dead_code_threshold=dead)
        model.update({k: getattr(args, k) for k in ("codebook_size", "quantizer") if getattr(args, k) is not None})
        config.model = dataclasses.replace(config.model, **model)
        start = time.perf_counter()
        train_tokenizer(data, str(Path(tmp) / "tok"), config, device=args.device)
        minutes = (time.perf_counter() - start) / 60
        tokenizer = Tokenizer.from_pretrained(Path(tmp) / "tok", args.device)
        parameters = sum(p.numel() for p in tokenizer.parameters())
        scored = (args.eval_data, "all") if args.eval_data else (data, "val")
        frames = val_frames(scored[0], args.val_frames, split=scored[1])
        result = evaluate(tokenizer, frames)
        sprites = sprite_report(tokenizer) if tokenizer.config.frame_size == 64 else {}  # DoorKey's frames
    row = dict(preset=args.preset, encoder=args.encoder, parameters=parameters, steps=config.steps)
    row.update(quantizer=config.model.quantizer, codes=config.model.num_codes, scored_on=scored[0], split=scored[1])
    row.update(hard_tile_share=share, ae_warmup=config.ae_warmup, rare_share=config.rare_share)
    row.update(dead_code_threshold=dead, sprites=sprites)
    row.update(train_minutes=minutes, val_frames=len(frames), **result)
    print(
        f"{'preset':>11} {'encoder':>7} {'params':>7} {'steps':>6} {'minutes':>7} {'PSNR dB':>8} {'usage':>6} "
        f"{'perplexity':>10} {'bad tiles':>9} {'sprites wrong':>13} {'enc+dec f/s':>11}"
    )
    print(
        f"{row['preset']:>11} {row['encoder']:>7} {parameters / 1e6:>6.2f}M {row['steps']:>6} {minutes:>7.1f} "
        f"{row['psnr']:>8.2f} {row['usage']:>6.0%} {row['perplexity']:>10.1f} {row['bad_tiles']:>9.2%} "
        f"{len(sprites.get('wrong', [])):>13} {row['frames_per_s']:>11.0f}"
    )
    write_report(args.out, args, [row], torch=torch.__version__)


if __name__ == "__main__":
    main()
