"""The sprite check: every state MiniGrid DoorKey can show, and the error a tokenizer makes on each."""

from types import SimpleNamespace

from genie2.data.sprites import sprite_errors, sprite_frames


def tile(frames, i, r, c, f=8):
    return frames[i, r * f : (r + 1) * f, c * f : (c + 1) * f]


def test_the_sprite_frames_show_every_state_each_drawn_differently():
    frames, tiles = sprite_frames()
    assert frames.shape[1:] == (64, 64, 3) and frames.dtype.name == "uint8"
    names = [name for *_, name in tiles]
    for facing in ("right", "down", "left", "up"):
        assert f"agent facing {facing} on the floor" in names and f"agent facing {facing} in the open door" in names
    assert {"door locked", "door closed", "door open", "key", "goal", "wall", "floor"} <= set(names)
    pixels = [tile(frames, i, r, c).tobytes() for i, r, c, _ in tiles]
    assert len(set(pixels)) == len(tiles)  # fifteen states, fifteen different pictures


class Smudger:
    """A stand-in tokenizer: codes are the frames themselves; decoding blurs one tile of the first frame."""

    config = SimpleNamespace(downsample=8)

    def __init__(self, row, column):
        self.row, self.column = row, column

    def encode(self, frames):
        return frames

    def decode(self, codes):
        frames = codes.float() / 255
        r, c = self.row * 8, self.column * 8
        frames[0, 0, r : r + 8, c : c + 8] = frames[0, 0, r : r + 8, c : c + 8].mean((0, 1))
        return frames


def test_sprite_errors_name_the_state_a_tokenizer_smudges():
    frames, tiles = sprite_frames()
    i, r, c, name = tiles[0]  # the agent, facing right, on the floor (frame 0)
    errors = sprite_errors(Smudger(r, c), frames, tiles)
    assert errors[name] > 40 and all(v == 0 for k, v in errors.items() if k != name)


def test_the_shipped_tokenizer_draws_every_sprite_state_crisply():
    """Every state a DoorKey tile can show (the agent's four facings on the floor and in the open door, the door
    locked, closed and open, the key, the goal, a wall, the floor) comes back within 40 of 255 (docs/pretrained.md)."""
    from genie2.data.sprites import sprite_report
    from genie2.world import load

    report = sprite_report(load().model.tokenizer)
    assert len(report["errors"]) == 15
    assert not report["wrong"], {state: report["errors"][state] for state in report["wrong"]}
