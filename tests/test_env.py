"""A world as a Gymnasium environment (genie2.env.WorldEnv, "genie2/World-v0")."""

import threading

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import genie2  # noqa: F401  (registers genie2/World-v0)
from genie2.env import WorldEnv, WorldVectorEnv, unit_frames
from genie2.model.genie2 import Genie2
from genie2.tokenizer import Tokenizer, TokenizerConfig
from genie2.world import World

pytestmark = pytest.mark.filterwarnings("ignore:this world has no learned reward")


WORLD = dict(dim=32, depth=1, heads=2, attn_dim_head=16, num_actions=5, max_context_frames=3)  # the test world's model


@pytest.fixture(scope="module")
def world():
    """A random 16x16 world with 5 actions, three start frames and a 3-frame window."""
    torch.manual_seed(0)
    tokenizer = Tokenizer(
        TokenizerConfig(frame_size=16, channels=(8, 16), res_blocks=1, dim_latent=8, codebook_size=16)
    )
    model = Genie2.from_tokenizer(tokenizer, **WORLD)
    starts = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    return World(model, start_frames=starts)


def test_the_env_passes_gymnasiums_checker(world):
    env = gymnasium.make("genie2/World-v0", world=world, temperature=1.0).unwrapped
    check_env(env, skip_render_check=False)
    frame, info = env.reset(seed=0)
    assert env.observation_space.contains(frame) and np.array_equal(env.render(), frame)
    assert info["learned_reward"] is False


def test_a_seeded_reset_repeats_the_episode_and_another_seed_does_not(world):
    def episode(seed):
        env = WorldEnv(world, temperature=1.0)
        frames = [env.reset(seed=seed)[0]]
        frames += [env.step(a)[0] for a in (0, 1, 2, 3, 4, 1)]
        return np.stack(frames)

    assert np.array_equal(episode(3), episode(3))
    assert not np.array_equal(episode(3), episode(4))


def test_steps_return_the_five_tuple_and_truncate_at_the_limit(world):
    env = WorldEnv(world, max_episode_steps=3)
    env.reset(seed=0)
    results = [env.step(1) for _ in range(3)]
    assert [r[3] for r in results] == [False, False, True]
    assert all(r[1] == 0.0 and r[2] is False for r in results)  # no reward head: reward 0, never terminated
    env.reset(seed=1)
    assert env.step(np.int64(2))[3] is False  # a new episode counts again; numpy ints are actions


def test_bad_actions_and_options_get_clear_errors(world):
    env = WorldEnv(world)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(0)
    env.reset(seed=0)
    for bad in (5, -1, 1.5, "2", True, None):
        with pytest.raises(ValueError, match=r"action must be an int in \[0, 5\)"):
            env.step(bad)
    with pytest.raises(ValueError, match="reset options are 'frame' and 'start'"):
        env.reset(options={"frames": None})
    with pytest.raises(ValueError, match=r"options\['start'\] must be an int in \[0, 3\)"):
        env.reset(options={"start": 3})
    with pytest.raises(ValueError, match=r"options\['frame'\] must be uint8 \(16, 16, 3\)"):
        env.reset(options={"frame": np.zeros((8, 8, 3), np.uint8)})
    with pytest.raises(ValueError, match="max_episode_steps must be a positive int"):
        WorldEnv(world, max_episode_steps=0)
    with pytest.raises(ValueError, match="temperature must be a finite number"):
        WorldEnv(world, temperature=float("nan"))


def test_a_given_start_frame_is_the_first_observation_as_the_world_draws_it(world):
    env = WorldEnv(World(world.model))  # no start frames of its own
    with pytest.raises(ValueError, match="no start frames"):
        env.reset(seed=0)
    frame = world.start_frames[1]
    shown, _ = env.reset(seed=0, options={"frame": frame})
    again, _ = WorldEnv(world).reset(seed=5, options={"start": 1})
    assert np.array_equal(shown, again) and shown.shape == frame.shape


