"""The page's keyboard: which KeyboardEvent.key presses which action."""

from __future__ import annotations

import re
from operator import itemgetter

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
    "do": " ",  # Crafter's one verb: collect, attack, drink, eat what the player faces
}
WASD = {"w": "ArrowUp", "a": "ArrowLeft", "s": "ArrowDown", "d": "ArrowRight"}  # second keys for the arrows' actions
# words that may come before a direction: Crafter's move_left, Doom's TURN_LEFT, walk_forward ("pick_up" is no arrow)
MOVE_WORDS = {"move", "walk", "turn", "go", "run", "step", "strafe", "look", "rotate", "camera"}
SPARE_KEYS = list("1234567890qertyuiopfghjklzxcvbnmwasd")  # w a s d last: they double the arrows where free


def named_key(name: str) -> str | None:
    """The arrow or space key an action's name asks for ("left", "move_left", "TurnRight", "FIRE"), or None."""
    words = [word.lower() for word in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", name)]
    if not words or not set(words[:-1]) <= MOVE_WORDS:
        return None
    return NAMED_KEYS.get(words[-1])


def keymap(action_names: list[str]) -> dict[str, int]:
    """Keyboard keys (KeyboardEvent.key) for each action, arrows and space first: arrows and space for
    actions named like them (left, move_left, forward/up, down, fire, do), an action named by a digit
    ("0") on that digit, then the spare digits and letters in order; w a s d, where no action took them,
    press what the arrows press."""
    named: dict[str, int] = {}
    for action, name in enumerate(action_names):
        key = named_key(name)
        if key is not None and key not in named:
            named[key] = action
    # Doom-style names "0", "1", ...: their own digit, kept from the spare keys handed out below
    digits = {name.strip(): action for action, name in enumerate(action_names) if name.strip() in SPARE_KEYS[:10]}
    others = dict(digits)
    spare = (key for key in SPARE_KEYS if key not in digits)
    for action in range(len(action_names)):
        if action in named.values() or action in digits.values():
            continue
        key = next(spare, None)
        if key is None:
            break  # more actions than keys: the rest are left out of the keymap
        others[key] = action
    taken = {**named, **others}
    aliases = {letter: named[arrow] for letter, arrow in WASD.items() if arrow in named and letter not in taken}
    ordered = sorted(named.items(), key=itemgetter(1)) + sorted(others.items(), key=itemgetter(1))
    return dict(ordered + sorted(aliases.items(), key=itemgetter(1)))


def listed(keys: dict[str, int]) -> list[list]:
    """The keymap as [key, action] pairs in its order (arrows and space first): a JavaScript object would
    list keys like "1" before "ArrowLeft", whatever order the JSON gives."""
    return [[key, action] for key, action in keys.items()]
