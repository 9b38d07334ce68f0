"""Serve fixed-length clips of recorded episodes for training, split by episode.

Dimension legend: t time (frames in a clip), h w frame height and width, a keys per step.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch.utils.data import Dataset

from genie2.data.episode import CorruptEpisodeError, DatasetInfo, episode_indices, episode_length, episode_path
from genie2.data.latent import with_latent_actions
from genie2.errors import InputError

SPLITS = ("train", "val", "all")


def split_episodes(indices: list[int], split: str, val_fraction: float = 0.1, seed: int = 0) -> list[int]:
    """The episodes of a split. Each episode's side is fixed by a seeded hash of its index, so
    no episode is in both and growing a dataset never moves an episode across; at least one
    episode is held out when there are two or more."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if split == "all":
        return sorted(indices)
    draws = {i: np.random.default_rng([seed, i]).random() for i in indices}
    val = {i for i, u in draws.items() if u < val_fraction}
    if not val and val_fraction > 0 and len(indices) >= 2:
        val = {min(draws, key=draws.get)}
    return sorted(i for i in indices if (i in val) == (split == "val"))


def episode_files(root: str | Path, skip_corrupt: bool = False) -> list[tuple[int, Path]]:
    """(index, path) of every readable episode; a damaged one raises, or is skipped with a warning."""
    found = []
    for index in episode_indices(root):
        path = episode_path(root, index)
        try:
            episode_length(path)
            found.append((index, path))
        except CorruptEpisodeError as error:
            if not skip_corrupt:
                raise CorruptEpisodeError(f"{error} (or pass skip_corrupt / --skip-corrupt)") from error
            warnings.warn(f"skipping {error}", stacklevel=3)
    return found


def start_frames(root: str | Path, count: int = 8, split: str = "val", skip_corrupt: bool = False) -> np.ndarray:
    """The first frames (uint8 n h w 3) of up to `count` episodes of a split (of every episode
    when the split is empty, as in a one-episode dataset): where players start."""
    chosen = set(split_episodes(episode_indices(root), split)) or set(episode_indices(root))
    paths = [path for index, path in episode_files(root, skip_corrupt) if index in chosen][:count]
    if not paths:
        raise InputError(f"{root} has no episodes to start from")
    frames = []
    for path in paths:
        with safe_open(str(path), framework="numpy") as f:
            frames.append(f.get_slice("frames")[0:1])
    return np.concatenate(frames)


def _codes_length(path: Path) -> int:
    """Frames in a codes file (codes and actions must agree)."""
    try:
        with safe_open(str(path), "np") as f:
            lengths = {f.get_slice(k).get_shape()[0] for k in ("codes", "actions")}
    except (SafetensorError, OSError, KeyError) as error:
        raise CorruptEpisodeError(f"codes file {path} is damaged ({error}); run `genie2 tokenize` again") from error
    if len(lengths) != 1:
        raise CorruptEpisodeError(f"codes file {path} has codes and actions of different lengths")
    return lengths.pop()


