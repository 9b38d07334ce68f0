"""Behaviour policies for `genie2 collect --policy examples.policies:NAME` (run from the repo root).

A world learns a reward only from data that shows it: in MiniGrid Empty 8x8 uniformly random
actions reach the goal in few episodes of 100 steps (the turns and the no-op actions cancel out),
so its world would rarely see one. These policies walk on instead, MiniGrid's actions being
0 left, 1 right, 2 forward:

    genie2 collect --env minigrid-empty --episodes 1000 --steps 100 --policy examples.policies:forward_biased \\
        --out empty --workers 2
    genie2 collect --env minigrid-empty --episodes 64 --steps 100 --seed 100000 \\
        --policy examples.policies:turn_biased --out empty-heldout      # held out: another policy

A factory takes (num_actions, rng) and returns a callable from a frame (h w 3 uint8) to an action id.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from genie2.errors import InputError

LEFT, RIGHT, FORWARD = 0, 1, 2


def moves(forward: float) -> Callable[[int, np.random.Generator], Callable[[np.ndarray], int]]:
    """A factory of policies that go forward with probability `forward` and turn left or right otherwise."""

    def factory(num_actions: int, rng: np.random.Generator) -> Callable[[np.ndarray], int]:
        if num_actions <= FORWARD:
            raise InputError(f"these policies press MiniGrid's left, right and forward; this env has {num_actions}")
        turn = (1.0 - forward) / 2
        return lambda frame: int(rng.choice((LEFT, RIGHT, FORWARD), p=(turn, turn, forward)))

    return factory


forward_biased = moves(0.6)  # training data: reaches the goal often
turn_biased = moves(0.4)  # held-out data: another action distribution, the goal less often
