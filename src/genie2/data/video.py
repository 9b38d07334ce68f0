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
import hashlib
import importlib.util
from pathlib import Path

import numpy as np

from genie2.data.collect import resize
from genie2.data.episode import DatasetInfo, Episode, count, episode_indices, episode_path
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


def video_identity(path: Path) -> dict:
    """What identifies an imported video: its resolved path, size and the sha256 of its bytes
    (so a copy or a renamed file is recognised as the same recording)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return dict(video=str(path.resolve()), bytes=path.stat().st_size, sha256=digest.hexdigest())


def video_reader_installed() -> bool:
    """Whether a video reader imageio can use (PyAV, a genie2 dependency, or imageio-ffmpeg) is installed."""
    return any(importlib.util.find_spec(name) is not None for name in ("av", "imageio_ffmpeg"))


def short_reason(error: BaseException) -> str:
    """One line saying why a decoder gave up on a file."""
    if isinstance(error, IndexError):  # imageio's PyAV plugin on a container without a video stream
        return "no video stream found"
    text = getattr(error, "strerror", None) or str(error).strip()  # strerror: PyAV's message without the path
    return text.splitlines()[0] if text else type(error).__name__


def probe(path: Path) -> str:
    """Why PyAV cannot open `path` (imageio says only that no plugin could)."""
    try:
        import av
    except ImportError:  # imageio-ffmpeg is the reader
        return "no installed reader could decode it"
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return "no video stream found"
    except Exception as error:  # whatever it is, it is the reason
        return short_reason(error)
    return "no installed reader could decode it"


def unreadable(path: Path, error: BaseException) -> InputError:
    """The error for a video that fails to decode: a broken file, or (only then) a missing reader."""
    if isinstance(error, OSError) and str(error).startswith("Could not find a backend"):
        if not video_reader_installed():
            return InputError(f"no video reader is installed to read {path}: pip install av (or 'imageio[ffmpeg]')")
        reason = probe(path)
    else:
        reason = short_reason(error)
    return InputError(f"{path} could not be read as a video (truncated or not a video file): {reason}")


def read_video(path: str | Path, frame_size: int) -> np.ndarray:
    """Frames (t h w 3 uint8) of a video file, resized to frame_size; a broken file is an InputError."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    if path.stat().st_size == 0:
        raise unreadable(path, EOFError("the file is empty"))
    frames, decoded = [], iio.imiter(path)
    while True:
        # decoders raise anything on a broken file (Pillow: SyntaxError; imageio's PyAV plugin: IndexError)
        try:
            frame = next(decoded, None)
        except Exception as error:
            raise unreadable(path, error) from error
        if frame is None:
            break
        frames.append(resize(np.asarray(frame)[..., :3].astype(np.uint8), frame_size))
    if not frames:
        raise InputError(f"{path} could not be read as a video (truncated or not a video file): no frame decoded")
    return np.stack(frames)


def dataset_for(
    out: Path, frame_size: int, largest: int, num_actions: int | None, action_names: list[str] | None
) -> DatasetInfo:
    """The dataset at `out` to add an episode to (checked to match these settings), or a new one;
    `largest` is the largest action id of the recording (the default action space is 0..largest)."""
    old = DatasetInfo.load(out) if (out / "dataset.json").exists() else None
    if old is not None:  # appending: the dataset's action space unless told otherwise
        num_actions = num_actions or old.num_actions
        action_names = action_names or old.action_names
    num_actions = num_actions or (len(action_names) if action_names else largest + 1)
    names = list(action_names or [str(i) for i in range(num_actions)])
    if len(names) != num_actions:
        raise InputError(f"{count(len(names), 'action name')} for {count(num_actions, 'action')}")
    if old is not None:
        mine = ("import-video", frame_size, num_actions, names)
        if (old.source.get("kind"), old.frame_size, old.num_actions, list(old.action_names)) != mine:
            raise InputError(
                f"{out} holds a different dataset ({old.env}, frame size {old.frame_size}, "
                f"{count(old.num_actions, 'action')} {old.action_names}); import into a new folder"
            )
        return old
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not a genie2 dataset; choose an empty or new folder")
    return DatasetInfo("video", "video", frame_size, num_actions, names, 1, dict(kind="import-video", videos=[]))


def refuse_duplicate(info: DatasetInfo, identity: dict, video: Path, out: Path) -> None:
    """An InputError if a video with these bytes is already in the dataset (datasets written before
    issue 17 list only their videos' paths, so their earlier imports cannot be recognised)."""
    for earlier in info.source.get("imports", []):
        if earlier["sha256"] == identity["sha256"]:
            raise InputError(
                f"{video} is already in {out}: episode {earlier['episode']} was imported from {earlier['video']} "
                f"(the same {count(identity['bytes'], 'byte')}); each recording is imported once"
            )


def import_video(
    video: str | Path,
    actions_csv: str | Path | None,
    out: str | Path,
    frame_size: int = 64,
    num_actions: int | None = None,
    action_names: list[str] | None = None,
) -> DatasetInfo:
    """Add one recording to the dataset at `out` as its next episode (creating the dataset); a video
    already imported there is refused. Without `actions_csv` its steps carry no action (-1)."""
    video, out = Path(video), Path(out)
    if not video.is_file():
        raise FileNotFoundError(f"video {video} does not exist")
    frames = read_video(video, frame_size) if actions_csv is None else None
    # without an action log every step is -1 (no label): `genie2 train-lam` and `label` supply latent actions
    actions = read_actions_csv(actions_csv) if actions_csv is not None else np.full((len(frames), 1), -1, np.int64)
    largest = int(actions.max())
    info = dataset_for(out, frame_size, largest, num_actions, action_names)
    if largest >= info.num_actions:
        raise InputError(f"{actions_csv} uses action {largest} but num_actions is {info.num_actions}")
    identity = video_identity(video)
    refuse_duplicate(info, identity, video, out)
    frames = read_video(video, frame_size) if frames is None else frames
    if len(actions) != len(frames):
        raise InputError(
            f"{actions_csv} has {count(len(actions), 'action row')} but {video} has {count(len(frames), 'frame')}; "
            "the CSV needs one row per frame"
        )
    index = max(episode_indices(out), default=-1) + 1
    t = len(frames)
    flags = np.zeros(t, dtype=bool)
    Episode(frames, actions, np.zeros(t, np.float32), flags, flags.copy()).save(episode_path(out, index))
    info.max_num_actions = max(info.max_num_actions, actions.shape[1])
    info.source["videos"].append(str(video))
    log = str(actions_csv) if actions_csv is not None else None
    info.source.setdefault("imports", []).append(dict(identity, actions=log, episode=index))
    info.num_episodes += 1
    info.num_frames += t
    info.save(out)
    return info
