"""World-model training speed: tokens/s of `genie2 train` with a preset (default `cpu`) on the
default env's 64x64 frames (8x8 codes). Prints a table, writes JSON.

    python benchmarks/train.py                                   # cpu preset on CPU
    python benchmarks/train.py --preset gpu-small --out benchmarks/results/train-cuda.json   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path

import torch
from report import write_report

from genie2.data.codes import default_codes_dir, encode_dataset
from genie2.data.collect import collect
from genie2.model.genie2 import Genie2
from genie2.presets import tokenizer_cpu
from genie2.tokenizer.model import Tokenizer
from genie2.train.world_model import Training, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu", help="world-model preset")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps to time (the first 5 are warm-up)")
    parser.add_argument("--episodes", type=int, default=20, help="episodes of the default env to collect")
    parser.add_argument("--cpu", action="store_true", help="train on CPU even when a GPU is present")
    parser.add_argument("--out", default="benchmarks/results/train-cpu.json", help="where to write the JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        collect(root / "data", episodes=args.episodes, workers=2, progress=False)
        torch.manual_seed(0)
        Tokenizer(tokenizer_cpu()["model"]).save_pretrained(root / "tok")  # speed does not depend on its training
        encode_dataset(root / "data", root / "tok", progress=False)
        config = Training.preset(args.preset, steps=args.steps, eval_every=10**9, checkpoint_every=10**9)
        codes = default_codes_dir(root / "data", root / "tok")
        out = train(str(root / "data"), str(codes), str(root / "tok"), str(root / "run"), config, cpu=args.cpu or None)
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        model = Genie2.from_pretrained(out)
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tokens_per_step = config.batch_size * config.clip_frames * (math.prod(model.tokenizer.latent_shape) + 1)
    step_rates = [tokens_per_step / r["step_seconds"] for r in records[5:]]
    row = dict(
        preset=args.preset,
        parameters=params,
        batch_size=config.batch_size,
        clip_frames=config.clip_frames,
        tokens_per_step=tokens_per_step,
        tokens_per_s=statistics.median(step_rates),
        device="cuda" if torch.cuda.is_available() and not args.cpu else "cpu",
    )
    print(f"{'preset':>8} {'params':>8} {'batch':>5} {'frames':>6} {'tokens/s':>9} {'device':>6}")
    print(
        f"{row['preset']:>8} {params / 1e6:>7.1f}M {row['batch_size']:>5} {row['clip_frames']:>6} "
        f"{row['tokens_per_s']:>9.0f} {row['device']:>6}"
    )
    write_report(args.out, args, [row], torch=torch.__version__)


if __name__ == "__main__":
    main()
