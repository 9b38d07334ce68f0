"""Latent actions to real ones and back, learned from a few labelled episodes: `genie2 map-actions`.

    OUT/action-map.json   the map (`ActionMap`): latent -> action and action -> latent tables, names, the LAM
    OUT/report.json       agreement on the fitting episodes and, with --eval-data, on held-out ones
    OUT/confusion.png     the held-out (else the fitting) confusion matrix over the steps whose frame changed

Steps whose frame did not visibly change cannot be told apart from pixels: the tables are fitted on the
changed steps, and agreement reports the others apart (`genie2.lam.agreement`).

Dimension legend: n steps, k latent actions, a true actions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from genie2.data.clips import episode_files, split_episodes
from genie2.data.codes import weights_hash
from genie2.data.episode import DatasetInfo, Episode, atomic_write
from genie2.errors import InputError
from genie2.lam.agreement import agreement, fit_table, visibly_changed

MAP_FILE = "action-map.json"


@dataclass
class ActionMap:
    """Which real action each latent action is (`to_actions`) and which latent action plays each real one
    (`from_actions`); -1 where the fitting episodes never showed one."""

    to_action: list[int]  # k: the real action of each latent action
    from_action: list[int]  # a: the latent action of each real action
    action_names: list[str]
    lam_sha256: str = ""
    episodes: int = 0  # labelled episodes it was fitted on
    counts: list[list[float]] = field(default_factory=list)  # k a: changed steps seen of each pair

    def to_actions(self, latents: Tensor) -> Tensor:
        """Real action ids for latent action ids (any shape)."""
        return torch.tensor(self.to_action, dtype=torch.long)[latents.long().cpu()]

    def from_actions(self, actions: Tensor) -> Tensor:
        """Latent action ids for real action ids (any shape; -1, no key, stays -1)."""
        actions = torch.as_tensor(actions)
        if actions.dtype.is_floating_point or actions.dtype == torch.bool:
            raise InputError(f"real actions are integer ids, got {actions.dtype}")
        if actions.numel() and (actions.min() < -1 or actions.max() >= len(self.from_action)):
            raise InputError(
                f"real actions are ids in [0, {len(self.from_action)}) or -1 (no key), got {actions.tolist()}"
            )
        table = torch.tensor(self.from_action, dtype=torch.long, device=actions.device)
        return torch.where(actions >= 0, table[actions.long().clamp(min=0)], -1)

    def save(self, folder: str | Path) -> Path:
        """Write FOLDER/action-map.json atomically."""
        path = Path(folder) / MAP_FILE
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(asdict(self), indent=2)))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> ActionMap:
        """Read FOLDER/action-map.json, with a clear error where there is none."""
        path = Path(folder) / MAP_FILE
        if not path.is_file():
            raise InputError(f"{folder} holds no action map ({MAP_FILE}): make one with `genie2 map-actions`")
        return cls(**json.loads(path.read_text()))


def labelled_steps(
    lam, data: str | Path, episodes: int | None = None, skip_corrupt: bool = False, split: str = "all"
) -> dict:
    """The latent action, true action and whether the frame visibly changed (n each) at every step of the
    first `episodes` episodes of a split of `data` (all by default), with the dataset's info."""
    info = DatasetInfo.load(data)
    if info.max_num_actions != 1:
        raise InputError(f"{data} records several keys a step; mapping latent actions needs one action a step")
    files = episode_files(data, skip_corrupt)
    chosen = set(split_episodes([index for index, _ in files], split))
    paths = [path for index, path in files if index in chosen][:episodes]
    latents, actions, changed = [], [], []
    for path in paths:
        episode = Episode.load(path)
        if len(episode.frames) < 2:
            continue
        frames = torch.from_numpy(episode.frames)
        latents.append(lam.infer(frames))
        actions.append(torch.from_numpy(episode.actions[1:, 0]))
        changed.append(visibly_changed(frames[:-1], frames[1:]))
    if not latents:
        raise InputError(f"{data} has no episode of two frames or more to map latent actions on")
    steps = dict(latents=torch.cat(latents), actions=torch.cat(actions), changed=torch.cat(changed))
    if (steps["actions"] < 0).any():
        raise InputError(f"{data} has steps without an action label; map-actions needs labelled episodes")
    return dict(steps, info=info, episodes=len(latents))


