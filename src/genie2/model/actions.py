"""Actions: checking what a user passes, embedding it as one token per frame, and the
behavioural-cloning heads that predict the next action from the world model's features.

`actions[:, t]` is the action that leads into frame t (actions[:, 0] is the initial action):
ints in [0, num_actions), shape `b t` or `b t a` for several keys at once, -1 as padding.

Dimension legend: b batch, t time, a keys pressed at once, d feature, l logits.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from genie2.errors import InputError
from genie2.helpers import exists
from genie2.model.transformer import Transformer


def check_actions(
    actions: Tensor,
    batch: int,
    time: int,
    num_actions: int | None,
    allow_multiple_actions: bool,
    max_num_actions: int,
) -> Tensor:
    """Validate user actions and return them as a long tensor `b t a` (-1 padded)."""
    if num_actions is None:
        raise InputError("this Genie2 has num_actions=None (unconditional); pass actions=None")
    if not isinstance(actions, Tensor):
        raise InputError(f"actions must be a torch.Tensor, got {type(actions).__name__}")
    if actions.dtype.is_floating_point or actions.dtype == torch.bool or actions.is_complex():
        raise InputError(f"actions must be an integer tensor, got dtype {actions.dtype}")
    if actions.ndim not in (2, 3):
        raise InputError(f"actions must be (b, t) or (b, t, a), got shape {tuple(actions.shape)}")
    if actions.shape[:2] != (batch, time):
        raise InputError(
            f"actions must have batch {batch} and one entry per frame ({time}), got shape {tuple(actions.shape)}"
        )
    if actions.ndim == 2:
        actions = rearrange(actions, "b t -> b t 1")
    num_keys = actions.shape[-1]
    if num_keys < 1:
        raise InputError("actions of shape (b, t, 0) carry no keys; use -1 for 'no key pressed'")
    if num_keys > 1 and not allow_multiple_actions:
        raise InputError(f"actions carry {num_keys} keys per step; set allow_multiple_actions=True to use several")
    if num_keys > max_num_actions:
        raise InputError(f"at most max_num_actions={max_num_actions} keys per step, got {num_keys}")
    if actions.numel() > 0:
        low, high = int(actions.min()), int(actions.max())
        if low < -1 or high >= num_actions:
            raise InputError(
                f"action ids must be in [0, {num_actions}) or -1 for padding, got values in [{low}, {high}]"
            )
    return actions.long()


def order_actions(actions: Tensor, ascending: bool = True) -> Tensor:
    """Move the -1 padding of each step to the end; with `ascending`, also sort the keys."""
    pad = actions < 0
    if ascending:
        largest = torch.iinfo(actions.dtype).max
        ordered = actions.masked_fill(pad, largest).sort(dim=-1).values
        return ordered.masked_fill(ordered == largest, -1)
    order = pad.long().argsort(dim=-1, stable=True)
    return actions.gather(-1, order)


class ActionEmbed(nn.Module):
    """One token per frame: a learned base plus the sum of the pressed keys' embeddings, or a
    learned null token when the actions are unknown (classifier-free guidance dropout)."""

    def __init__(self, dim: int, num_actions: int | None):
        super().__init__()
        self.keys = nn.Embedding(num_actions, dim) if exists(num_actions) else None
        self.base = nn.Parameter(torch.randn(dim) * 0.02)
        self.null = nn.Parameter(torch.randn(dim) * 0.02)

    def forward(self, actions: Tensor | None, drop: Tensor | None = None, shape=None) -> Tensor:
        """Tokens `b t d` for actions `b t a` (-1 padded); rows where `drop` (b) is True get null."""
        if not exists(actions):
            b, t = shape
            return repeat(self.null, "d -> b t d", b=b, t=t)
        pressed = actions >= 0
        embeds = self.keys(actions.clamp(min=0)) * rearrange(pressed, "... -> ... 1")
        tokens = self.base + embeds.sum(dim=-2)
        if exists(drop):
            tokens = torch.where(rearrange(drop, "b -> b 1 1"), self.null, tokens)
        return tokens


class MultiActionHead(nn.Module):
    """Autoregressive behavioural-cloning head: decodes the sorted keys of a step, then `end`."""

    def __init__(self, dim: int, num_actions: int, max_num_actions: int, transformer_kwargs: dict):
        super().__init__()
        kwargs = dict(transformer_kwargs)
        dim_inner = max(dim // 2, 8)
        depth = kwargs.pop("depth", 2)
        self.end_id = num_actions
        self.max_num_actions = max_num_actions
        self.proj_in = nn.Linear(dim, dim_inner, bias=False)
        self.key_embed = nn.Embedding(num_actions, dim_inner)
        self.transformer = Transformer(dim_inner, depth, rotary_axes=1, **kwargs)
        self.to_logits = nn.Linear(dim_inner, num_actions + 1, bias=False)

    def logits(self, features: Tensor, keys: Tensor) -> Tensor:
        """Teacher-forced logits `b (a+1) l` from the world model's features (b d) and the keys so far (b a)."""
        inputs = torch.cat((self.proj_in(features)[:, None], self.key_embed(keys.clamp(min=0))), dim=1)
        pos = torch.arange(inputs.shape[1], device=features.device)[:, None]
        return self.to_logits(self.transformer(inputs, pos=pos))

    def loss(self, features: Tensor, keys: Tensor, valid: Tensor) -> Tensor:
        """Cross entropy of the keys (b a, -1 padding at the end) then `end`, over `valid` rows."""
        labels = F.pad(keys, (0, 1), value=-1)
        count = (keys >= 0).sum(dim=-1, keepdim=True)
        labels = labels.scatter(-1, count, self.end_id)
        labels = labels.masked_fill(~rearrange(valid, "b -> b 1"), -1)
        return masked_cross_entropy(self.logits(features, keys), labels)


def action_loss_of(head: nn.Module | None, last_features: Tensor, actions: Tensor | None, time_mask) -> Tensor:
    """Behavioural cloning: the features after frame t (b t d) predict actions[:, t + 1] (b t a) through
    `head`, a linear layer over single actions or a MultiActionHead (0 without a head or actions)."""
    if head is None or actions is None or actions.shape[1] < 2:
        return last_features.new_zeros(())
    features, targets = last_features[:, :-1], actions[:, 1:]
    valid = time_mask[:, 1:] if exists(time_mask) else torch.ones_like(targets[..., 0], dtype=torch.bool)
    if not isinstance(head, MultiActionHead):
        return masked_cross_entropy(head(features), targets[..., 0].masked_fill(~valid, -1))
    flat = partial(rearrange, pattern="b t ... -> (b t) ...")
    return head.loss(flat(features), flat(targets), flat(valid))


def masked_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross entropy over labels != -1; zero (not NaN) when there are none."""
    logits, labels = logits.flatten(0, -2), labels.flatten()
    valid = labels >= 0
    if not valid.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[valid], labels[valid])
