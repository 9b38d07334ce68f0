"""Play a world model in the terminal: type an action, see the next dreamed frame.

Each frame is saved to a PNG (its path is printed) and, when the terminal shows colour,
drawn with half-block characters: one character cell holds two pixels, the upper one as
the foreground colour of "▀" and the lower one as the background (24-bit ANSI colour).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from genie2.errors import InputError
from genie2.play.interactive import QuitInteractive, prompt_action, save_frame
from genie2.play.media import frame_pixels
from genie2.world import World


def half_blocks(frame: np.ndarray, width: int = 64) -> str:
    """A frame (h w 3 uint8) as rows of coloured half blocks, at most `width` characters wide."""
    step = max(1, -(-frame.shape[1] // width))
    small = frame[::step, ::step]
    if len(small) % 2:
        small = np.concatenate((small, np.zeros_like(small[:1])))
    rows = []
    for top, bottom in zip(small[0::2], small[1::2], strict=True):
        cells = (
            f"\x1b[38;2;{a[0]};{a[1]};{a[2]}m\x1b[48;2;{b[0]};{b[1]};{b[2]}m▀" for a, b in zip(top, bottom, strict=True)
        )
        rows.append("".join(cells) + "\x1b[0m")
    return "\n".join(rows)


def supports_colour() -> bool:
    """Whether standard output is a terminal that shows colour."""
    return sys.stdout.isatty() and os.environ.get("TERM", "dumb") != "dumb" and "NO_COLOR" not in os.environ


def play_terminal(
    world: World,
    first_frame: np.ndarray,
    save_path: str | Path = "./last-frame.png",
    colour: bool | None = None,
    action_names: list[str] | None = None,
    input_fn: Callable[[str], str] = input,
    print_fn: Callable[[str], None] = print,
    **session_kwargs,
) -> int:
    """Read actions and show dreamed frames until 'q', end of input or Ctrl-C; returns frames played."""
    model = world.model
    if action_names and len(action_names) != world.num_actions:
        raise InputError(f"{len(action_names)} action names for a world with {world.num_actions} actions")
    colour = supports_colour() if colour is None else colour
    session = world.session(first_frame, **session_kwargs)
    if action_names:
        print_fn("actions: " + ", ".join(f"{i}={name}" for i, name in enumerate(action_names)))
    frame, played = rearrange(torch.as_tensor(first_frame), "h w c -> c h w").float() / 255, 0
    while True:
        path = save_frame(frame, save_path)
        if colour:
            print_fn(half_blocks(frame_pixels(frame)))
        print_fn(f"frame {played} saved to {path}")
        try:
            actions = prompt_action(
                played + 1, world.num_actions, model.allow_multiple_actions, model.max_num_actions, input_fn, print_fn
            )
            frame = session.step(actions).cpu()
        except (QuitInteractive, KeyboardInterrupt) as stop:  # Ctrl-C too: a play session has nothing to resume
            print_fn(("\n" if isinstance(stop, KeyboardInterrupt) else "") + f"stopped after {played} dreamed frames")
            return played
        played += 1
