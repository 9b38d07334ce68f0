"""Crafter (issue 19): tile-aligned frames, its presets, loading worlds by name, and the shipped Crafter world."""

import numpy as np
import pytest
import torch
from einops import rearrange

import genie2
import genie2.cli as cli
from genie2.data.collect import collect
from genie2.data.envs import GameEnv
from genie2.data.episode import Episode, episode_path
from genie2.model.genie2 import Genie2
from genie2.presets import TOKENIZER_PRESETS, WORLD_PRESETS
from genie2.tokenizer.model import Tokenizer, TokenizerConfig
from genie2.world import SHIPPED, load

crafter = pytest.importorskip("crafter")


def test_crafter_frames_are_72_pixels_so_every_tile_fills_one_8x8_patch():
    env = GameEnv("crafter")
    assert env.num_actions == 17 and env.action_names[5] == "do"
    for seed in (0, 1, 2):
        view = env.reset(seed=seed)[: 7 * 8]  # the 9x7 tiles of the map (below them the inventory)
        patches = rearrange(view, "(h p) (w q) c -> (h w) (p q c)", p=8, q=8)
        # a start view is grass with a tree or a cow: each patch is one whole tile, so few patches differ
        # (at 64 px, 7 px tiles, every one of them does)
        assert len(np.unique(patches, axis=0)) <= 8, seed
    assert Tokenizer(TokenizerConfig(frame_size=72)).latent_shape == (9, 9)


def test_the_crafter_presets_give_nine_by_nine_codes_and_a_world_that_learns_from_them(tmp_path):
    tokenizer_config = TOKENIZER_PRESETS["crafter-cpu"]()["model"]
    assert tokenizer_config.codebook_size == 1024 and tokenizer_config.encoder == "patch"
    collect(tmp_path / "d", "crafter", episodes=1, steps=3, progress=False)
    episode = Episode.load(episode_path(tmp_path / "d", 0))
    assert episode.frames.shape == (4, 72, 72, 3)
    tokenizer = Tokenizer(TokenizerConfig(**{**tokenizer_config.__dict__, "frame_size": 72}))
    codes = tokenizer.encode(torch.from_numpy(episode.frames)[None])
    assert codes.shape == (1, 4, 9, 9)
    model = Genie2.from_tokenizer(tokenizer, num_actions=17, **WORLD_PRESETS["crafter-cpu"]()["model"])
    loss, _ = model(state_codes=codes, actions=torch.from_numpy(episode.actions).clamp(min=0)[None])
    loss.backward()
    assert torch.isfinite(loss) and model.to_logits.weight.grad.abs().sum() > 0


def test_load_names_the_shipped_worlds_when_given_an_unknown_name():
    assert set(SHIPPED) >= {"minigrid", "crafter"}
    with pytest.raises(ValueError, match="no world named 'minecraft'.*minigrid, crafter"):
        load("minecraft")


def test_play_and_eval_take_a_world_by_name_or_folder(monkeypatch):
    import genie2.world

    asked = []

    def fake_load(checkpoint=None, **kwargs):
        asked.append(checkpoint)
        raise KeyboardInterrupt  # stop there: only the name matters

    monkeypatch.setattr(genie2.world, "load", fake_load)
    for argv in (["play", "--terminal", "--world", "crafter"], ["play", "--terminal", "--checkpoint", "runs/w"]):
        with pytest.raises(SystemExit):
            cli.main(argv)
    assert asked == ["crafter", "runs/w"]


def test_genie2_load_is_the_same_load():
    assert genie2.load is load


def test_every_crafter_action_has_a_key_moves_on_arrows_and_wasd_and_do_on_space():
    from genie2.play.keymap import keymap

    names = list(GameEnv("crafter").action_names)
    keys = keymap(names)
    assert set(keys.values()) == set(range(17))
    for arrow, letter, name in (
        ("ArrowLeft", "a", "move_left"),
        ("ArrowUp", "w", "move_up"),
        ("ArrowDown", "s", "move_down"),
    ):
        assert names[keys[arrow]] == names[keys[letter]] == name
    assert names[keys[" "]] == "do" and names[keys["1"]] == "noop"


def test_the_crafter_world_ships_whole_and_small():
    from genie2.world import WORLD_FILES

    folder, files = SHIPPED["crafter"], {"config.json", "model.safetensors", *WORLD_FILES}
    assert {p.name for p in folder.iterdir()} >= files
    assert sum((folder / name).stat().st_size for name in files) <= 20 * 2**20


def test_the_crafter_world_loads_by_name_and_dreams_left_and_right_apart():
    world = load("crafter")
    assert world.action_names[:5] == ["noop", "move_left", "move_right", "move_up", "move_down"]
    assert world.start_frames.shape[1:] == (72, 72, 3) and len(world.start_frames) > 1
    env = GameEnv("crafter")
    for seed in (900001, 900002, 900003):  # maps outside the training episodes' seeds
        dreamed = {}
        for name in ("move_left", "move_right"):
            session = world.session(env.reset(seed), temperature=0.0)
            frames = [session.step(world.action_names.index(name)) for _ in range(2)]
            dreamed[name] = torch.stack(frames) * 255
        # the key changes the dream (a world that ignored it would dream the same frames). That it scrolls
        # the right way from a first frame is not yet true of the shipped world (docs/crafter.md)
        assert (dreamed["move_left"] - dreamed["move_right"]).abs().mean() > 0.5, seed


def test_a_world_name_and_its_folder_are_the_same_world():
    from pathlib import Path

    from genie2.world import PRETRAINED, world_folder

    assert world_folder("crafter") == SHIPPED["crafter"] and world_folder(None) == PRETRAINED
    assert world_folder("runs/world") == Path("runs/world") and world_folder(Path("crafter")) == Path("crafter")
