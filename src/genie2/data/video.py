"""Import a recording (a video file plus a per-frame action log) into the episode format.

The actions CSV has a header and one row per video frame, in order:

    frame,action
    0,
    1,3
    2,1 4

`action` (required) is the action leading into that frame: empty or -1 for none (the first
row usually), an id, or several ids separated by spaces for keys held together. `frame`
(optional) is the 0-based frame index and must count 0, 1, 2, ...
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from genie2.data.collect import resize
from genie2.data.episode import DatasetInfo, Episode, episode_indices, episode_path
from genie2.errors import InputError


def read_actions_csv(path: str | Path) -> np.ndarray:
    """Actions (t a int64, -1 padded) from an actions CSV (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"actions file {path} does not exist")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "action" not in rows[0]:
        raise InputError(f"{path} needs a header with an 'action' column and one row per frame")
    keys = []
    for t, row in enumerate(rows):
        if "frame" in row and row["frame"] not in (None, "") and int(row["frame"]) != t:
            raise InputError(f"{path} row {t + 2}: frame {row['frame']} out of order (expected {t})")
        text = (row["action"] or "").replace(";", " ").split()
        try:
            ids = [int(k) for k in text if int(k) != -1]
        except ValueError as error:
            raise InputError(f"{path} row {t + 2}: action {row['action']!r} is not ids separated by spaces") from error
        if any(k < 0 for k in ids):
            raise InputError(f"{path} row {t + 2}: action ids must be >= 0 (or -1 for none)")
        keys.append(sorted(set(ids)))
    width = max(1, max(len(k) for k in keys))
    actions = np.full((len(keys), width), -1, dtype=np.int64)
    for t, ids in enumerate(keys):
        actions[t, : len(ids)] = ids
    return actions


def read_video(path: str | Path, frame_size: int) -> np.ndarray:
    """Frames (t h w 3 uint8) of a video file, resized to frame_size."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    frames = [resize(np.asarray(frame)[..., :3].astype(np.uint8), frame_size) for frame in iio.imiter(path)]
    if not frames:
        raise InputError(f"video {path} has no frames")
    return np.stack(frames)


def import_video(
    video: str | Path,
    actions_csv: str | Path,
    out: str | Path,
    frame_size: int = 64,
    num_actions: int | None = None,
    action_names: list[str] | None = None,
) -> DatasetInfo:
    """Add one recording to the dataset at `out` as its next episode (creating the dataset)."""
    actions = read_actions_csv(actions_csv)
    frames = read_video(video, frame_size)
    if len(actions) != len(frames):
        raise InputError(
            f"{actions_csv} has {len(actions)} action rows but {video} has {len(frames)} frames; "
            "the CSV needs one row per frame"
        )
    out = Path(out)
    old = DatasetInfo.load(out) if (out / "dataset.json").exists() else None
    largest = int(actions.max())
    if old is not None:  # appending: the dataset's action space unless told otherwise
        num_actions = num_actions or old.num_actions
        action_names = action_names or old.action_names
    num_actions = num_actions or (len(action_names) if action_names else largest + 1)
    if largest >= num_actions:
        raise InputError(f"{actions_csv} uses action {largest} but num_actions is {num_actions}")
    names = list(action_names or [str(i) for i in range(num_actions)])
    if len(names) != num_actions:
        raise InputError(f"{len(names)} action names for {num_actions} actions")
    if old is not None:
        info = old
        mine = ("import-video", frame_size, num_actions, names)
        if (info.source.get("kind"), info.frame_size, info.num_actions, list(info.action_names)) != mine:
            raise InputError(
                f"{out} holds a different dataset ({info.env}, frame size {info.frame_size}, "
                f"{info.num_actions} actions {info.action_names}); import into a new folder"
            )
    elif out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not a genie2 dataset; choose an empty or new folder")
    else:
        info = DatasetInfo("video", "video", frame_size, num_actions, names, 1, dict(kind="import-video", videos=[]))
    index = max(episode_indices(out), default=-1) + 1
    t = len(frames)
    flags = np.zeros(t, dtype=bool)
    Episode(frames, actions, np.zeros(t, np.float32), flags, flags.copy()).save(episode_path(out, index))
    info.max_num_actions = max(info.max_num_actions, actions.shape[1])
    info.source["videos"].append(str(video))
    info.num_episodes += 1
    info.num_frames += t
    info.save(out)
    return info
