"""Interactive generation from standard input: read actions, show the last dreamed frame."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from torch import Tensor

from genie2.errors import InputError
from genie2.helpers import to_uint8


class QuitInteractive(Exception):
    """Raised when the player ends an interactive session (typing q, or end of input)."""


def parse_action_input(text: str, num_actions: int, allow_multiple_actions: bool, max_num_actions: int) -> list[int]:
    """Parse "3" or "1,3,24" into sorted distinct action ids, or raise InputError saying why."""
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not (part.lstrip("-").isascii() and part.lstrip("-").isdigit()) for part in parts):
        raise InputError(
            f"{text!r} is not an action: type one integer id like 3"
            + (" or several separated by commas like 1,3,24" if allow_multiple_actions else "")
        )
    ids = sorted({int(part) for part in parts})
    bad = [i for i in ids if not 0 <= i < num_actions]
    if bad:
        raise InputError(f"action ids must be between 0 and {num_actions - 1}, got {bad}")
    if len(ids) > 1 and not allow_multiple_actions:
        raise InputError("this model takes one action per step (allow_multiple_actions=False)")
    if len(ids) > max_num_actions:
        raise InputError(f"at most {max_num_actions} actions at once, got {len(ids)}")
    return ids


def prompt_action(
    frame: int,
    num_actions: int,
    allow_multiple_actions: bool,
    max_num_actions: int,
    input_fn: Callable[[str], str] = input,
    print_fn: Callable[[str], None] = print,
) -> list[int]:
    """Ask for the next action until the answer is valid; 'q' or end of input quits."""
    keys = "ids separated by commas (1,3,24)" if allow_multiple_actions else "one id"
    while True:
        try:
            text = input_fn(f"[frame {frame}] next action, 0-{num_actions - 1} ({keys}; q quits): ")
        except EOFError as error:
            raise QuitInteractive from error
        if text.strip().lower() in {"q", "quit", "exit"}:
            raise QuitInteractive
        try:
            return parse_action_input(text, num_actions, allow_multiple_actions, max_num_actions)
        except InputError as error:
            print_fn(f"invalid action: {error}")


def save_frame(frame: Tensor, path: str | os.PathLike) -> Path:
    """Save one decoded frame (c h w): PNG for 1, 3 or 4 channels in [0, 1], else safetensors."""
    from safetensors.torch import save_file

    from genie2.data.episode import atomic_write

    path, frame = Path(path), frame.detach().float().cpu()
    if frame.ndim == 3 and frame.shape[0] in (1, 3, 4) and path.suffix.lower() == ".png":
        from PIL import Image

        array = to_uint8(frame).permute(1, 2, 0).squeeze(-1).numpy()
        atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))
        return path
    path = path.with_suffix(".safetensors")
    atomic_write(path, lambda tmp: save_file({"frame": frame.contiguous()}, str(tmp)))
    return path