def test_a_long_episode_runs_in_bounded_memory(world):
    env = WorldEnv(world, max_episode_steps=10_000)
    env.reset(seed=0)
    sizes = []
    for t in range(200):
        env.step(t % 5)
        sizes.append(env.session.rollout.cache.nbytes())
    assert len(set(sizes)) == 1  # the window's ring of slots: nothing grows
    assert len(env.session.codes) <= 4


def test_gymnasium_make_builds_the_shipped_world_and_a_checkpoint(world, tmp_path):
    env = gymnasium.make("genie2/World-v0", world="minigrid", max_episode_steps=2)
    frame, _ = env.reset(seed=0)
    assert frame.shape == env.observation_space.shape and env.action_space.n == 7
    assert env.step(0)[0].dtype == np.uint8
    world.model.save_pretrained(tmp_path)
    env = gymnasium.make("genie2/World-v0", world=str(tmp_path))
    assert env.reset(seed=0, options={"frame": world.start_frames[0]})[0].shape == (16, 16, 3)


def test_the_vector_env_steps_each_env_as_the_single_env_would(world):
    envs = gymnasium.make_vec("genie2/World-v0", num_envs=3, world=world)
    assert isinstance(envs, WorldVectorEnv) and envs.action_space.shape == (3,)
    frames, info = envs.reset(seed=0, options={"start": [0, 1, 2]})
    assert info["start"].tolist() == [0, 1, 2] and info["_start"].all() and not info["learned_reward"].any()
    actions = np.random.default_rng(0).integers(0, 5, (6, 3))
    got = [frames] + [envs.step(a)[0] for a in actions]
    rendered = envs.render()  # as Gymnasium's vector envs render: a frame per env
    assert isinstance(rendered, tuple) and np.array_equal(np.stack(rendered), got[-1])
    for i in range(3):
        env = WorldEnv(world)
        alone = [env.reset(seed=0, options={"start": i})[0]] + [env.step(a)[0] for a in actions[:, i]]
        assert np.array_equal(np.stack(got)[:, i], np.stack(alone))


def test_an_ended_episode_restarts_on_the_next_step_from_a_start_frame(world):
    envs = WorldVectorEnv(2, world, max_episode_steps=2)
    envs.reset(seed=0)
    assert not envs.step([1, 2])[3].any()
    assert envs.step([1, 2])[3].all()  # truncated at the limit
    frames, rewards, terminated, truncated, info = envs.step([3, 3])  # a restarting env's action is ignored
    drawn = [WorldEnv(world).reset(options={"start": k})[0] for k in range(3)]
    assert all(np.array_equal(frame, drawn[k]) for frame, k in zip(frames, info["start"], strict=True))
    assert info["_start"].all() and not (terminated.any() or truncated.any()) and not rewards.any()
    _, _, _, truncated, info = envs.step([0, 0])
    assert not truncated.any() and "_start" not in info  # a new episode's count, and no restart this step


def test_the_vector_env_is_seeded_bounded_and_refuses_bad_actions(world):
    def frames(seed, steps=40):
        envs = WorldVectorEnv(2, world, max_episode_steps=7, temperature=1.0)
        out = [envs.reset(seed=seed)[0]]
        sizes = set()
        for t in range(steps):
            out.append(envs.step([t % 5, (t * 3) % 5])[0])
            sizes.add(envs.session.rollout.cache.nbytes())
        return np.stack(out), sizes

    first, sizes = frames(3)
    assert np.array_equal(first, frames(3)[0]) and not np.array_equal(first, frames(4)[0])
    assert len(sizes) == 1  # restarts every 7 steps: the cache stays the window's ring
    envs = WorldVectorEnv(2, world)
    envs.reset(seed=0)
    for bad in ([5, 0], [0], [0.5, 1], 3):
        with pytest.raises(ValueError, match=r"action must be an int in \[0, 5\), one per env \(2\)"):
            envs.step(bad)
    with pytest.raises(ValueError, match="num_envs must be a positive int"):
        WorldVectorEnv(0, world)