class ClipDataset(Dataset):
    """Clips of `clip_frames` consecutive frames with their actions, from one split.

    Each item: frames (t h w 3 uint8), actions (t a int64, -1 padded), length (the real
    frames; an episode shorter than t is padded at the end, which `video_time_len` masks).
    With `codes` (a folder from `genie2 tokenize`) items hold codes (t h w int64) instead of
    frames; with `outcomes` they also hold the episode's rewards (t float32) and terminated (t bool),
    0 and False where padded. With `actions` (a folder from `genie2 label`) items hold the latent actions
    written there instead of the episodes' own, and `info` counts those. Clips start every `stride` frames;
    reading goes through memory-mapped slices.
    """

    def __init__(
        self,
        root: str | Path,
        clip_frames: int = 16,
        split: str = "train",
        stride: int | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        skip_corrupt: bool = False,
        codes: str | Path | None = None,
        outcomes: bool = False,
        actions: str | Path | None = None,
    ):
        if not isinstance(clip_frames, int) or clip_frames < 1:
            raise InputError(f"clip_frames must be a positive int, got {clip_frames!r}")
        if stride is not None and (not isinstance(stride, int) or stride < 1):
            raise InputError(f"stride must be a positive int or None, got {stride!r}")
        self.root, self.clip_frames = Path(root), clip_frames
        self.stride = stride or max(1, clip_frames // 2)
        self.info = DatasetInfo.load(root)
        self.actions = Path(actions) if actions else None  # a latent-actions folder to read actions from
        if self.actions:
            self.info = with_latent_actions(self.info, self.actions)
        self.array, self.outcomes = "codes" if codes else "frames", outcomes
        self.files: dict[int, Path] = {}
        self.episodes, lengths = [], []
        for index in split_episodes(episode_indices(root), split, val_fraction, seed):
            path = Path(codes) / episode_path(root, index).name if codes else episode_path(root, index)
            try:
                if codes and not path.is_file():
                    raise CorruptEpisodeError(f"{path} is missing: run `genie2 tokenize` on {root} first")
                if self.actions and not (self.actions / path.name).is_file():
                    raise CorruptEpisodeError(f"{self.actions / path.name} is missing: run `genie2 label` on {root}")
                lengths.append(episode_length(path) if not codes else _codes_length(path))
                self.files[index] = path
                self.episodes.append(index)
            except CorruptEpisodeError as error:
                if not skip_corrupt:
                    raise CorruptEpisodeError(f"{error} (or pass skip_corrupt / --skip-corrupt)") from error
                warnings.warn(f"skipping {error}", stacklevel=2)
        self.lengths = lengths
        self.clips = [
            (i, start)
            for i, length in enumerate(lengths)
            for start in sorted(set(range(0, max(length - clip_frames, 0) + 1, self.stride)) | self._last(length))
        ]
        if not self.clips:
            raise InputError(f"split {split!r} of {root} has no episodes; collect more or lower val_fraction")
        self._files: dict[Path, object] = {}

    def _last(self, length: int) -> set[int]:
        """With outcomes, also the clip that ends with the episode: its last frame holds its end (and in
        many games its only reward), which the stride would often step over."""
        return {max(length - self.clip_frames, 0)} if self.outcomes else set()

    def _file(self, index: int, path: Path | None = None):
        """An open (memory-mapped) file of episode `index`: the one items read (its frames or codes), or
        `path`; kept per worker process."""
        path = self.files[index] if path is None else path
        if path not in self._files:
            self._files[path] = safe_open(str(path), "np")
        return self._files[path]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, item: int) -> dict:
        position, start = self.clips[item]
        f = self._file(self.episodes[position])
        stop = min(start + self.clip_frames, self.lengths[position])
        frames = f.get_slice(self.array)[start:stop]
        index = self.episodes[position]
        labels = self._file(index, self.actions / self.files[index].name) if self.actions else f
        actions = labels.get_slice("actions")[start:stop]
        if actions.shape[1] < self.info.max_num_actions:  # episodes may record fewer keys than the dataset
            actions = np.pad(actions, ((0, 0), (0, self.info.max_num_actions - actions.shape[1])), constant_values=-1)
        length, pad = stop - start, self.clip_frames - (stop - start)
        if pad:
            frames = np.concatenate((frames, np.zeros((pad, *frames.shape[1:]), frames.dtype)))
            actions = np.concatenate((actions, np.full((pad, actions.shape[1]), -1, np.int64)))
        frames = torch.from_numpy(np.ascontiguousarray(frames))
        item = {
            self.array: frames.long() if self.array == "codes" else frames,
            "actions": torch.from_numpy(np.ascontiguousarray(actions)),
            "video_time_len": length,
            "episode": self.episodes[position],
            "start": start,
        }
        if self.outcomes:  # from the episode itself (code files hold codes and actions only)
            episode = self._file(self.episodes[position], episode_path(self.root, self.episodes[position]))
            for name, dtype in (("rewards", np.float32), ("terminated", bool)):
                values = np.zeros(self.clip_frames, dtype)
                values[:length] = episode.get_slice(name)[start:stop]
                item[name] = torch.from_numpy(values)
        return item

    def __getstate__(self):
        """Pickle without the open files: DataLoader workers started by spawn (macOS, Windows;
        benchmarks/collect.py) receive the dataset pickled and open their own."""
        state = dict(self.__dict__)
        state["_files"] = {}
        return state
