"""Tokenizer quality and speed on the default env: collect, train with a preset, evaluate on
the held-out validation episodes. Prints a table, writes JSON.

    python benchmarks/tokenizer.py                      # cpu preset, 60 episodes of MiniGrid DoorKey
    python benchmarks/tokenizer.py --preset gpu --device cuda --out benchmarks/results/tokenizer-cuda.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from genie2.data.collect import collect
from genie2.data.envs import DEFAULT_ENV
from genie2.data.episode import atomic_write
from genie2.tokenizer.model import Tokenizer
from genie2.tokenizer.train import TokenizerTraining, evaluate, train_tokenizer, val_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default=DEFAULT_ENV, help="preset or Gymnasium env id")
    parser.add_argument("--episodes", type=int, default=60, help="episodes to collect (10%% held out)")
    parser.add_argument("--preset", default="cpu", help="tokenizer preset")
    parser.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--data", default=None, help="use this dataset instead of collecting one")
    parser.add_argument("--val-frames", type=int, default=2048, help="validation frames to score")
    parser.add_argument("--out", default="benchmarks/results/tokenizer-cpu.json", help="where to write the JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or str(Path(tmp) / "data")
        if not args.data:
            collect(data, args.env, args.episodes, workers=2, progress=False)
        config = TokenizerTraining.preset(args.preset, steps=args.steps)
        start = time.perf_counter()
        train_tokenizer(data, str(Path(tmp) / "tok"), config, device=args.device)
        minutes = (time.perf_counter() - start) / 60
        tokenizer = Tokenizer.from_pretrained(Path(tmp) / "tok", args.device)
        frames = val_frames(data, args.val_frames)
        result = evaluate(tokenizer, frames)
    row = dict(preset=args.preset, steps=config.steps, train_minutes=minutes, val_frames=len(frames), **result)
    print(
        f"{'preset':>6} {'steps':>6} {'minutes':>7} {'PSNR dB':>8} {'usage':>6} {'perplexity':>10} {'enc+dec f/s':>11}"
    )
    print(
        f"{row['preset']:>6} {row['steps']:>6} {minutes:>7.1f} {row['psnr']:>8.2f} {row['usage']:>6.0%} "
        f"{row['perplexity']:>10.1f} {row['frames_per_s']:>11.0f}"
    )
    report = dict(config=vars(args), torch=torch.__version__, machine=platform.platform(), rows=[row])
    out = Path(args.out)
    atomic_write(out, lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