def rewarding(world, reward_bias, end_bias):
    """The test world with outcome heads that always predict the given reward sign and end logits."""
    torch.manual_seed(0)
    model = world.model
    twin = Genie2.from_tokenizer(model.tokenizer, **WORLD, learn_rewards=True)
    twin.load_state_dict(model.state_dict(), strict=False)  # the same world, plus heads
    with torch.no_grad():
        for head, bias in ((twin.outcomes.reward, reward_bias), (twin.outcomes.end, end_bias)):
            head.weight.zero_()
            head.bias.copy_(torch.tensor(bias))
    return World(twin, start_frames=world.start_frames)


def test_a_world_with_learned_outcomes_rewards_and_ends_episodes(world):
    env = WorldEnv(rewarding(world, [0.0, 0.0, 5.0], [5.0]))
    assert env.reset(seed=0)[1]["learned_reward"] is True
    _, reward, terminated, truncated, _ = env.step(1)
    assert (reward, terminated, truncated) == (1.0, True, False)
    envs = WorldVectorEnv(2, rewarding(world, [5.0, 0.0, 0.0], [5.0]))
    envs.reset(seed=0)
    _, rewards, terminated, _, _ = envs.step([0, 1])
    assert rewards.tolist() == [-1.0, -1.0] and terminated.all()
    _, rewards, terminated, _, _ = envs.step([0, 1])  # both restart: their first frames
    assert rewards.tolist() == [0.0, 0.0] and not terminated.any()
    sign, ended = envs.session.rollout.outcome()  # the rollout says so too, until the rows' next step
    assert sign.tolist() == [0.0, 0.0] and not ended.any()
    assert envs.step([0, 1])[2].all()
    envs.session.restart(torch.tensor([True, False]), unit_frames(envs.world, world.start_frames[:1]))
    sign, ended = envs.session.rollout.outcome()  # only the restarted row is at a first frame
    assert sign.tolist() == [0.0, -1.0] and ended.tolist() == [False, True]


def test_an_env_that_ends_restarts_alone_and_the_others_go_on(world, monkeypatch):
    import genie2.env

    real, calls = genie2.env.outcomes_of, []

    def env_0_ends_at_step_2(session):
        rewards, ended = real(session)
        calls.append(1)
        ended[0] = len(calls) == 2
        return rewards, ended

    monkeypatch.setattr(genie2.env, "outcomes_of", env_0_ends_at_step_2)
    envs = WorldVectorEnv(2, world)
    frames = [envs.reset(seed=0, options={"start": [0, 1]})[0]]
    actions = [[1, 2], [3, 4], [0, 0], [2, 1], [4, 3]]
    ends = []
    for a in actions:
        frame, _, terminated, _, _ = envs.step(a)
        frames.append(frame)
        ends.append(terminated.tolist())
    assert ends == [[False, False], [True, False], [False, False], [False, False], [False, False]]
    env = WorldEnv(world)
    alone = [env.reset(options={"start": 1})[0]] + [env.step(a[1])[0] for a in actions]
    assert np.array_equal(np.stack(frames)[:, 1], np.stack(alone))  # env 1 never noticed env 0's restart
    drawn = [WorldEnv(world).reset(options={"start": k})[0] for k in range(3)]
    assert any(np.array_equal(frames[3][0], d) for d in drawn)  # env 0 restarted from a start frame


