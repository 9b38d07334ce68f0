"""Sprite-level quality of tokenizers: the largest pixel error on every MiniGrid DoorKey sprite state
(genie2.data.sprites), and on held-out episodes the share of 8x8 tiles with a pixel off by more than 40
of 255 (evaluate.bad_tiles) beside PSNR. Prints a table, writes JSON.

    python benchmarks/sprites.py --tokenizer shipped=src/genie2/pretrained/minigrid-doorkey \\
        --tokenizer demo=genie2-demo/tokenizer --data heldout
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from report import write_report

from genie2.data.clips import ClipDataset
from genie2.data.sprites import sprite_report
from genie2.evaluate import BAD_PIXEL
from genie2.tokenizer.model import Tokenizer
from genie2.tokenizer.train import evaluate


def load_tokenizer(path: str) -> Tokenizer:
    """A tokenizer folder, or the tokenizer inside a world-model folder."""
    try:
        return Tokenizer.from_pretrained(path).eval()
    except (FileNotFoundError, ValueError):
        from genie2.model.genie2 import Genie2

        return Genie2.from_pretrained(path).tokenizer.eval()


def held_out(tokenizer: Tokenizer, data: str, count: int) -> dict:
    """PSNR and bad tiles (the tokenizer's own `evaluate`) over `count` frames spread evenly over every
    episode of `data`."""
    dataset = ClipDataset(data, clip_frames=1, split="all", stride=1)
    picks = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
    frames = torch.stack([dataset[int(i)]["frames"] for i in picks])  # n 1 H W 3
    scores = evaluate(tokenizer, frames)
    return dict(frames=len(frames), psnr=scores["psnr"], bad_tiles=scores["bad_tiles"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", action="append", required=True, metavar="NAME=PATH",
                        help="a tokenizer (or world-model) folder to measure, named; repeat for several")  # fmt: skip
    parser.add_argument("--data", help="held-out episodes for PSNR and bad tiles (optional)")
    parser.add_argument("--frames", type=int, default=2048, help="held-out frames to score")
    parser.add_argument("--out", default="benchmarks/results/sprites-cpu.json", help="where to write the JSON")
    args = parser.parse_args()
    rows = []
    for spec in args.tokenizer:
        name, _, path = spec.partition("=")
        if not path:
            parser.error(f"--tokenizer takes NAME=PATH, got {spec!r}")
        tokenizer = load_tokenizer(path)
        row = dict(name=name, path=path, **sprite_report(tokenizer))
        if args.data:
            row.update(held_out(tokenizer, args.data, args.frames))
        rows.append(row)
        scores = f", held-out PSNR {row['psnr']:.2f} dB, bad tiles {row['bad_tiles']:.2%}" if args.data else ""
        states = len(row["errors"])
        print(f"{name}: {states - len(row['wrong'])} of {states} sprite states drawn right{scores}")
        for state, error in row["errors"].items():
            print(f"  {state:40s} {error:4d}{'  wrong' if error > BAD_PIXEL else ''}")
    write_report(args.out, args, rows)


if __name__ == "__main__":
    main()
