"""Both trainers' speed on one dataset: frames/s of `genie2 train-tokenizer` and seconds per step
of `genie2 train` with their `cpu` presets, from the median step after a warm-up. Run it on two
checkouts (PYTHONPATH=OTHER/src) to compare code versions on the same machine.

    python benchmarks/trainers.py --data DATA --tokenizer TOK --label after --out RESULTS.jsonl
    PYTHONPATH=OTHER/src python benchmarks/trainers.py --data DATA --tokenizer TOK --label before --out RESULTS.jsonl

Each run with --out appends one JSON line (benchmarks/report.py's report, with the commit of the
code measured).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

import torch
from report import write_report


def _import(new: str, old: str, name: str):
    """`name` from module `new`, or from `old` (the layout before 2026-12-01)."""
    import importlib

    try:
        return getattr(importlib.import_module(new), name)
    except ImportError:
        return getattr(importlib.import_module(old), name)


def step_seconds(metrics: Path, key: str, warmup: int) -> float:
    """The median of a per-step time (`key`) over a run's metrics.jsonl rows after the warm-up."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines()][warmup:]
    return statistics.median(row[key] for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a dataset folder (genie2 collect)")
    parser.add_argument("--tokenizer", required=True, help="a trained tokenizer folder, for genie2 train")
    parser.add_argument("--tokenizer-steps", type=int, default=120, help="tokenizer steps to time (default 120)")
    parser.add_argument("--world-steps", type=int, default=40, help="world-model steps to time (default 40)")
    parser.add_argument("--warmup", type=int, default=10, help="first steps left out (default 10)")
    parser.add_argument("--codes", default=None, help="the dataset's codes by --tokenizer (default: encode them)")
    parser.add_argument("--only", choices=("both", "tokenizer", "world"), default="both", help="which trainers to time")
    parser.add_argument("--label", default="", help="a name for this run in the JSON (e.g. before, after)")
    parser.add_argument("--out", default=None, help="append the result as a JSON line to this .jsonl file")
    args = parser.parse_args()
    torch.manual_seed(0)
    TokenizerTraining = _import("genie2.tokenizer.train", "genie2.train_tokenizer", "TokenizerTraining")
    train_tokenizer = _import("genie2.tokenizer.train", "genie2.train_tokenizer", "train_tokenizer")
    Training = _import("genie2.train.world_model", "genie2.train", "Training")
    train = _import("genie2.train.world_model", "genie2.train", "train")
    encode_dataset = _import("genie2.data.codes", "genie2.data.codes", "encode_dataset")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokenizer_rate = None
        if args.only in ("both", "tokenizer"):
            steps = args.tokenizer_steps
            config = TokenizerTraining.preset("cpu", steps=steps, eval_every=steps, checkpoint_every=steps)
            train_tokenizer(args.data, str(tmp / "tok"), config, progress=False, device="cpu")
            rows = [json.loads(line) for line in (tmp / "tok" / "metrics.jsonl").read_text().splitlines()]
            # rows give frames/s since the start; the time of step i is the difference of elapsed times
            elapsed = [(i + 1) * config.batch_size / row["frames_per_s"] for i, row in enumerate(rows)]
            per_step = [b - a for a, b in zip(elapsed[args.warmup :], elapsed[args.warmup + 1 :], strict=False)]
            tokenizer_rate = config.batch_size / statistics.median(per_step)
        world = None
        if args.only in ("both", "world"):
            codes = args.codes or str(tmp / "codes")
            if not args.codes:
                encode_dataset(args.data, args.tokenizer, codes, progress=False)
            steps = args.world_steps
            config = Training.preset("cpu", steps=steps, eval_every=10 * steps, checkpoint_every=steps)
            train(args.data, codes, args.tokenizer, str(tmp / "world"), config, progress=False, cpu=True)
            world = step_seconds(tmp / "world" / "metrics.jsonl", "step_seconds", args.warmup)
    result = dict(
        label=args.label,
        processor=platform.processor() or platform.machine(),
        threads=torch.get_num_threads(),
        tokenizer_frames_per_s=tokenizer_rate,
        world_step_seconds_median=world,
        steps=dict(tokenizer=args.tokenizer_steps, world=args.world_steps, warmup=args.warmup),
    )
    print(f"{'trainer':<12} {'speed':>14}")
    if tokenizer_rate is not None:
        print(f"{'tokenizer':<12} {tokenizer_rate:>10.1f} f/s")
    if world is not None:
        print(f"{'world model':<12} {world:>10.3f} s/step")
    if args.out:
        write_report(args.out, args, [result])


if __name__ == "__main__":
    main()
