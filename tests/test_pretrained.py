"""The world that ships inside the package: present, small, loadable with no argument, playable."""

import torch
from einops import rearrange

import genie2
from genie2.data.envs import MINIGRID_ACTIONS, GameEnv
from genie2.world import PRETRAINED, WORLD_FILES

MAX_SHIPPED_BYTES = 20 * 2**20


def unit(frame) -> torch.Tensor:
    """An env frame (h w 3 uint8) as the session's frames (3 h w float in [0, 1])."""
    return rearrange(torch.from_numpy(frame).float() / 255, "h w c -> c h w")


def test_the_pretrained_world_ships_whole_and_small():
    files = {"config.json", "model.safetensors", *WORLD_FILES}
    assert {p.name for p in PRETRAINED.iterdir()} >= files
    assert sum((PRETRAINED / name).stat().st_size for name in files) <= MAX_SHIPPED_BYTES


def test_load_with_no_argument_gives_a_world_that_answers_the_keys():
    world = genie2.load()
    assert list(world.action_names) == list(MINIGRID_ACTIONS) and len(world.start_frames) > 0
    env = GameEnv("minigrid")
    for seed in (900001, 900002, 900003):  # layouts outside the training episodes' seeds
        truth, dreamed = {}, {}
        for name in ("left", "right"):
            action, start = world.action_names.index(name), env.reset(seed)
            truth[name] = torch.stack([unit(env.step(action)[0]) for _ in range(2)])
            session = world.session(start, temperature=0.0)
            dreamed[name] = torch.stack([session.step(action) for _ in range(2)])
        # each dreamed turn is nearer the real turn it asked for than to the other one
        for asked, other in (("left", "right"), ("right", "left")):
            error = (dreamed[asked] - truth[asked]).square().mean()
            assert error < (dreamed[asked] - truth[other]).square().mean(), (seed, asked)


def test_world_rollout_refuses_action_ids_that_are_not_integers():
    import numpy as np
    import pytest

    world = genie2.load()
    for actions in (np.array([0, 1.5]), np.array(["0", "2"])):
        with pytest.raises(ValueError, match="integer action ids"):
            world.rollout(world.start_frames[:1], actions)


def test_the_latent_world_ships_small_and_answers_real_keys_through_its_map():
    """minigrid-latent never saw an action label: its LAM named the actions from frames, 10 labelled episodes
    mapped them onto the keys. Driven by real keys, it still turns the way it is told."""
    from genie2.world import SHIPPED

    folder = SHIPPED["minigrid-latent"]
    files = {"config.json", "model.safetensors", "action-map.json", *WORLD_FILES}
    assert {p.name for p in folder.iterdir()} >= files
    assert sum((folder / name).stat().st_size for name in files) <= MAX_SHIPPED_BYTES
    world = genie2.load("minigrid-latent")
    assert list(world.action_names) == list(MINIGRID_ACTIONS) and world.model.num_actions == 8
    env = GameEnv("minigrid")
    for seed in (900001, 900002):  # layouts outside the training episodes' seeds
        truth, dreamed = {}, {}
        for name in ("left", "right"):
            action, start = world.action_names.index(name), env.reset(seed)
            truth[name] = unit(env.step(action)[0])
            dreamed[name] = world.session(start, temperature=0.0).step(action)
        for asked, other in (("left", "right"), ("right", "left")):
            error = (dreamed[asked] - truth[asked]).square().mean()
            assert error < (dreamed[asked] - truth[other]).square().mean(), (seed, asked)


def test_the_shipped_lam_names_the_real_actions_of_unseen_episodes():
    import numpy as np

    from genie2.lam.agreement import visibly_changed

    lam = genie2.load_lam()  # minigrid: its LAM, with the map beside it
    env, rng = GameEnv("minigrid"), np.random.default_rng(0)
    frames, actions = [env.reset(900005)], []
    for _ in range(120):
        actions.append(int(rng.integers(0, 3)))  # left, right, forward: what a player mostly presses
        frames.append(env.step(actions[-1])[0])
    frames, actions = torch.from_numpy(np.stack(frames)), torch.tensor(actions)
    changed = visibly_changed(frames[:-1], frames[1:])
    mapped = lam.to_actions(lam.infer(frames))
    assert changed.sum() > 60 and (mapped[changed] == actions[changed]).float().mean() >= 0.95
