"""An agent that plans only inside a learned world, scored in the real game beside the same planner
over the real game and a random policy.

    genie2 collect --env minigrid-empty --episodes 1000 --steps 100 --out empty
    genie2 train-tokenizer --data empty --out empty-tok
    genie2 train --data empty --tokenizer empty-tok --out empty-world --learn-rewards
    python examples/dream_planner.py --world empty-world --env minigrid-empty --episodes 20

Each real step, genie2.plan.DreamPlanner dreams --candidates random action sequences of
--horizon steps from the real frame in the world's vector env and takes the first action of
the one whose dream was rewarded soonest; the real env (genie2's preset, rendered as the data
was) says whether the goal was reached. genie2.plan.RealPlanner plans the same way over copies
of the real game (a perfect model: the dream planner's ceiling), and a random policy sets the
floor. Every policy plays the same episodes (env seeds) once per --seeds planner seed. Prints a
table; --out writes it as JSON (benchmarks/record.py keeps it as a result).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

from genie2.cli import positive_int
from genie2.data.envs import GameEnv
from genie2.plan import DreamPlanner, RealPlanner
from genie2.world import load


def play(env: GameEnv, seed: int, policy, max_steps: int) -> dict:
    """One real episode under `policy(frame) -> action`: whether a positive reward came, and when."""
    frame = env.reset(seed)
    for step in range(1, max_steps + 1):
        frame, reward, terminated, truncated = env.step(policy(frame))
        if reward > 0:
            return dict(success=True, steps=step)
        if terminated or truncated:
            break
    return dict(success=False, steps=step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", required=True, help="a world trained with --learn-rewards (checkpoint folder)")
    parser.add_argument("--env", default="minigrid-empty", help="the real game: a genie2 env preset or Gymnasium id")
    parser.add_argument("--episodes", type=positive_int, default=20, help="real episodes per policy")
    parser.add_argument("--seed", type=int, default=500_000, help="env seed of the first episode (held out)")
    parser.add_argument("--max-steps", type=positive_int, default=100, help="real steps before an episode fails")
    parser.add_argument("--candidates", type=positive_int, default=64, help="action sequences dreamed per real step")
    parser.add_argument("--horizon", type=positive_int, default=12, help="dreamed steps per sequence")
    parser.add_argument(
        "--repeat", type=float, default=0.0, help="chance a plan repeats its previous action (default 0: independent)"
    )
    parser.add_argument("--seeds", type=positive_int, default=3, help="planner (and random policy) seeds per policy")
    parser.add_argument("--out", help="also write the results here as JSON")
    args = parser.parse_args()
    world = load(args.world)
    env, rows = GameEnv(args.env), []
    for seed in range(args.seeds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dream = DreamPlanner(world, args.candidates, args.horizon, seed=seed, repeat=args.repeat, compile=True)
        real, rng = (
            RealPlanner(args.candidates, args.horizon, seed=seed, repeat=args.repeat),
            np.random.default_rng(seed),
        )
        actions = dream.envs.single_action_space.n
        policies = {
            "dream planner": dream.act,
            "real-env planner": lambda frame, real=real: real.act(env.env),
            "random": lambda frame, rng=rng: int(rng.integers(actions)),
        }
        for name, policy in policies.items():
            start = time.perf_counter()
            runs = [play(env, args.seed + i, policy, args.max_steps) for i in range(args.episodes)]
            success = [r["steps"] for r in runs if r["success"]]
            rows.append(
                dict(
                    policy=name,
                    seed=seed,
                    success_rate=len(success) / len(runs),
                    mean_steps_to_goal=float(np.mean(success)) if success else None,
                    seconds=time.perf_counter() - start,
                )
            )
            print(f"{name:>16} (seed {seed}): reached the goal in {len(success)} of {len(runs)} episodes", flush=True)
    summary = {name: float(np.mean([r["success_rate"] for r in rows if r["policy"] == name])) for name in policies}
    print("mean success rate: " + ", ".join(f"{name} {rate:.2f}" for name, rate in summary.items()))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(config=vars(args), rows=rows, mean_success_rate=summary), f, indent=2)


if __name__ == "__main__":
    main()
