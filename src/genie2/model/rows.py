"""Rows of a Rollout that change mid-rollout: guidance's null-action rows switched on or off
(`set_guided`), and rows started over from a new frame (`restart_rows`, a vector env's reset).

Both build a fresh Rollout over the new rows' frames and copy its keys and values into the
rollout's cache, moved to their frames' slots and rotated to their positions (rotary positions
compose, so a row's tokens see each other exactly as in a rollout of their own). Rollout has
these as methods.

Dimension legend: b batch, B cache rows (b, and b null-action rows when guiding), r rows
restarted, h heads, n slots, d feature; t frames, h w latent height and width (codes).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from genie2.errors import InputError
from genie2.helpers import exists
from genie2.model.transformer import apply_rotary


def moved(rollout, fresh, source: Tensor, shift: int) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """`fresh`'s cache slots `source` (n) as `rollout` holds them `shift` frames later: their slots
    there (n), and per layer their keys, rotated by the shift, and values (B h n d)."""
    rotation = rollout.core.rotary(torch.tensor([[float(shift), 0.0]], device=source.device))
    meta = source < rollout.num_meta  # meta tokens keep their slots
    frame = torch.div(source - rollout.num_meta, rollout.slots_per_frame, rounding_mode="floor")
    position = torch.stack((frame + shift, (source - rollout.num_meta) % rollout.slots_per_frame), dim=-1)
    target = torch.where(meta, source, rollout._slots(position))
    keys = [apply_rotary(rotation, k[..., source, :]) for k in fresh.cache.keys]
    return target, keys, [v[..., source, :] for v in fresh.cache.values]


@torch.no_grad()
def set_guided(rollout, guided: bool, codes: Tensor) -> None:
    """Switch classifier-free guidance on or off from the next frame, leaving the conditioned
    rows' cache as it is: off drops the null-action rows; on reads `codes` (b t h w: the frames
    in view, oldest first) into new null-action rows, aligned with the cached frames."""
    if guided == rollout.guided:
        return
    if guided and exists(rollout.row_start):
        raise InputError("guidance cannot be switched on after rows restarted: start a new rollout")
    b, cache = rollout.batch, rollout.cache
    if not guided:  # copies, not views: a view would keep the null rows' memory alive
        cache.keys, cache.values = [k[:b].clone() for k in cache.keys], [v[:b].clone() for v in cache.values]
        if exists(rollout.row_start):
            rollout.row_start, cache.hidden = rollout.row_start[:b].clone(), cache.hidden[:b].clone()
        rollout.meta_keys = [k[:b].clone() for k in rollout.meta_keys] if exists(rollout.meta_keys) else None
        rollout.pending = (rollout.pending[0][:b], rollout.pending[1]) if exists(rollout.pending) else None
        rollout.guided = False
        return
    null = type(rollout)(rollout.model, codes, None, rollout.sampling, False, rollout.max_context_frames)
    if exists(rollout.pending):  # nothing cached yet: the prompt goes in with both rows
        rollout.pending = (torch.cat((rollout.pending[0], null.pending[0])), rollout.pending[1])
        rollout.guided = True
        return
    null.prefill()
    # the null rows' frames are numbered from 0 there, from the oldest cached frame here
    target, keys, values = moved(rollout, null, null.cache.filled.nonzero()[:, 0], rollout.first_cached_frame)
    for layer, (new_k, new_v) in enumerate(zip(keys, values, strict=True)):
        rows_k, rows_v = cache.keys[layer][:b].clone(), cache.values[layer][:b].clone()
        rows_k[..., target, :], rows_v[..., target, :] = new_k, new_v
        cache.keys[layer] = torch.cat((cache.keys[layer], rows_k))
        cache.values[layer] = torch.cat((cache.values[layer], rows_v))
    if exists(rollout.meta_keys):  # as first cached (position -1), which is where the null rollout put them
        meta = torch.arange(rollout.num_meta, device=codes.device)
        rollout.meta_keys = [
            torch.cat((mine, k[..., meta, :])) for mine, k in zip(rollout.meta_keys, null.cache.keys, strict=True)
        ]
    rollout.guided = True


@torch.no_grad()
def restart_rows(rollout, rows: Tensor, codes: Tensor) -> None:
    """Start the rows `rows` (b bool) over from `codes` (r h w, a frame per restarted row) as a new
    rollout's prompt with no key pressed: their newest frame becomes that one, and they no longer
    see their older frames; until their next step they report no reward or end (outcome). The
    other rows go on as they were; the next step dreams every row's next frame."""
    if not exists(rollout.ring):
        raise InputError("restarting rows needs a bounded context: set max_context_frames")
    rows = torch.as_tensor(rows, dtype=torch.bool, device=codes.device)
    if rows.shape != (rollout.batch,) or codes.shape[0] != int(rows.sum()) or codes.shape[1:] != rollout.latent_shape:
        raise InputError(
            f"restart_rows takes rows ({rollout.batch},) bool and codes (restarted rows, "
            f"{', '.join(map(str, rollout.latent_shape))}), got {tuple(rows.shape)} and {tuple(codes.shape)}"
        )
    rollout.prefill()
    ids = rows.nonzero()[:, 0]
    ids = torch.cat((ids, ids + rollout.batch)) if rollout.guided else ids
    no_key = torch.full((codes.shape[0], 1, 1), -1, dtype=torch.long, device=codes.device)
    fresh = type(rollout)(rollout.model, codes[:, None], no_key, rollout.sampling, rollout.guided, 1)
    fresh.prefill()  # its prompt is its frame 0; here it becomes the newest frame
    newest = rollout.num_frames - 1
    source = rollout.num_meta + torch.arange(rollout.slots_per_frame, device=codes.device)
    target, keys, values = moved(rollout, fresh, source, newest)
    for layer, (new_k, new_v) in enumerate(zip(keys, values, strict=True)):  # indexed (r n h d) so
        rollout.cache.keys[layer][ids[:, None], :, target] = rearrange(new_k, "r h n d -> r n h d")
        rollout.cache.values[layer][ids[:, None], :, target] = rearrange(new_v, "r h n d -> r n h d")
    rollout.cache.hide(ids, torch.cat((torch.arange(rollout.num_meta, device=codes.device), target)))
    if rollout.row_start is None:
        rollout.row_start = torch.zeros(rollout.cache.keys[0].shape[0], dtype=torch.long, device=codes.device)
    rollout.row_start[ids] = newest
    rollout.restarted = rows.clone() if rollout.restarted is None else rollout.restarted | rows  # no outcome yet
    rollout._move_meta()
    last = rollout.last_codes.clone()  # not in place: a step's caller may hold it
    last[rows] = rearrange(codes, "r h w -> r (h w)")
    rollout.last_codes = last
