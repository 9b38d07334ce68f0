"""Decoding modes of trained worlds, speed beside quality: for a raster world each Sampling.raster
(sequential, speculative, diagonal), for a parallel world each K of --passes. Per mode: frames/s,
codes/s (tokens/s) and forward calls per frame through the compiled session API, replaying held-out
episodes' actions (so the drafts meet real play), and from `evaluate_world` on the same data PSNR at
steps 1, 8 and 16 and delta PSNR at step 8. Prints a table, writes JSON.

    python benchmarks/decoding.py --world shipped=src/genie2/pretrained/minigrid-doorkey --data heldout
    python benchmarks/decoding.py --world raster=world --world parallel=world-par --data heldout
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from report import write_report

from genie2.data.clips import episode_files
from genie2.data.episode import Episode
from genie2.evaluate import evaluate_world
from genie2.world import World, load


def counted(rollout, counts: list[int]) -> None:
    """Count the rollout's forward calls (one-token steps and whole-frame passes) in `counts`."""
    for name in ("decode", "decode_frame"):
        fn = getattr(rollout, name)
        setattr(rollout, name, lambda *a, _fn=fn, **kw: counts.append(1) or _fn(*a, **kw))


def speed(world: World, episodes: list[Episode], frames: int, warmup: int, **mode) -> tuple[float, float, int]:
    """Median frames/s over the episodes, forward calls per frame and codes per frame of a compiled
    session that plays each episode's own actions from its first frame."""
    rates, calls = [], []
    for episode in episodes:
        session = world.session(episode.frames[0], temperature=0.0, compile=True, **mode)
        actions = np.asarray(episode.actions)[1:, 0].tolist()
        for action in actions[:warmup]:
            session.step(action)
        counts: list[int] = []
        counted(session.rollout, counts)
        start = time.perf_counter()
        for action in actions[warmup : warmup + frames]:
            session.step(action)
        rates.append(frames / (time.perf_counter() - start))
        calls.append(len(counts) / frames)
    return statistics.median(rates), statistics.median(calls), session.codes[-1][0, -1].numel()


def modes(world: World, passes: list[int]) -> list[dict]:
    """The decoding settings to measure: each raster way, or each K of a parallel world."""
    if world.model.decoding == "parallel":
        return [dict(decode_steps=k) for k in passes]
    return [dict(raster=name) for name in ("sequential", "speculative", "diagonal")]


def run(args) -> list[dict]:
    rows = []
    episodes = [Episode.load(p) for _, p in episode_files(args.data)[: args.speed_episodes]]  # every world replays
    for spec in args.world:
        name, _, path = spec.partition("=")
        world = load(path)
        for mode in modes(world, args.passes):
            fps, calls, codes = speed(world, episodes, args.frames, args.warmup, **mode)
            report = evaluate_world(world, args.data, "all", args.episodes, args.horizon, progress=False, **mode)
            m = report["metrics"]
            psnr, delta = m["psnr"]["mean"], m["delta_psnr"]["mean"]
            row = dict(
                world=name,
                decoding=world.model.decoding,
                mode=mode.get("raster") or f"K={mode['decode_steps']}",
                frames_per_s=fps,
                tokens_per_s=fps * codes,
                calls_per_frame=calls,
                psnr_1=psnr[0],
                psnr_8=psnr[7],
                psnr_16=psnr[-1],
                delta_psnr_8=delta[7],
                tokenizer_psnr=m["tokenizer_psnr"]["overall"],
            )
            rows.append(row)
            print_row(row)
    return rows


def print_row(row: dict) -> None:
    r = row
    print(
        f"{r['world']:>10} {r['mode']:>12} {r['frames_per_s']:8.2f} f/s {r['tokens_per_s']:7.0f} codes/s "
        f"{r['calls_per_frame']:6.1f} calls/frame "
        f"PSNR {r['psnr_1']:6.2f} {r['psnr_8']:6.2f} {r['psnr_16']:6.2f} dB  delta@8 {r['delta_psnr_8']:5.2f} dB",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", action="append", required=True, metavar="NAME=PATH", help="a world to measure")
    parser.add_argument("--data", required=True, help="held-out episodes (genie2 collect, another policy)")
    parser.add_argument("--passes", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="K of a parallel world")
    parser.add_argument("--episodes", type=int, default=16, help="episodes evaluate_world rolls out per mode")
    parser.add_argument("--horizon", type=int, default=16, help="dreamed frames per evaluated episode")
    parser.add_argument("--speed-episodes", type=int, default=3, help="episodes the session replays per mode")
    parser.add_argument("--frames", type=int, default=48, help="timed frames per replayed episode")
    parser.add_argument("--warmup", type=int, default=8, help="frames stepped (and compiled) before timing")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", default="benchmarks/results/decoding-cpu.json", help="where to write the JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args)
    write_report(args.out, args, rows, threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
