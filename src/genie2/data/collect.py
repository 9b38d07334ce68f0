"""Collect episodes from an environment with a simple policy, in parallel, resumably.

Episode i is played with env seed `seed + i` and a policy generator seeded by (seed, i), so
the dataset does not depend on how episodes were spread over workers, and a collect that
was interrupted and run again with the same arguments ends with the same episodes.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from genie2.data.envs import DEFAULT_ENV, GameEnv
from genie2.data.episode import (
    CorruptEpisodeError,
    DatasetInfo,
    Episode,
    episode_indices,
    episode_length,
    episode_path,
)
from genie2.errors import InputError

POLICIES = ("random", "sticky", "moves")
STICKY_REPEAT = 0.8  # chance to repeat the last action: long runs of one action show its effect
MOVE_SHARE = 0.5  # the moves policy's chance of drawing one of the moves (the actions named like directions)


def random_policy(num_actions: int, rng: np.random.Generator) -> Callable[[np.ndarray], int]:
    """Uniformly random actions."""
    return lambda frame: int(rng.integers(num_actions))


def sticky_policy(num_actions: int, rng: np.random.Generator) -> Callable[[np.ndarray], int]:
    """Random actions, each repeated for a while (geometric, mean 1 / (1 - STICKY_REPEAT))."""
    last = [int(rng.integers(num_actions))]

    def act(frame: np.ndarray) -> int:
        if rng.random() >= STICKY_REPEAT:
            last[0] = int(rng.integers(num_actions))
        return last[0]

    return act


def moves_policy(num_actions: int, rng: np.random.Generator, action_names=None) -> Callable[[np.ndarray], int]:
    """Random actions drawn afresh each step (the last one says nothing of the next), a move (an action
    named like a direction: move_left, forward, ...) MOVE_SHARE of the time: Crafter's four moves of 17
    actions would otherwise come a quarter of the time, and the view would scroll seldom."""
    from genie2.play.keymap import WASD, named_key

    names = list(action_names or [])[:num_actions]
    is_move = np.array([named_key(name) in WASD.values() for name in names] + [False] * (num_actions - len(names)))
    moves = int(is_move.sum())
    if moves in (0, num_actions):
        return random_policy(num_actions, rng)  # no moves to favour (or nothing else): uniformly random
    weights = np.where(is_move, MOVE_SHARE / moves, (1 - MOVE_SHARE) / (num_actions - moves))
    return lambda frame: int(rng.choice(num_actions, p=weights))


def make_policy(name, num_actions: int, rng: np.random.Generator, action_names=None) -> Callable[[np.ndarray], int]:
    """A policy by name ('random', 'sticky', 'moves': that one reads `action_names`), 'module:function',
    or a factory itself, where factory(num_actions, rng) returns a callable from a frame (h w 3 uint8)
    to an action id."""
    if callable(name):
        return name(num_actions, rng)
    if name == "random":
        return random_policy(num_actions, rng)
    if name == "sticky":
        return sticky_policy(num_actions, rng)
    if name == "moves":
        return moves_policy(num_actions, rng, action_names)
    if ":" not in name:
        raise InputError(f"unknown policy {name!r}: use one of {POLICIES} or 'module:function'")
    module, _, attr = name.partition(":")
    if os.getcwd() not in sys.path:  # a policy file in the current folder, as `python -m` would find it
        sys.path.append(os.getcwd())
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as error:
        raise InputError(f"policy {name!r} could not be loaded: {error}") from error
    return factory(num_actions, rng)


def resize(frame: np.ndarray, size: int) -> np.ndarray:
    """A frame (h w 3 uint8) at size x size (area filter when shrinking)."""
    if frame.shape[:2] == (size, size):
        return frame
    shrink = frame.shape[0] >= size and frame.shape[1] >= size
    return np.asarray(Image.fromarray(frame).resize((size, size), Image.BOX if shrink else Image.BILINEAR))


def play_episode(env: GameEnv, policy, seed: int, max_steps: int, frame_size: int) -> Episode:
    """Play one episode (at most max_steps actions) and record it."""
    frames = [resize(env.reset(seed), frame_size)]
    actions, rewards, terminated, truncated = [-1], [0.0], [False], [False]
    for step in range(max_steps):
        action = policy(frames[-1])
        if not isinstance(action, (int, np.integer)) or not 0 <= action < env.num_actions:
            raise InputError(f"the policy returned {action!r}; actions are ints in [0, {env.num_actions})")
        frame, reward, done, cut = env.step(action)
        cut = cut or (step == max_steps - 1 and not done)
        frames.append(resize(frame, frame_size))
        actions.append(int(action))
        rewards.append(reward)
        terminated.append(done)
        truncated.append(cut)
        if done or cut:
            break
    return Episode(np.stack(frames), np.array(actions), np.array(rewards), np.array(terminated), np.array(truncated))


def collect_episodes(out: str, env: GameEnv, indices: list[int], seed: int, max_steps: int, frame_size: int, policy):
    """Collect and save the given episodes; yields each one's (index, frames)."""
    for index in indices:
        rng = np.random.default_rng([seed, index])
        act = make_policy(policy, env.num_actions, rng, env.action_names)
        episode = play_episode(env, act, seed + index, max_steps, frame_size)
        episode.save(episode_path(out, index))
        yield index, len(episode)


