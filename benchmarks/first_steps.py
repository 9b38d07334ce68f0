"""The first dreamed step from an episode's first frame, per action: a session starts there (its
frame's action "no key", as in the data), so a world must answer every key from it. For up to
--per-action episodes of --data whose first action is each action, greedy: how many dream the next
frame with a pixel more than 40 of 255 off the tokenizer's reconstruction of the real one (a code
wrong). Prints a table, writes JSON.

    python benchmarks/first_steps.py --world next=world --world shipped=src/genie2/pretrained/minigrid-doorkey \\
        --data data
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from report import write_report

from genie2.data.clips import episode_files
from genie2.data.episode import Episode
from genie2.evaluate import BAD_PIXEL, reconstructed
from genie2.world import load


def first_steps(world, data: str, per_action: int) -> dict[str, list[int]]:
    """For each action name: [episodes dreamed wrong, episodes tried]."""
    counts: dict[str, list[int]] = {}
    for _, path in episode_files(data):
        episode = Episode.load(path)
        name = world.action_names[int(episode.actions[1, 0])]
        tally = counts.setdefault(name, [0, 0])
        if tally[1] >= per_action:
            continue
        session = world.session(episode.frames[0], temperature=0.0)
        dreamed = np.asarray(session.step(int(episode.actions[1, 0])).permute(1, 2, 0)) * 255
        ceiling = reconstructed(world.model.tokenizer, torch.from_numpy(episode.frames[1:2]))[0]
        error = np.abs(ceiling.numpy().astype(float) - dreamed.round()).max()  # a code wrong, not the tokenizer
        tally[0], tally[1] = tally[0] + int(error > BAD_PIXEL), tally[1] + 1
        if all(t[1] >= per_action for t in counts.values()) and len(counts) == len(world.action_names):
            break
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", action="append", required=True, metavar="NAME=PATH", help="a world to check")
    parser.add_argument("--data", required=True, help="episodes that start where the env starts (genie2 collect)")
    parser.add_argument("--per-action", type=int, default=12, help="episodes per first action")
    parser.add_argument("--out", default="benchmarks/results/first-steps-cpu.json", help="where to write the JSON")
    args = parser.parse_args()
    rows = []
    for spec in args.world:
        name, _, path = spec.partition("=")
        counts = first_steps(load(path), args.data, args.per_action)
        rows.append(
            dict(
                world=name,
                path=path,
                wrong={k: v[0] for k, v in counts.items()},
                tried={k: v[1] for k, v in counts.items()},
            )
        )
        print(name, "  ".join(f"{k}: {v[0]}/{v[1]} wrong" for k, v in counts.items()), flush=True)
    write_report(args.out, args, rows)


if __name__ == "__main__":
    main()
