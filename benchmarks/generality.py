"""Does every preset run end to end? The same short `genie2 demo` (same budget, same commands) on each env,
then one row per env: the tokenizer's PSNR, the world's PSNR at step 8 beside copying the prompt frame,
and delta PSNR (real minus random actions) at step 8, all on the demo's validation episodes (other seeds).
Prints a table, writes JSON. It shows that each preset works, not that each is good: the budget is tiny.

    python benchmarks/generality.py                              # six presets, 6 minutes and 60 episodes each
    python benchmarks/generality.py --envs pong breakout --minutes 3
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from report import write_report

from genie2.demo import DemoPlan, run_demo

ENVS = ("minigrid", "crafter", "breakout", "pong", "doom-basic", "doom-health")
STEP = 8  # the step the table reads (1-based)


def row(env: str, out: Path, seconds: float) -> dict:
    """One env's figures from its demo folder."""
    record = json.loads((out / "demo.json").read_text())
    metrics = json.loads((out / "eval" / "report.json").read_text())["metrics"]
    at = {name: round(metrics[name]["mean"][STEP - 1], 2) for name in ("psnr", "psnr_copy", "delta_psnr")}
    return dict(
        env=env,
        frame_size=record["collect"].get("frame_size"),
        frames=record["collect"]["frames"],
        tokenizer_steps=record["tokenizer"]["steps"],
        world_steps=record["world"]["steps"],
        tokenizer_psnr=round(metrics["tokenizer_psnr"]["overall"], 2),
        psnr_step_8=at["psnr"],
        copy_psnr_step_8=at["psnr_copy"],
        delta_psnr_step_8=at["delta_psnr"],
        minutes=round(seconds / 60, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(ENVS), help=f"presets to run (default: {' '.join(ENVS)})")
    parser.add_argument("--minutes", type=float, default=6.0, help="each demo's budget (default 6)")
    parser.add_argument("--episodes", type=int, default=60, help="episodes each demo collects (default 60)")
    parser.add_argument("--work", default=None, help="keep the demo folders here (default: a temporary folder)")
    parser.add_argument("--out", default="benchmarks/results/generality-cpu.json", help="where to write the JSON")
    args = parser.parse_args()

    rows, out, home = [], Path(args.out).resolve(), Path.cwd()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp).resolve()
        work.mkdir(parents=True, exist_ok=True)
        os.chdir(work)  # ViZDoom writes _vizdoom.ini into the working folder
        for env in args.envs:
            start = time.perf_counter()
            plan = DemoPlan.for_env(env, minutes=args.minutes, episodes=args.episodes)
            run_demo(work / env, plan, progress=False)
            rows.append(row(env, work / env, time.perf_counter() - start))
        os.chdir(home)
    print(
        f"\n{'env':>12} {'size':>4} {'frames':>7} {'tok PSNR':>8} {'PSNR@8':>7} {'copy@8':>7} {'delta@8':>7} {'min':>5}"
    )
    for r in rows:
        print(
            f"{r['env']:>12} {r['frame_size'] or '':>4} {r['frames']:>7} {r['tokenizer_psnr']:>8.2f} "
            f"{r['psnr_step_8']:>7.2f} {r['copy_psnr_step_8']:>7.2f} {r['delta_psnr_step_8']:>7.2f} "
            f"{r['minutes']:>5.1f}"
        )
    write_report(out, args, rows)


if __name__ == "__main__":
    main()