def fit_action_map(lam, lam_path: str | Path, data: str | Path, episodes: int, skip_corrupt: bool = False):
    """An `ActionMap` fitted on the first `episodes` labelled episodes of `data`, and those steps."""
    steps = labelled_steps(lam, data, episodes, skip_corrupt)
    k, a = lam.num_actions, steps["info"].num_actions
    table = fit_table(steps["latents"], steps["actions"], steps["changed"], k, a)
    # each real action's most frequent latent, on changed steps first: a key that rarely changes the frame
    # (MiniGrid's done) gets the latent of its unchanged steps, not "no key"
    inverse = fit_table(steps["actions"], steps["latents"], steps["changed"], a, k)
    moved = steps["changed"]
    pairs = steps["latents"][moved].long() * a + steps["actions"][moved].long()
    counts = torch.bincount(pairs, minlength=k * a).reshape(k, a).double()
    names, used = steps["info"].action_names, steps["episodes"]
    action_map = ActionMap(table.tolist(), inverse.tolist(), names, weights_hash(lam_path), used, counts.tolist())
    return action_map, steps


def score(action_map: ActionMap, steps: dict) -> dict:
    """`agreement` of labelled steps with the map, per-action accuracy keyed by the action's name."""
    table = torch.tensor(action_map.to_action)
    found = agreement(steps["latents"], steps["actions"], steps["changed"], table, len(action_map.action_names))
    found["per_action"] = {action_map.action_names[a]: v for a, v in found["per_action"].items()}
    return found


def world_agreement(
    lam_folder: str | Path, action_map: ActionMap, data: str | Path, split: str, episodes: int, skip_corrupt=False
) -> dict:
    """How the latent actions of the LAM in `lam_folder`, through the map, agree with the true actions of
    held-out episodes (`score`: every step of the first `episodes` episodes of `split`)."""
    from genie2.lam.model import LatentActionModel

    if action_map.lam_sha256 and action_map.lam_sha256 != weights_hash(lam_folder):
        raise InputError(f"the action map was fitted on another LAM's latent actions than {lam_folder}'s")
    lam = LatentActionModel.from_pretrained(lam_folder).eval()
    return score(action_map, labelled_steps(lam, data, episodes, skip_corrupt, split))


def plot_confusion(matrix: list[list[int]], names: list[str], path: Path, title: str) -> None:
    """The confusion matrix (rows true, columns mapped), each row as shares of that action's steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.array(matrix, dtype=float)
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    figure, axis = plt.subplots(figsize=(1.2 + 0.7 * len(names), 1 + 0.6 * len(names)))
    axis.imshow(shares, vmin=0, vmax=1, cmap="Blues")
    for (i, j), value in np.ndenumerate(counts):
        if value:
            axis.text(j, i, f"{shares[i, j]:.0%}\n{int(value)}", ha="center", va="center", fontsize=7)
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("mapped from the latent action")
    axis.set_ylabel("true action")
    axis.set_title(title)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    plt.close(figure)


def map_actions(lam_path: str, data: str, out: str, episodes: int = 10, eval_data: str | None = None, **kw) -> dict:
    """Fit the map on `episodes` labelled episodes of `data`, score it there and on `eval_data`, and write
    OUT/action-map.json, report.json and confusion.png; returns the report."""
    from genie2.lam.model import LatentActionModel

    lam = LatentActionModel.from_pretrained(lam_path).eval()
    action_map, steps = fit_action_map(lam, lam_path, data, episodes, kw.get("skip_corrupt", False))
    report = dict(lam=str(Path(lam_path).resolve()), data=str(data), episodes=action_map.episodes)
    report["fit"] = score(action_map, steps)
    if eval_data:
        held_out = labelled_steps(lam, eval_data, None, kw.get("skip_corrupt", False))
        if held_out["info"].action_names != action_map.action_names:
            raise InputError(f"{eval_data} has other actions than {data}: {held_out['info'].action_names}")
        report.update(eval_data=str(eval_data), held_out=score(action_map, held_out))
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    action_map.save(out_dir)
    atomic_write(out_dir / "report.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    shown, where = (report["held_out"], "held-out") if eval_data else (report["fit"], "fitting")
    title = f"{where} steps that changed: {shown['mapped_accuracy']:.1%} mapped right"
    plot_confusion(shown["confusion"], action_map.action_names, out_dir / "confusion.png", title)
    return report
