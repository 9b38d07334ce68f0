"""Interactive generation: reading actions from standard input and saving the last frame."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import tiny
from genie2.play.interactive import parse_action_input


class Answers:
    """A fake `input` that replays answers and records prompts."""

    def __init__(self, *answers):
        self.answers, self.prompts = list(answers), []

    def __call__(self, prompt):
        self.prompts.append(prompt)
        if not self.answers:
            raise EOFError
        return self.answers.pop(0)


def test_parse_action_input():
    assert parse_action_input("3", 5, False, 1) == [3]
    assert parse_action_input(" 4, 1 ,1", 5, True, 3) == [1, 4]
    for bad in ["", "x", "1.5", "5", "-1", "1,,2"]:
        with pytest.raises(ValueError):
            parse_action_input(bad, 5, True, 3)
    with pytest.raises(ValueError, match="one action"):
        parse_action_input("1,2", 5, False, 1)
    with pytest.raises(ValueError, match="at most 2"):
        parse_action_input("1,2,3", 5, True, 2)


def test_interactive_reprompts_on_bad_input_and_saves_the_last_frame(tmp_path):
    decoder = nn.Sequential(nn.Conv2d(16, 3, 1), nn.Sigmoid())
    model = tiny(decoder=decoder).eval()
    answers = Answers("hello", "9", "1,2", "3", "0")
    messages = []
    path = tmp_path / "frames" / "last.png"
    video, actions = model.generate(
        torch.randn(1, 16, 2, 2),
        2,
        interactive=True,
        init_action=4,
        interactive_save_path=path,
        input_fn=answers,
        print_fn=messages.append,
    )
    assert video.shape == (1, 3, 3, 2, 2)
    assert actions.tolist() == [[[4], [3], [0]]]
    assert len(answers.prompts) == 5 and "[frame 1]" in answers.prompts[0]
    assert len(messages) == 3 and all("invalid action" in m for m in messages)
    assert "between 0 and 4" in messages[1]
    image = Image.open(path)
    assert image.size == (2, 2) and image.mode == "RGB"
    expected = (video[0, :, -1].clamp(0, 1) * 255).round().byte().permute(1, 2, 0)
    assert torch.equal(torch.from_numpy(np.asarray(image).copy()), expected)


def test_interactive_multi_keys_and_quitting_early(tmp_path):
    model = tiny(allow_multiple_actions=True, max_num_actions=3).eval()
    video, actions = model.generate(
        torch.randn(1, 16, 2, 2),
        5,
        interactive=True,
        init_action=[2],
        interactive_save_path=tmp_path / "last.png",
        input_fn=Answers("1,3", "q"),
        print_fn=lambda m: None,
    )
    assert video.shape == (1, 16, 2, 2, 2)  # prompt + one frame, then quit
    assert actions.tolist() == [[[2, -1], [1, 3]]]
    # more than 4 channels cannot be a PNG: the frame is saved as safetensors beside it
    assert (tmp_path / "last.safetensors").exists()
    video, _ = model.generate(
        torch.randn(1, 16, 2, 2),
        3,
        interactive=True,
        init_action=0,
        interactive_save_last_frame=False,
        input_fn=Answers(),
        print_fn=lambda m: None,
    )
    assert video.shape[2] == 1  # end of input before the first frame
