"""How much can actions move PSNR at all? Replays a collected dataset's eval episodes in the real
env, once with their own actions and once with the random actions `genie2 eval` draws, and
reports how far the random-action frames are from the real ones per horizon step. A perfect world
model (behind the tokenizer, whose error adds to that difference) scores the tokenizer ceiling with
real actions and `ideal_psnr_random` with random ones: the difference is the largest delta PSNR
any model can reach on the data. Give an eval report to set the ceiling and compare.

    python benchmarks/action_ceiling.py --data runs/heldout --split all --episodes 32 --horizon 16 \
        --report runs/eval/report.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from report import write_report

from genie2.data.collect import resize
from genie2.data.envs import GameEnv
from genie2.data.episode import DatasetInfo, Episode
from genie2.evaluate import eval_episodes, randomised_actions


def replay(env: GameEnv, seed: int, actions: np.ndarray, frame_size: int) -> torch.Tensor:
    """Frames (n h w 3) of the env from `seed` under `actions` (one per frame; the first is ignored)."""
    frames, ended = [resize(env.reset(seed), frame_size)], False
    for action in actions[1:]:
        if ended:  # hold the last frame once the episode is over
            frames.append(frames[-1])
            continue
        frame, _, terminated, truncated = env.step(int(action))
        frames.append(resize(frame, frame_size))
        ended = terminated or truncated
    return torch.from_numpy(np.stack(frames))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a dataset written by `genie2 collect` (env and seed known)")
    parser.add_argument("--split", default="val", help="which episodes, as `genie2 eval --split`")
    parser.add_argument("--episodes", type=int, default=16, help="how many episodes, as `genie2 eval`")
    parser.add_argument("--horizon", type=int, default=16, help="dreamed steps after the prompt frame")
    parser.add_argument("--seed", type=int, default=0, help="the random actions' seed, as `genie2 eval --seed`")
    parser.add_argument("--report", help="a `genie2 eval` report.json of the same episodes: its tokenizer ceiling")
    parser.add_argument("--out", default="benchmarks/results/action-ceiling.json", help="where the JSON goes")
    args = parser.parse_args()

    info = DatasetInfo.load(args.data)
    source = info.source or {}
    if source.get("kind") != "collect":
        raise ValueError(f"{args.data} was not written by `genie2 collect`: its env cannot be replayed")
    env, rng, k = GameEnv(source["env"]), np.random.default_rng(args.seed), 1
    mse, changed = [], []
    for path in eval_episodes(args.data, args.split, args.episodes, k + args.horizon):
        episode = Episode.load(path)
        index = int(path.stem.split("-")[-1])
        actions = torch.from_numpy(episode.actions[: k + args.horizon])
        truth = replay(env, source["seed"] + index, actions[:, 0].numpy(), info.frame_size)
        if not torch.equal(truth, torch.from_numpy(episode.frames[: k + args.horizon])):
            raise ValueError(f"replaying {path} does not reproduce its frames: is the env version the same?")
        random_actions = randomised_actions(actions, k, info.num_actions, rng)  # the draws of evaluate_world
        fake = replay(env, source["seed"] + index, random_actions[:, 0].numpy(), info.frame_size)
        diff = fake[k:].float() / 255 - truth[k:].float() / 255
        mse.append(diff.square().mean((1, 2, 3)))
        changed.append((fake[k:] != truth[k:]).any(-1).float().mean((1, 2)))
    mse, changed = torch.stack(mse), torch.stack(changed)  # episodes H
    if args.report:
        metrics = json.loads(Path(args.report).read_text())["metrics"]
        ceiling, reached = torch.tensor(metrics["tokenizer_psnr"]["mean"]), metrics["delta_psnr"]["mean"]
    else:
        ceiling, reached = torch.full((args.horizon,), 100.0), [float("nan")] * args.horizon
    tokenizer_mse = 10 ** (-ceiling / 10)  # H
    ideal_random = (-10 * torch.log10(mse + tokenizer_mse)).mean(0)
    columns = dict(
        pixels_changed=changed.mean(0).tolist(),
        identical_fraction=(mse == 0).float().mean(0).tolist(),
        tokenizer_psnr=ceiling.tolist(),
        ideal_psnr_random=ideal_random.tolist(),
        ideal_delta_psnr=(ceiling - ideal_random).tolist(),
        reached_delta_psnr=reached,
    )
    rows = [dict(step=step + 1, **{k: v[step] for k, v in columns.items()}) for step in range(args.horizon)]
    print(
        f"{'step':>4} {'identical':>9} {'pixels changed':>14} {'ceiling':>9} {'ideal random':>12} "
        f"{'ideal delta':>11} {'reached':>8}"
    )
    for row in rows:
        print(
            f"{row['step']:>4} {row['identical_fraction']:>9.0%} {row['pixels_changed']:>14.2%} "
            f"{row['tokenizer_psnr']:>9.2f} {row['ideal_psnr_random']:>12.2f} {row['ideal_delta_psnr']:>11.2f} "
            f"{row['reached_delta_psnr']:>8.2f}"
        )
    write_report(args.out, args, rows, episodes=len(mse))


if __name__ == "__main__":
    main()
