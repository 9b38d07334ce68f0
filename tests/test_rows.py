"""Rows of a rollout restarted from a new frame (Rollout.restart_rows) go on exactly as a rollout of
their own from that frame, and the other rows as if nothing happened."""

import pytest
import torch

from conftest import tiny
from genie2.model.decoding import Rollout, Sampling

NO_KEY = torch.full((2, 1, 1), -1)


def restarted(model, guided=False, raster=None, compile=False):
    """Row 0 of a batch restarted after 5 frames, stepped 7 more: the largest logit gaps to a fresh
    rollout from its new frame (row 0) and to the same batch never restarted (row 1)."""
    torch.manual_seed(1)
    codes, start = torch.randint(0, 32, (2, 1, 2, 3)), torch.randint(0, 32, (1, 2, 3))
    actions = torch.randint(0, 5, (2, 12, 1))

    def rollout(prompt, keys):
        sampling = Sampling(temperature=0.0, cond_scale=2.0 if guided else 1.0, raster=raster)
        return Rollout(model, prompt, keys, sampling, guided, 3, compile=compile)

    with torch.no_grad():
        batch, kept = rollout(codes, NO_KEY), rollout(codes, NO_KEY)
        for t in range(5):
            batch.step(actions[:, t]), kept.step(actions[:, t])
        batch.restart_rows(torch.tensor([True, False]), start)
        fresh, gaps = rollout(start[:, None], NO_KEY[:1]), [0.0, 0.0]
        for t in range(5, 12):  # past the 3-frame window: the meta tokens move along per row
            codes, logits = batch.step(actions[:, t], return_logits=True)
            fresh_codes, fresh_logits = fresh.step(actions[:1, t], return_logits=True)
            kept_codes, kept_logits = kept.step(actions[:, t], return_logits=True)
            assert torch.equal(codes[0], fresh_codes[0]) and torch.equal(codes[1], kept_codes[1])
            gaps = [
                max(gaps[0], (logits[0] - fresh_logits[0]).abs().max()),
                max(gaps[1], (logits[1] - kept_logits[1]).abs().max()),
            ]
    return gaps


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("meta", [0, 4])
@pytest.mark.parametrize("raster", ["sequential", "speculative"])
def test_a_restarted_row_goes_on_as_a_rollout_of_its_own(guided, meta, raster):
    model = tiny(num_meta_tokens=meta, add_action_to_codes=True).eval()
    fresh_gap, kept_gap = restarted(model, guided, raster)
    assert fresh_gap < 1e-4 and kept_gap == 0


def test_a_parallel_model_and_a_compiled_step_restart_rows_too():
    assert restarted(tiny(decoding="parallel").eval(), guided=True)[0] < 1e-4
    assert restarted(tiny().eval(), compile=True)[0] < 1e-4


def test_restarting_rows_needs_a_window_and_matching_codes():
    model = tiny().eval()
    codes = torch.randint(0, 32, (2, 1, 2, 3))
    with torch.no_grad():
        unbounded = Rollout(model, codes, NO_KEY, Sampling(), False, None)
        unbounded.max_context_frames = unbounded.ring = None
        with pytest.raises(ValueError, match="needs a bounded context"):
            unbounded.restart_rows(torch.tensor([True, False]), codes[:1, 0])
        rollout = Rollout(model, codes, NO_KEY, Sampling(), False, 3)
        with pytest.raises(ValueError, match=r"restart_rows takes rows \(2,\) bool and codes"):
            rollout.restart_rows(torch.tensor([True, True]), codes[:1, 0])
        rollout.restart_rows(torch.tensor([True, False]), codes[1:, 0])
        with pytest.raises(ValueError, match="guidance cannot be switched on after rows restarted"):
            rollout.set_guided(True, codes)
