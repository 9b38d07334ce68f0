"""The world as a Gymnasium vector env: frames/s over the number of envs, and memory over a long run.

Steps `gymnasium.make_vec("genie2/World-v0", num_envs=N, world=...)` with uniformly random actions
(episodes truncated at --episode-steps, so rows restart as they would in training an agent), and
times --steps steps after --warmup. With --long, one more run of that many steps at the largest
batch records the process's resident memory and the cache's bytes at its start and end.
Prints a table, writes JSON.

    python benchmarks/env.py                                   # the shipped world, 1 to 32 envs
    python benchmarks/env.py --world runs/world --raster sequential --envs 1 8 32
    python benchmarks/env.py --long 10000                      # and 10k steps at 32 envs: bounded memory?
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
import warnings

import gymnasium
import numpy as np
import torch
from report import write_report

import genie2  # noqa: F401  (registers genie2/World-v0)
from genie2.model.masking import RASTER_DECODINGS
from genie2.world import load


def make(world, args, num_envs: int):
    """The vector env the benchmark steps."""
    kwargs = dict(num_envs=num_envs, world=world, max_episode_steps=args.episode_steps, compile=not args.no_compile)
    kwargs |= {"raster": args.raster} if args.raster else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no learned reward: said once in the JSON instead
        return gymnasium.make_vec("genie2/World-v0", **kwargs)


def timed(envs, steps: int, warmup: int, rng: np.random.Generator) -> list[float]:
    """Seconds per step of `steps` steps of random actions, after `warmup` untimed ones."""
    envs.reset(seed=0)
    seconds = []
    for t in range(warmup + steps):
        actions = rng.integers(0, envs.single_action_space.n, envs.num_envs)
        start = time.perf_counter()
        envs.step(actions)
        if t >= warmup:
            seconds.append(time.perf_counter() - start)
    return seconds


def rss_mib() -> float:
    """This process's peak resident memory so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", default="minigrid", help="a shipped world's name or a checkpoint folder")
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 4, 8, 16, 32], help="numbers of envs to time")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per batch size")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (compiling, caches)")
    parser.add_argument("--episode-steps", type=int, default=50, help="max_episode_steps: rows restart this often")
    parser.add_argument("--raster", choices=RASTER_DECODINGS, help="a raster world's decoding (default: its own)")
    parser.add_argument("--no-compile", action="store_true", help="step without compiling the decode step")
    parser.add_argument("--long", type=int, default=0, help="also run this many steps at the largest batch")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", default="benchmarks/results/env-cpu.json", help="where to write the JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    world, rng = load(args.world), np.random.default_rng(0)
    rows = []
    for n in args.envs:
        seconds = statistics.median(timed(make(world, args, n), args.steps, args.warmup, rng))
        rows.append(dict(num_envs=n, frames_per_s=n / seconds, ms_per_step=1000 * seconds))
        print(f"{n:>4} envs  {n / seconds:>8.1f} frames/s  {1000 * seconds:>7.1f} ms/step", flush=True)
    long = None
    if args.long:
        envs = make(world, args, max(args.envs))
        timed(envs, 1, 0, rng)
        first = dict(rss_mib=rss_mib(), cache_bytes=envs.session.rollout.cache.nbytes())
        seconds = timed(envs, args.long, 0, rng)
        last = dict(rss_mib=rss_mib(), cache_bytes=envs.session.rollout.cache.nbytes())
        long = dict(num_envs=max(args.envs), steps=args.long, start=first, end=last, seconds=sum(seconds))
        rss = f"peak RSS {first['rss_mib']:.0f} -> {last['rss_mib']:.0f} MiB"
        cache = f"cache {first['cache_bytes']} -> {last['cache_bytes']} bytes"
        print(f"{args.long} steps at {max(args.envs)} envs: {rss}, {cache}")
    write_report(args.out, args, rows, long=long, learned_reward=False, threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
