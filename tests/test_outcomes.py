"""Rewards and episode ends learned beside the codes (Genie2Config.learn_rewards, genie2.model.outcomes)."""

import numpy as np
import pytest
import torch

from conftest import tiny
from genie2.data.clips import ClipDataset
from genie2.data.episode import Episode, episode_path
from genie2.model.genie2 import Genie2
from genie2.train.world_model import collate, world_loss
from test_data import make_dataset


def outcome_batch(b=16, t=4, seed=0):
    """Random clips whose reward sign and end follow the frame's first code: code 3 rewards +1, code 5
    -1, code 7 ends the episode."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 8, (b, t, 2, 3), generator=g)
    first = codes[:, :, 0, 0]
    rewards = (first == 3).float() - (first == 5).float() * 0.5
    return dict(codes=codes, actions=torch.randint(0, 5, (b, t, 1), generator=g), rewards=rewards, ends=first == 7)


def test_the_heads_learn_reward_signs_and_ends_that_the_frames_decide():
    torch.manual_seed(0)
    model = tiny(learn_rewards=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(150):
        batch = outcome_batch(seed=step)
        loss, parts = model(
            state_codes=batch["codes"], actions=batch["actions"], rewards=batch["rewards"], terminated=batch["ends"]
        )
        assert len(parts) == 4 and parts[3] > 0
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    batch = outcome_batch(b=64, seed=10_000)  # clips it never saw
    latents = model.codes_to_latents(batch["codes"])
    tokens = model.frame_tokens(latents, model.action_embed(batch["actions"], shape=batch["codes"].shape[:2]))
    t, k = batch["codes"].shape[1], 2 * 3 + 1
    features = model.transformer(tokens, pos=model.frame_positions(t, k - 1)).unflatten(1, (t, k))[:, :, -1]
    signs, ends = model.outcomes.predict(features)
    assert (signs == torch.sign(batch["rewards"])).float().mean() > 0.95
    assert (ends == batch["ends"]).float().mean() > 0.95


def test_a_rare_reward_weighs_as_much_as_the_frames_without_one():
    """Balanced loss: one rewarded frame among 999 others counts for half, so heads that always say
    "no reward" (a sparse goal's trap) pay for it."""
    from genie2.model.outcomes import OutcomeHeads, balanced

    losses, classes = torch.cat((torch.full((999,), 0.1), torch.tensor([3.0]))), torch.tensor([1] * 999 + [2])
    assert torch.isclose(balanced(losses, classes), torch.tensor(1.55))
    assert torch.isclose(balanced(losses[:999], classes[:999]), torch.tensor(0.1))  # one class: its mean
    heads = OutcomeHeads(4)
    features, rewards, ends = torch.randn(1, 1000, 4), torch.zeros(1, 1000), torch.zeros(1, 1000, dtype=torch.bool)
    rewards[0, -1], ends[0, -1] = 1.0, True
    sparse = heads.loss(features, rewards, ends, None)
    unweighted = heads.loss(features[:, :-1], rewards[:, :-1], ends[:, :-1], None)
    reward_logits, end_logits = heads(features[:, -1:])
    rare = torch.nn.functional.cross_entropy(reward_logits[0], torch.tensor([2]))
    rare = rare + torch.nn.functional.binary_cross_entropy_with_logits(end_logits[0], torch.ones(1))
    assert torch.isclose(sparse, (unweighted + rare) / 2, atol=1e-5)


def test_without_rewards_the_loss_is_the_references_and_rewards_need_the_heads():
    model = tiny()
    batch = outcome_batch(b=2)
    loss, parts = model(state_codes=batch["codes"], actions=batch["actions"])
    assert len(parts) == 3
    with pytest.raises(ValueError, match="learn_rewards=True"):
        model(state_codes=batch["codes"], actions=batch["actions"], rewards=batch["rewards"], terminated=batch["ends"])
    with pytest.raises(ValueError, match="rewards and terminated go together"):
        tiny(learn_rewards=True)(state_codes=batch["codes"], actions=batch["actions"], rewards=batch["rewards"])
    with pytest.raises(ValueError, match="learn_rewards must be True or False"):
        tiny(learn_rewards=1)
    with pytest.raises(ValueError, match="outcome_loss_weight must be a number >= 0"):
        tiny(learn_rewards=True, outcome_loss_weight=-1.0)


def test_the_heads_are_saved_with_the_world(tmp_path):
    model = tiny(learn_rewards=True)
    model.save_pretrained(tmp_path)
    loaded = Genie2.from_pretrained(tmp_path)
    assert loaded.outcomes is not None
    assert torch.equal(loaded.outcomes.reward.weight, model.outcomes.reward.weight)


def test_clips_carry_the_episodes_rewards_and_ends_padded_with_none(tmp_path):
    make_dataset(tmp_path, [10, 3])
    dataset = ClipDataset(tmp_path, clip_frames=4, split="all", stride=3, outcomes=True)
    episode = Episode.load(episode_path(tmp_path, 0))
    item = dataset[2]  # episode 0, frames 6-9: its last frame ends it
    assert np.array_equal(item["rewards"].numpy(), episode.rewards[6:10])
    assert item["terminated"].tolist() == [False, False, False, True]
    short = dataset[3]  # episode 1's 3 frames, padded to 4
    assert short["rewards"][3] == 0 and short["terminated"].tolist() == [False, False, True, False]
    assert "rewards" not in ClipDataset(tmp_path, clip_frames=4, split="all")[0]


def test_world_loss_reports_the_outcome_loss_when_the_batch_has_rewards(tmp_path):
    make_dataset(tmp_path, [10, 3])
    dataset = ClipDataset(tmp_path, clip_frames=4, split="all", outcomes=True)
    batch = collate(dataset, [0, 1])
    batch["codes"] = torch.randint(0, 32, (2, 4, 2, 3))
    batch["actions"] = batch["actions"].clamp(max=4)
    _, parts = world_loss(tiny(learn_rewards=True), batch, "cpu")
    assert parts["outcome_loss"] > 0 and set(parts) == {"loss", "state_loss", "action_loss", "outcome_loss"}


def test_eval_reports_reward_and_end_precision_and_recall(tmp_path):
    from genie2.data.episode import DatasetInfo
    from genie2.evaluate import evaluate_world
    from genie2.tokenizer import Tokenizer, TokenizerConfig
    from genie2.world import World
    from test_data import random_episode

    lengths = [6, 9]
    for i, t in enumerate(lengths):  # random rewards in [0, 1): all but a few frames rewarded
        random_episode(t, size=16, seed=i).save(episode_path(tmp_path, i))
    info = DatasetInfo("test", "test", 16, 4, ["a", "b", "c", "d"], 1, num_episodes=2, num_frames=sum(lengths))
    info.save(tmp_path)
    config = TokenizerConfig(frame_size=16, channels=(8, 16), res_blocks=1, dim_latent=8, codebook_size=16)
    model = Genie2.from_tokenizer(Tokenizer(config), dim=32, depth=1, heads=2, attn_dim_head=16, num_actions=4)
    assert evaluate_world(World(model), tmp_path, "all", 2, 3, progress=False)["outcomes"] is None
    rewarded = Genie2.from_tokenizer(
        Tokenizer(config), dim=32, depth=1, heads=2, attn_dim_head=16, num_actions=4, learn_rewards=True
    )
    with torch.no_grad():  # always "+1, the episode ends here"
        for head, bias in ((rewarded.outcomes.reward, [0.0, 0.0, 5.0]), (rewarded.outcomes.end, [5.0])):
            head.weight.zero_()
            head.bias.copy_(torch.tensor(bias))
    scores = evaluate_world(World(rewarded), tmp_path, "all", 2, 3, progress=False)["outcomes"]
    episodes = [Episode.load(episode_path(tmp_path, i)) for i in range(2)]
    positive = sum(int((e.rewards[1:] > 0).sum()) for e in episodes)
    assert scores["reward_recall"] == 1.0 and scores["reward_frames"] == positive
    assert scores["reward_precision"] == pytest.approx(positive / sum(t - 1 for t in lengths))
    assert scores["end_recall"] == 1.0 and scores["end_precision"] == pytest.approx(2 / 13)


def test_clips_for_outcomes_always_include_the_end_of_each_episode(tmp_path):
    make_dataset(tmp_path, [10, 11])  # with clip 4 and stride 3, the strides stop short of both ends
    plain = ClipDataset(tmp_path, clip_frames=4, split="all", stride=3)
    ends = ClipDataset(tmp_path, clip_frames=4, split="all", stride=3, outcomes=True)
    assert (1, 7) not in plain.clips and set(ends.clips) == set(plain.clips) | {(1, 7)}
    assert all(ends[i]["terminated"][-1] for i, (e, s) in enumerate(ends.clips) if s + 4 == ends.lengths[e])


def test_rewards_of_the_wrong_shape_are_refused():
    batch = outcome_batch(b=2)
    with pytest.raises(ValueError, match=r"rewards must be a tensor of one value per frame \(2, 4\)"):
        tiny(learn_rewards=True)(state_codes=batch["codes"], rewards=batch["rewards"][:, :3], terminated=batch["ends"])
