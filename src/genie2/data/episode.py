"""The on-disk episode format: a folder with `dataset.json` and one safetensors file per episode.

    DIR/dataset.json                  what the data is (see DatasetInfo)
    DIR/episodes/episode-000000.safetensors
        frames      t h w 3  uint8    RGB
        actions     t a      int64    actions[t] leads into frame t; actions[0] is -1 (none)
                                      a >= 1 keys per step, -1 padded
        rewards     t        float32  reward received on arriving at frame t (0 at t = 0)
        terminated  t        bool     the episode ended at frame t (goal, death)
        truncated   t        bool     it was cut at frame t (time limit)

Every file is written to a temporary name and renamed, so a crash never leaves half an
episode; an episode's file exists exactly when it is whole.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from genie2.checkpoint import config_from_dict
from genie2.errors import InputError

FORMAT_VERSION = 1
EPISODE_DIR = "episodes"


class CorruptEpisodeError(InputError):
    """An episode file that is missing, truncated or malformed."""


@dataclass
class Episode:
    """One recorded episode: frames t h w 3 uint8 and per-frame actions, rewards, flags."""

    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray

    def __post_init__(self):
        self.actions = np.asarray(self.actions, dtype=np.int64)
        if self.actions.ndim == 1:
            self.actions = self.actions[:, None]
        self.rewards = np.asarray(self.rewards, dtype=np.float32)
        self.terminated = np.asarray(self.terminated, dtype=bool)
        self.truncated = np.asarray(self.truncated, dtype=bool)
        t = len(self.frames)
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise InputError(f"frames must be uint8 (t, h, w, 3), got {self.frames.dtype} {self.frames.shape}")
        for name in ("actions", "rewards", "terminated", "truncated"):
            if len(getattr(self, name)) != t:
                raise InputError(f"episode {name} has {len(getattr(self, name))} entries for {t} frames")

    def __len__(self) -> int:
        return len(self.frames)

    def save(self, path: str | Path) -> None:
        """Write atomically (a temporary file, then a rename)."""
        tensors = {name: np.ascontiguousarray(value) for name, value in asdict(self).items()}
        atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp)))

    @classmethod
    def load(cls, path: str | Path) -> Episode:
        """Read an episode file; a missing or damaged file raises CorruptEpisodeError naming it."""
        path = Path(path)
        if not path.is_file():
            raise CorruptEpisodeError(f"episode file {path} is missing")
        try:
            return cls(**load_file(str(path)))
        except (SafetensorError, TypeError, ValueError, OSError) as error:
            raise CorruptEpisodeError(f"episode file {path} is damaged ({error}); collect it again") from error


def file_mode() -> int:
    """The mode a new file gets under this process's umask (0o644 under the usual 0o022)."""
    umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it into place, with the
    mode the umask gives (writers like safetensors create their files 0600, and a shared
    dataset would be unreadable to others)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        tmp.chmod(file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def count(n: int, noun: str) -> str:
    """`n` and the noun, plural unless n is 1 ("1 frame", "2 frames")."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


@dataclass
class DatasetInfo:
    """dataset.json: what was recorded and how, so a folder explains itself."""

    env: str
    env_id: str
    frame_size: int
    num_actions: int
    action_names: list[str]
    max_num_actions: int = 1  # keys pressed at once (the `a` of actions)
    source: dict = field(default_factory=dict)  # how it was made: collect arguments or the video
    num_episodes: int = 0
    num_frames: int = 0
    format_version: int = FORMAT_VERSION

    RENAMED: ClassVar[dict] = {"max_keys": "max_num_actions"}  # its name before 2026-12-01

    def save(self, root: str | Path) -> None:
        """Write DIR/dataset.json atomically."""
        text = json.dumps(asdict(self), indent=2)
        atomic_write(Path(root) / "dataset.json", lambda tmp: tmp.write_text(text))

    @classmethod
    def load(cls, root: str | Path) -> DatasetInfo:
        """Read DIR/dataset.json with clear errors for a missing file or another format version."""
        path = Path(root) / "dataset.json"
        if not path.is_file():
            raise FileNotFoundError(f"{root} is not a genie2 dataset: {path} is missing (run `genie2 collect`)")
        data = json.loads(path.read_text())
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise InputError(
                f"{path} has format version {version}; this genie2 reads version {FORMAT_VERSION}. "
                "Collect the data again with this version."
            )
        return config_from_dict(cls, data)


def episode_path(root: str | Path, index: int) -> Path:
    """Where episode `index` lives."""
    return Path(root) / EPISODE_DIR / f"episode-{index:06d}.safetensors"


def episode_indices(root: str | Path) -> list[int]:
    """Indices of the episode files present (partial writes never get the name)."""
    folder = Path(root) / EPISODE_DIR
    if not folder.is_dir():
        return []
    stems = (p.stem.split("-", 1)[1] for p in folder.glob("episode-*.safetensors"))
    return sorted(int(stem) for stem in stems if stem.isdigit())


def episode_length(path: str | Path) -> int:
    """Frames in an episode file, from its header; CorruptEpisodeError (naming it) if damaged."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "np") as f:
            lengths = {f.get_slice(k).get_shape()[0] for k in ("frames", "actions", "rewards")}
    except (SafetensorError, OSError, KeyError) as error:
        raise CorruptEpisodeError(f"episode file {path} is missing or damaged ({error})") from error
    if len(lengths) != 1:
        raise CorruptEpisodeError(f"episode file {path} has arrays of different lengths")
    return lengths.pop()
