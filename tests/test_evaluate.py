"""Evaluation pieces: the plot's PSNR averages errors, not capped PSNRs; bad counts are refused."""

import pytest
import torch

from genie2.evaluate import evaluate_world, psnr, psnr_of_mean_mse


def test_the_plotted_psnr_averages_errors_so_an_exact_frame_does_not_stretch_it():
    mse = torch.tensor([[0.0, 0.01], [0.01, 0.01]])  # episodes H: episode 0 matches step 1 exactly
    capped_mean = psnr(torch.zeros(2, 1), torch.tensor([[0.0], [0.1]])).mean()  # 100 dB and 20 dB
    assert capped_mean == pytest.approx(60.0)
    assert psnr_of_mean_mse(mse).tolist() == pytest.approx([23.0103, 20.0], abs=1e-3)  # 10 log10(1 / 0.005)


@pytest.mark.parametrize("episodes", [0, -3])
def test_evaluate_world_refuses_a_count_of_episodes_below_one(episodes):
    with pytest.raises(ValueError, match="episodes must be a positive int"):
        evaluate_world(object(), "nowhere", episodes=episodes)
