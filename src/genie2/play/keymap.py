"""The page's keyboard: which KeyboardEvent.key presses which action."""

from __future__ import annotations

# KeyboardEvent.key values tried first for actions whose names say where they go
NAMED_KEYS = {
    "left": "ArrowLeft",
    "right": "ArrowRight",
    "forward": "ArrowUp",
    "up": "ArrowUp",
    "down": "ArrowDown",
    "backward": "ArrowDown",
    "fire": " ",
    "attack": " ",
}
SPARE_KEYS = list("1234567890qwertyuiopasdfghjklzxcvbnm")


def keymap(action_names: list[str]) -> dict[str, int]:
    """Keyboard keys (KeyboardEvent.key) for each action: arrows and space for actions named like
    them (left, right, forward/up, down, fire), then digits and letters in order."""
    keys: dict[str, int] = {}
    spare = iter(SPARE_KEYS)
    for action, name in enumerate(action_names):
        key = NAMED_KEYS.get(name.strip().lower())
        if key is None or key in keys:
            key = next((k for k in spare if k not in keys), None)
            if key is None:
                break  # more actions than keys: the rest are left out of the keymap
        keys[key] = action
    return keys
