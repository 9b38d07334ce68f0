"""Do trained worlds read the keys where a frame changes? Teacher-forced on held-out clips, each
world predicts a frame's codes from the frames before it (a parallel world with the whole frame
hidden, as its first pass sees it; a raster world code by code) once with the real action and once
with no key pressed; the cross-entropy (nats per code) over every code and over the codes that
differ from the frame before (the agent's tiles on MiniGrid) says how much the key tells each.
Prints a table, writes JSON.

    python benchmarks/changed_codes.py --world shipped=src/genie2/pretrained/minigrid-doorkey \
        --world parallel=RUN --data heldout
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from report import write_report

from genie2.data.clips import episode_files
from genie2.data.episode import Episode
from genie2.world import load


@torch.no_grad()
def losses(model, codes: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (s) of the last frame's codes of a clip (codes 1 t h w, actions 1 t 1)."""
    t, h, w = codes.shape[1:]
    hidden = None
    if model.decoding == "parallel":
        hidden = torch.zeros(1, t, h, w, dtype=torch.bool)
        hidden[:, -1] = True
    logits = model(state_codes=codes, actions=actions, return_loss=False, hidden=hidden)[0, -h * w :]
    return F.cross_entropy(logits, codes[0, -1].flatten(), reduction="none")


def measure(world, files: list, clip: int, every: int) -> dict:
    """Mean cross-entropy with the real keys and with none, over all codes and over the changed ones."""
    found = {key: [] for key in ("all_real", "all_no_key", "changed_real", "changed_no_key")}
    for path in files:
        episode = Episode.load(path)
        for start in range(0, len(episode.frames) - clip + 1, every):
            frames = torch.from_numpy(np.asarray(episode.frames[start : start + clip]))
            actions = torch.from_numpy(np.asarray(episode.actions[start : start + clip])).long()[None]
            with torch.no_grad():
                _, codes, _ = world.model.encode_state(rearrange(frames.float() / 255, "t h w c -> 1 c t h w"))
            changed = (codes[0, -1] != codes[0, -2]).flatten()
            for name, keys in (("real", actions), ("no_key", torch.full_like(actions, -1))):
                loss = losses(world.model, codes, keys)
                found[f"all_{name}"].append(loss.mean().item())
                if changed.any():
                    found[f"changed_{name}"].append(loss[changed].mean().item())
    row = {key: statistics.fmean(values) for key, values in found.items()}
    return dict(row, clips=len(found["all_real"]), clips_with_change=len(found["changed_real"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", action="append", required=True, metavar="NAME=PATH", help="a world to measure")
    parser.add_argument("--data", required=True, help="held-out episodes (genie2 collect, another policy)")
    parser.add_argument("--episodes", type=int, default=32, help="episodes to take clips from")
    parser.add_argument("--clip", type=int, default=4, help="frames per clip (the last one is predicted)")
    parser.add_argument("--every", type=int, default=5, help="frames between clip starts")
    parser.add_argument("--out", default="benchmarks/results/changed-codes-cpu.json", help="where to write the JSON")
    args = parser.parse_args()
    torch.manual_seed(0)
    files = [path for _, path in episode_files(args.data)[: args.episodes]]
    rows = []
    print(f"{'world':>10} {'all, keys':>10} {'all, none':>10} {'changed, keys':>14} {'changed, none':>14} {'clips':>6}")
    for spec in args.world:
        name, _, path = spec.partition("=")
        world = load(path)
        row = dict(world=name, decoding=world.model.decoding, **measure(world, files, args.clip, args.every))
        rows.append(row)
        print(
            f"{name:>10} {row['all_real']:10.3f} {row['all_no_key']:10.3f} {row['changed_real']:14.3f} "
            f"{row['changed_no_key']:14.3f} {row['clips_with_change']:>6}",
            flush=True,
        )
    write_report(args.out, args, rows)


if __name__ == "__main__":
    main()
