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


def test_bad_tiles_counts_the_squares_with_a_visibly_wrong_pixel():
    from genie2.evaluate import bad_tiles

    truth = torch.zeros(2, 16, 16, 3, dtype=torch.uint8)
    pred = truth.clone()
    pred[0, 9, 2, 1] = 41  # one pixel off by more than 40 of 255: its 8x8 square of four is bad
    pred[0, 0:8, 8:16] = 40  # a whole square off by 40, just within: not bad (PSNR would call it worse)
    pred[1, 15, 15] = 255
    assert bad_tiles(pred, truth, tile=8).tolist() == [0.25, 0.25]
    assert bad_tiles(truth, truth, tile=8).tolist() == [0.0, 0.0]
    assert bad_tiles(pred, truth, tile=4).tolist() == [1 / 16, 1 / 16]
