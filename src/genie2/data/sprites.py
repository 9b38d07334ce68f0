"""Every sprite state of MiniGrid DoorKey, to check that a tokenizer draws each one crisply.

    sprite_frames() -> (frames n 64 64 3 uint8, tiles: list of (frame, row, column, name))
    sprite_errors(tokenizer, frames, tiles) -> {name: the largest pixel error of its tile, of 255}
    sprite_report(tokenizer) -> {"errors": {name: error}, "wrong": [names off by more than BAD_PIXEL]}

Whole-frame PSNR barely notices a sprite covering 1.5% of a frame; this names each one. The frames
are real DoorKey layouts drawn as the collector draws them (64x64, 8 px tiles), edited into each
state: the agent's four facings on the floor and in the open doorway, the key, the door locked,
closed and open, the goal, a wall and the floor.
"""

from __future__ import annotations

import numpy as np
import torch

from genie2.data.envs import GameEnv

FACINGS = ("right", "down", "left", "up")  # MiniGrid's agent_dir 0..3


def _door_and_key(grid) -> tuple:
    """The door's and the key's (column, row) in a DoorKey grid."""
    found = {}
    for x in range(grid.width):
        for y in range(grid.height):
            cell = grid.get(x, y)
            if cell is not None and cell.type in ("door", "key", "goal"):
                found[cell.type] = (x, y)
    return found["door"], found["key"], found["goal"]


def sprite_frames(seed: int = 3) -> tuple[np.ndarray, list[tuple[int, int, int, str]]]:
    """Frames showing every sprite state, and where each state's tile is."""
    game = GameEnv("minigrid")
    try:
        game.reset(seed)
        env = game.env.unwrapped
        door_pos, key_pos, goal_pos = _door_and_key(env.grid)
        door = env.grid.get(*door_pos)
        # a floor cell left of the wall, not the key's nor the agent's start
        floor = next(
            (x, y)
            for y in range(1, env.height - 1)
            for x in range(1, door_pos[0])
            if env.grid.get(x, y) is None and (x, y) != tuple(env.agent_pos)
        )
        frames, tiles = [], []

        def draw(agent_pos, agent_dir, locked, is_open, name, at):
            door.is_locked, door.is_open = locked, is_open
            env.agent_pos, env.agent_dir = np.array(agent_pos), agent_dir
            frames.append(game._frame().copy())
            tiles.append((len(frames) - 1, at[1], at[0], name))

        for d, facing in enumerate(FACINGS):
            draw(floor, d, True, False, f"agent facing {facing} on the floor", floor)
            draw(door_pos, d, False, True, f"agent facing {facing} in the open door", door_pos)
        for name, locked, is_open in (("door locked", True, False), ("door closed", False, False),
                                      ("door open", False, True)):  # fmt: skip
            draw(floor, 0, locked, is_open, name, door_pos)
        start = len(frames) - 1  # the last frame holds the key, the goal, a wall and the floor as well
        tiles += [(start, key_pos[1], key_pos[0], "key"), (start, goal_pos[1], goal_pos[0], "goal")]
        tiles += [(start, 0, 0, "wall")]
        empty = next((x, y) for y in range(1, env.height - 1) for x in range(1, env.width - 1)
                     if env.grid.get(x, y) is None and (x, y) != floor)  # fmt: skip
        tiles.append((start, empty[1], empty[0], "floor"))
        return np.stack(frames), tiles
    finally:
        game.close()


def sprite_errors(tokenizer, frames: np.ndarray, tiles: list[tuple[int, int, int, str]]) -> dict[str, int]:
    """The largest pixel error (of 255) of each named tile after encoding and decoding its frame."""
    f = tokenizer.config.downsample
    truth = torch.from_numpy(frames)
    recon = (tokenizer.decode(tokenizer.encode(truth[:, None]))[:, 0].cpu() * 255).round()
    error = (recon - truth.float()).abs()
    return {name: int(error[i, r * f : (r + 1) * f, c * f : (c + 1) * f].max()) for i, r, c, name in tiles}


def sprite_report(tokenizer) -> dict:
    """Every state through a 64x64 tokenizer: the largest pixel error of each, and the states drawn
    wrong (a pixel off by more than evaluate.BAD_PIXEL)."""
    from genie2.evaluate import BAD_PIXEL

    errors = sprite_errors(tokenizer, *sprite_frames())
    return dict(errors=errors, wrong=[name for name, error in errors.items() if error > BAD_PIXEL])