def test_the_dream_planner_takes_the_first_action_of_the_plan_its_dream_rewarded(world, monkeypatch):
    from genie2.plan import DreamPlanner

    with pytest.raises(ValueError, match="train it with --learn-rewards"):
        DreamPlanner(world, candidates=4, horizon=3)
    planner = DreamPlanner(rewarding(world, [0.0, 5.0, 0.0], [-5.0]), candidates=16, horizon=3)
    real_step, first = planner.envs.step, []

    def rewards_action_3_first(actions):
        frames, rewards, terminated, truncated, info = real_step(actions)
        if not first:  # the dream's first step: only plans that start with 3 are rewarded
            first.append(1)
            rewards = (np.asarray(actions) == 3).astype(np.float32)
        return frames, rewards, terminated, truncated, info

    monkeypatch.setattr(planner.envs, "step", rewards_action_3_first)
    assert planner.act(world.start_frames[0]) == 3
    first.clear()
    monkeypatch.setattr(planner.envs, "step", real_step)
    assert 0 <= planner.act(world.start_frames[1]) < 5  # no reward dreamed: any action


def test_a_planner_that_sees_no_reward_follows_its_plan_and_a_reward_overrides_it():
    from genie2.plan import Shooting, random_plans

    planner = Shooting(candidates=8, horizon=5, discount=0.95, seed=0, repeat=0.0)
    nothing = lambda actions: (np.zeros(len(actions)), np.zeros(len(actions), bool))  # noqa: E731
    planner.choose(nothing, 7)
    plan = planner.plan.copy()
    assert [planner.choose(nothing, 7) for _ in range(3)] == plan[1:4].tolist()  # warm start wins ties
    seen = []

    def rewards_action_6_first(actions):
        seen.append(np.asarray(actions).copy())
        return (len(seen) == 1) * (np.asarray(actions) == 6).astype(float), np.zeros(len(actions), bool)

    planner.plan = np.zeros(5, int)  # a kept plan that starts with 0
    seen.clear()
    action = planner.choose(rewards_action_6_first, 7)
    assert action == (6 if (seen[0] == 6).any() else 0)
    sticky = random_plans(2000, 7, 8, 0.75, np.random.default_rng(0))
    assert 0.7 < (sticky[:, 1:] == sticky[:, :-1]).mean() < 0.85  # repeat 0.75, plus 1/7 by chance
    with pytest.raises(ValueError, match="repeat"):
        Shooting(8, 5, 0.95, 0, repeat=1.0)


def test_a_vector_env_of_a_world_without_start_frames_restarts_where_it_was_reset(world):
    envs = WorldVectorEnv(2, World(world.model), max_episode_steps=1)
    first, _ = envs.reset(seed=0, options={"frame": world.start_frames[:2]})
    assert envs.step([0, 1])[3].all()
    assert np.array_equal(envs.step([0, 1])[0], first)  # both restarted from their reset frames
    unbounded = World(world.model, max_context_frames=None)
    unbounded.max_context_frames = None
    with pytest.raises(ValueError, match="needs max_context_frames"):
        WorldVectorEnv(2, unbounded)


def test_the_real_planner_reaches_a_goal_it_can_see_and_leaves_the_game_as_it_was():
    from genie2.plan import RealPlanner

    pytest.importorskip("minigrid")  # registers its envs
    game = gymnasium.make("MiniGrid-Empty-5x5-v0")
    game.reset(seed=0)
    game.unwrapped.agent_pos, game.unwrapped.agent_dir = (3, 1), 1  # facing the goal (3, 3), two cells down
    planner = RealPlanner(candidates=256, horizon=4, seed=0)  # a plan of forward, forward among them
    rewards = []
    while len(rewards) < 4 and not (rewards and rewards[-1] > 0):
        state = (tuple(game.unwrapped.agent_pos), game.unwrapped.agent_dir, game.unwrapped.step_count)
        action = planner.act(game)
        assert (tuple(game.unwrapped.agent_pos), game.unwrapped.agent_dir, game.unwrapped.step_count) == state
        rewards.append(game.step(action)[1])
    assert len(rewards) == 2 and rewards[-1] > 0  # forward twice: the soonest reward has the highest return
    with pytest.raises(ValueError, match="discount must be in"):
        RealPlanner(discount=0.0)
    game.unwrapped.lock = threading.Lock()  # a game holding something copy.deepcopy cannot copy
    with pytest.raises(ValueError, match="copy.deepcopy cannot copy it"):
        planner.act(game)
