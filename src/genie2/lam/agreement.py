"""How latent actions agree with the true ones, where the data has them: normalised mutual information,
the accuracy of the best latent -> action table over the steps whose frame visibly changed, and the
confusion matrix. Steps where nothing changed cannot be told apart from pixels, so they are scored apart.

Dimension legend: n steps, k latent actions, a true actions.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torchmetrics.functional.clustering import normalized_mutual_info_score

CHANGE_LEVEL = 8  # a pixel channel that moves by more than this (of 255) is a visible change


def visibly_changed(prev: Tensor, next: Tensor, level: int = CHANGE_LEVEL) -> Tensor:
    """Per frame pair (n H W 3 each, uint8), whether any pixel changed by more than `level` (n,) bool."""
    return ((next.int() - prev.int()).abs() > level).flatten(1).any(1)


def fit_table(latents: Tensor, actions: Tensor, changed: Tensor, num_latents: int, num_actions: int) -> Tensor:
    """The true action (k,) each latent action most often was, over the changed steps (over all steps for
    a latent seen on no changed step; -1 for a latent never seen)."""
    weight = changed.double() * 1e9 + 1  # changed steps decide; unchanged ones only where a latent has none
    counts = torch.zeros(num_latents, num_actions, dtype=torch.float64).index_put_(
        (latents.long(), actions.long()), weight, accumulate=True
    )
    seen = counts.sum(1) > 0
    return torch.where(seen, counts.argmax(1), -1)


def confusion(predicted: Tensor, actions: Tensor, num_actions: int) -> Tensor:
    """Counts (a a): row = true action, column = predicted (a -1 prediction, unmapped, counts nowhere)."""
    known = predicted >= 0
    pairs = actions[known].long() * num_actions + predicted[known].long()
    return torch.bincount(pairs, minlength=num_actions * num_actions).reshape(num_actions, num_actions)


def agreement(latents: Tensor, actions: Tensor, changed: Tensor, table: Tensor, num_actions: int) -> dict:
    """Normalised mutual information of latent and true actions (over the changed steps), the accuracy of
    `table` (latent -> true action) over the changed steps and over the rest, per true action over the
    changed steps, and the changed steps' confusion matrix (rows true, columns mapped)."""
    if not len(latents) == len(actions) == len(changed):
        raise ValueError(
            f"latents, actions and changed differ in length: {len(latents)}, {len(actions)}, {len(changed)}"
        )
    mapped = table[latents.long()]
    right = mapped == actions
    moved = changed.bool()
    matrix = confusion(mapped[moved], actions[moved], num_actions)
    steps = torch.bincount(actions[moved].long(), minlength=num_actions)  # unmapped (-1) steps count as wrong
    per_action = {a: float(matrix[a, a] / steps[a]) for a in range(num_actions) if steps[a]}
    with warnings.catch_warnings():  # torchmetrics builds a sparse matrix and warns that it skips checks
        warnings.filterwarnings("ignore", message="Sparse invariant checks")
        nmi = normalized_mutual_info_score(latents[moved].long(), actions[moved].long()) if moved.sum() > 1 else 0.0
    return dict(
        nmi=float(nmi),
        mapped_accuracy=float(right[moved].float().mean()) if moved.any() else float("nan"),
        unchanged_accuracy=float(right[~moved].float().mean()) if (~moved).any() else float("nan"),
        changed_steps=int(moved.sum()),
        unchanged_steps=int((~moved).sum()),
        per_action=per_action,
        confusion=matrix.tolist(),
    )
