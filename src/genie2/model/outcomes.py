"""What a world learns of each frame beside its codes: the reward received on arriving at it, as
its sign (-1, 0 or 1, as DIAMOND and IRIS learn Atari's clipped rewards), and whether its episode
ends there (terminated; a time limit's truncation is the env's to say). Both are read from the
features after the frame's last code, which have seen the frame and the action leading into it.

Dimension legend: b batch, t time (frames), d feature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genie2.errors import InputError
from genie2.helpers import exists


class OutcomeHeads(nn.Module):
    """Reward-sign logits (b t 3) and episode-end logits (b t) from the features after each frame."""

    def __init__(self, dim: int):
        super().__init__()
        self.reward = nn.Linear(dim, 3)
        self.end = nn.Linear(dim, 1)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        return self.reward(features), self.end(features)[..., 0]

    def loss(self, features: Tensor, rewards: Tensor, terminated: Tensor, time_mask: Tensor | None) -> Tensor:
        """Class-balanced cross entropy of the reward signs (b t float rewards) plus that of the ends
        (b t bool), over the frames `time_mask` (b t) keeps."""
        reward_logits, end_logits = self(features)
        valid = time_mask if exists(time_mask) else torch.ones_like(terminated, dtype=torch.bool)
        signs = torch.sign(rewards.float()).long()[valid] + 1  # 0: negative, 1: none, 2: positive
        ended = terminated[valid].long()
        reward_loss = balanced(F.cross_entropy(reward_logits[valid], signs, reduction="none"), signs)
        end_loss = F.binary_cross_entropy_with_logits(end_logits[valid], ended.float(), reduction="none")
        return reward_loss + balanced(end_loss, ended)

    @torch.no_grad()
    def predict(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """The likeliest reward sign (float, -1, 0 or 1) and whether the episode ended (bool), per frame."""
        reward_logits, end_logits = self(features)
        return (reward_logits.argmax(dim=-1) - 1).float(), end_logits > 0


def balanced(losses: Tensor, classes: Tensor) -> Tensor:
    """The mean over the classes present of each class's mean loss (n losses of n class ids): a goal
    reached once in a thousand frames weighs as much as the frames without one, or the heads learn
    to say "no reward" always."""
    present = classes.unique()
    return torch.stack([losses[classes == c].mean() for c in present]).mean()


def with_outcomes(model, total, parts: tuple, last_features, rewards, terminated, time_mask):
    """A Genie2's loss and its parts, the outcome heads' loss added (to both) when rewards and terminated
    (b t) are given; `last_features` (b t d) are the features after each frame's last code."""
    if not (exists(rewards) or exists(terminated)):
        return total, parts
    if not exists(model.outcomes) or not (exists(rewards) and exists(terminated)):
        raise InputError("rewards and terminated go together, to a model built with learn_rewards=True")
    for name, value in (("rewards", rewards), ("terminated", terminated)):
        if not isinstance(value, Tensor) or value.shape != last_features.shape[:2]:
            shape = tuple(last_features.shape[:2])
            raise InputError(
                f"{name} must be a tensor of one value per frame {shape}, got {getattr(value, 'shape', value)!r}"
            )
    loss = model.outcomes.loss(last_features, rewards.to(model.device), terminated.to(model.device), time_mask)
    return total + loss * model.outcome_loss_weight, (*parts, loss)