_WORKER_ENV: GameEnv | None = None


def _start_worker(env_name: str) -> None:
    """Each worker process makes its env once."""
    global _WORKER_ENV
    _WORKER_ENV = GameEnv(env_name)


def _collect_one(out: str, index: int, *args) -> int:
    """Collect one episode in a worker process; returns its frame count."""
    ((_, length),) = collect_episodes(out, _WORKER_ENV, [index], *args)
    return length


def _policy_name(policy) -> str:
    """How a policy is recorded in dataset.json."""
    if callable(policy):
        return f"{getattr(policy, '__module__', '?')}:{getattr(policy, '__qualname__', repr(policy))}"
    return policy


def whole_episodes(out: Path) -> set[int]:
    """Episodes already on disk and readable; damaged files are removed (to be collected again)."""
    whole = set()
    for index in episode_indices(out):
        try:
            episode_length(episode_path(out, index))
            whole.add(index)
        except CorruptEpisodeError as error:
            warnings.warn(f"{error}; collecting it again", stacklevel=3)
            episode_path(out, index).unlink(missing_ok=True)
    return whole


def collect(
    out: str | Path,
    env: str = DEFAULT_ENV,
    episodes: int = 100,
    steps: int = 500,
    seed: int = 0,
    policy: str | Callable = "sticky",
    frame_size: int | None = None,
    workers: int = 1,
    progress: bool = True,
) -> DatasetInfo:
    """Collect `episodes` episodes into `out`, continuing a previous run with the same arguments."""
    for name, value in dict(episodes=episodes, steps=steps, workers=workers).items():
        if not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be an int >= 0 (episode i uses env seed seed + i), got {seed!r}")
    if not callable(policy) and policy not in POLICIES and ":" not in str(policy):
        raise InputError(f"unknown policy {policy!r}: use one of {POLICIES} or 'module:function'")
    game = GameEnv(env)
    frame_size = game.preset.frame_size if frame_size is None else frame_size
    if not isinstance(frame_size, int) or not 8 <= frame_size <= 1024:
        raise InputError(f"frame_size must be an int in [8, 1024], got {frame_size!r}")
    source = dict(kind="collect", env=env, steps=steps, seed=seed, policy=_policy_name(policy))
    info = DatasetInfo(env, game.preset.env_id, frame_size, game.num_actions, list(game.action_names), 1, source)
    out = Path(out)
    _check_same_dataset(out, info)
    done = whole_episodes(out)
    todo = [i for i in range(episodes) if i not in done]
    args = (seed, steps, frame_size, policy)
    bar = tqdm(total=episodes, initial=episodes - len(todo), unit="episode", disable=not progress, desc="collect")
    frames, start = 0, time.perf_counter()
    with bar:

        def finished(length: int) -> None:
            nonlocal frames
            frames += length
            bar.update(1)
            bar.set_postfix(frames_per_s=f"{frames / max(time.perf_counter() - start, 1e-6):.0f}")

        if workers == 1 or len(todo) <= 1:
            try:
                for _, length in collect_episodes(str(out), game, todo, *args):
                    finished(length)
            finally:
                game.close()
        else:
            game.close()
            context = get_context("spawn")  # workers need no state from this process
            with ProcessPoolExecutor(workers, context, _start_worker, (env,)) as pool:
                futures = [pool.submit(_collect_one, str(out), i, *args) for i in todo]
                try:
                    for future in as_completed(futures):
                        finished(future.result())
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    return finalize(out, info)


def _check_same_dataset(out: Path, info: DatasetInfo) -> None:
    """Refuse to mix two datasets in one folder."""
    if (out / "dataset.json").exists():
        old = DatasetInfo.load(out)
        mine = (info.env, info.frame_size, info.source)
        theirs = (old.env, old.frame_size, old.source)
        if mine != theirs:
            raise InputError(
                f"{out} holds a different dataset (env {old.env}, frame size {old.frame_size}, {old.source}); "
                "use another --out, or the same arguments to continue it"
            )
    elif out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not a genie2 dataset; choose an empty or new folder")
    info.save(out)


def finalize(out: Path, info: DatasetInfo) -> DatasetInfo:
    """Count what is on disk and rewrite dataset.json."""
    info.num_episodes, info.num_frames = 0, 0
    for index in episode_indices(out):
        info.num_frames += episode_length(episode_path(out, index))
        info.num_episodes += 1
    info.save(out)
    return info
