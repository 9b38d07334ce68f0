"""Data speed: collection frames/s (1 and several worker processes) and clip reading clips/s.
Prints a table, writes JSON.

    python benchmarks/collect.py                  # the default env (MiniGrid DoorKey 8x8, 64x64)
    python benchmarks/collect.py --env breakout   # any preset or Gymnasium id
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from report import write_report
from torch.utils.data import DataLoader

from genie2.data.clips import ClipDataset
from genie2.data.collect import collect
from genie2.data.envs import DEFAULT_ENV


def time_collect(args, workers: int, root: Path) -> dict:
    """Collect args.episodes episodes with `workers` processes; frames/s (median of repeats)."""
    rates = []
    for repeat in range(args.repeats):
        out = root / f"collect-{workers}-{repeat}"
        start = time.perf_counter()
        info = collect(out, args.env, args.episodes, args.steps, seed=repeat, workers=workers, progress=False)
        rates.append(info.num_frames / (time.perf_counter() - start))
    return dict(stage="collect", workers=workers, frames=info.num_frames, frames_per_s=statistics.median(rates))


def time_clips(args, root: Path, workers: int) -> dict:
    """Read every training clip once through a DataLoader; clips/s (median of repeats)."""
    dataset = ClipDataset(root, clip_frames=args.clip_frames, split="train")
    loader = DataLoader(dataset, batch_size=32, shuffle=True, num_workers=workers)
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        count = sum(batch["frames"].shape[0] for batch in loader)
        rates.append(count / (time.perf_counter() - start))
    return dict(stage="clips", workers=workers, clips=len(dataset), clips_per_s=statistics.median(rates))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default=DEFAULT_ENV, help="preset or Gymnasium env id")
    parser.add_argument("--episodes", type=int, default=16, help="episodes per collection run")
    parser.add_argument("--steps", type=int, default=500, help="max actions per episode")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker process counts to time")
    parser.add_argument("--clip-frames", type=int, default=16, help="frames per clip when reading")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (median)")
    parser.add_argument("--out", default="benchmarks/results/collect-cpu.json", help="where to write the JSON")
    args = parser.parse_args()

    rows = []
    print(f"{'stage':>8} {'workers':>7} {'items':>8} {'rate':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for workers in args.workers:
            row = time_collect(args, workers, root)
            rows.append(row)
            print(f"{'collect':>8} {workers:>7} {row['frames']:>8} {row['frames_per_s']:>9.0f} fr/s")
        for workers in (0, 2):
            row = time_clips(args, root / f"collect-{args.workers[0]}-0", workers)
            rows.append(row)
            print(f"{'clips':>8} {workers:>7} {row['clips']:>8} {row['clips_per_s']:>9.0f} clip/s")
    write_report(args.out, args, rows)


if __name__ == "__main__":
    main()
