"""The latent action model (issue 20): it finds the actions of a video whose frames are a pure function of an
unseen action, reports a collapsed vocabulary, scores agreement with true actions honestly, and trains,
saves, resumes and loads through `genie2 train-lam`."""

import json

import numpy as np
import pytest
import torch

from genie2.cli import main
from genie2.data.episode import DatasetInfo, Episode, episode_path
from genie2.errors import InputError
from genie2.lam.agreement import agreement, fit_table, visibly_changed
from genie2.lam.label import check_same_actions
from genie2.lam.model import LAMConfig, LatentActionModel, collapse, vocabulary_stats
from genie2.lam.train import LAMTraining, train_lam

PATTERNS = 5  # frame t+1 is pattern[action t]: only the action says what comes next


def pure_video(root, episodes: int = 10, length: int = 64, seed: int = 0, static: bool = False) -> None:
    """A dataset of 16x16 episodes whose every frame is one of PATTERNS random patterns, chosen by the action
    that led into it (or one unchanging frame, `static`)."""
    rng = np.random.default_rng(seed)
    patterns = (np.random.default_rng(0).random((PATTERNS, 16, 16, 3)) > 0.5).astype(np.uint8) * 255
    for e in range(episodes):
        actions = rng.integers(0, PATTERNS, length)
        frames = patterns[np.zeros_like(actions) if static else actions]
        actions[0] = -1
        zeros = np.zeros(length)
        Episode(frames, actions, zeros, zeros.astype(bool), zeros.astype(bool)).save(episode_path(root, e))
    names = [f"pattern-{i}" for i in range(PATTERNS)]
    DatasetInfo(
        "synthetic", "synthetic", 16, PATTERNS, names, num_episodes=episodes, num_frames=episodes * length
    ).save(root)


def small(steps: int, **model) -> LAMTraining:
    """A LAM run small enough for a test, on 16x16 frames."""
    model = dict(frame_size=16, channels=(16, 32), num_latent_actions=8, dim_action=8, **model)
    return LAMTraining(model=LAMConfig(**model), steps=steps, batch_size=32, lr=2e-3, warmup=10, eval_every=steps)


@pytest.fixture(scope="module")
def pure_lam(tmp_path_factory):
    """A pure-function video and the LAM trained on it (its labels unused): (data, lam, final eval)."""
    root = tmp_path_factory.mktemp("pure")
    pure_video(root / "data")
    result = train_lam(str(root / "data"), str(root / "lam"), small(400), progress=False, device="cpu")
    return root / "data", root / "lam", result


def test_a_tiny_lam_finds_the_unseen_actions_of_a_pure_function_video(pure_lam):
    result = pure_lam[2]
    assert result["mapped_accuracy"] >= 0.95, result  # the labels were never trained on
    assert result["nmi"] > 0.9 and not result["collapsed"]


def test_a_video_that_never_changes_is_reported_as_collapsed(tmp_path, capsys):
    pure_video(tmp_path / "data", static=True)
    result = train_lam(str(tmp_path / "data"), str(tmp_path / "lam"), small(20), progress=False, device="cpu")
    assert result["collapsed"] and "collapsed" in capsys.readouterr().out
    assert json.loads((tmp_path / "lam" / "eval.json").read_text())["collapsed"]


def test_collapse_reads_the_vocabulary_stats():
    assert collapse(vocabulary_stats(torch.zeros(100, dtype=torch.long), 8)) is not None
    assert collapse(vocabulary_stats(torch.arange(100) % 8, 8)) is None


def test_agreement_of_a_relabelling_is_perfect_and_unchanged_steps_are_scored_apart():
    actions = torch.arange(60) % 3
    latents = (actions + 5) % 8  # the same partition under other names
    changed = torch.arange(60) < 45
    latents[50:] = 0  # steps where nothing changed: the LAM cannot tell them, and they must not count
    table = fit_table(latents, actions, changed, 8, 3)
    found = agreement(latents, actions, changed, table, 3)
    assert found["mapped_accuracy"] == 1.0 and found["nmi"] == pytest.approx(1.0)
    assert found["changed_steps"] == 45 and found["unchanged_steps"] == 15 and found["unchanged_accuracy"] < 1
    assert np.trace(np.array(found["confusion"])) == 45 and found["per_action"] == {0: 1.0, 1: 1.0, 2: 1.0}
    table[table == 0] = -1  # a latent the map never saw: its steps are wrong, in mapped and per-action alike
    found = agreement(latents, actions, changed, table, 3)
    assert found["mapped_accuracy"] < 1  # each true action has 15 changed steps: the mean of per-action is the whole
    assert found["mapped_accuracy"] == pytest.approx(sum(found["per_action"].values()) / 3)


def test_agreement_of_a_random_labelling_is_poor():
    actions, latents = torch.randint(0, 4, (2000,)), torch.randint(0, 8, (2000,))
    changed = torch.ones(2000, dtype=torch.bool)
    found = agreement(latents, actions, changed, fit_table(latents, actions, changed, 8, 4), 4)
    assert found["nmi"] < 0.05 and found["mapped_accuracy"] < 0.4


def test_visibly_changed_ignores_small_noise():
    a = torch.zeros(3, 8, 8, 3, dtype=torch.uint8)
    b = a.clone()
    b[1, 2, 2, 0] = 5  # under the level: compression noise
    b[2, 2, 2, 0] = 200
    assert visibly_changed(a, b).tolist() == [False, False, True]


def test_train_lam_verb_trains_resumes_and_loads(tmp_path, capsys):
    pure_video(tmp_path / "data", episodes=6, length=20)
    out = tmp_path / "lam"
    args = ["train-lam", "--data", str(tmp_path / "data"), "--out", str(out), "--preset", "tiny", "--quiet"]
    main([*args, "--device", "cpu"])
    assert "mapped accuracy" in capsys.readouterr().out and (out / "samples").is_dir()
    main([*args, "--device", "cpu", "--resume", "--steps", "30"])
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 30
    lam = LatentActionModel.from_pretrained(out)
    frames = torch.randint(0, 256, (5, 16, 16, 3), dtype=torch.uint8)
    ids = lam.eval().infer(frames)
    assert ids.shape == (4,) and ids.dtype == torch.long and int(ids.max()) < lam.num_actions
    assert lam.predict(frames[:2], ids[:2]).shape == (2, 16, 16, 3)


def test_bad_lam_input_says_what_to_fix():
    lam = LatentActionModel(LAMConfig(frame_size=16, channels=(8, 16), num_latent_actions=4, dim_action=8))
    with pytest.raises(InputError, match="t >= 2"):
        lam.infer(torch.zeros(1, 16, 16, 3, dtype=torch.uint8))
    with pytest.raises(InputError, match="latent actions are ids"):
        lam.predict(torch.zeros(2, 16, 16, 3, dtype=torch.uint8), torch.tensor([0, 4]))
    with pytest.raises(InputError, match="num_latent_actions"):
        LAMConfig(num_latent_actions=1)


def test_label_and_map_the_latent_actions_of_a_dataset(pure_lam, tmp_path, capsys):
    from genie2.data.clips import ClipDataset
    from genie2.lam.mapping import ActionMap

    data, lam, _ = pure_lam
    out = tmp_path / "map"
    main(["label", "--data", str(data), "--lam", str(lam), "--quiet"])
    labels = next((data / "latent-actions").iterdir())
    latent = ClipDataset(data, clip_frames=4, split="all", actions=labels)
    assert latent.info.num_actions == 8 and latent.info.action_names[0] == "latent 1"
    assert latent.info.source["latent_actions"]["num_latent_actions"] == 8
    main(
        [
            "map-actions",
            "--lam",
            str(lam),
            "--data",
            str(data),
            "--episodes",
            "2",
            "--eval-data",
            str(data),
            "--out",
            str(out),
        ]
    )
    assert "held-out:" in capsys.readouterr().out and (out / "confusion.png").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["held_out"]["mapped_accuracy"] >= 0.95 and report["episodes"] == 2
    action_map = ActionMap.load(out)
    # the map and its inverse agree: each real action's latent maps back to it
    actions = torch.arange(PATTERNS)
    assert torch.equal(action_map.to_actions(action_map.from_actions(actions)), actions)
    true = ClipDataset(data, clip_frames=4, split="all")
    item = latent[3]
    mapped = action_map.to_actions(item["actions"][1:, 0])
    assert torch.equal(mapped, true[3]["actions"][1:, 0])  # the labels beside the episodes are the LAM's
    with pytest.raises(InputError, match="real actions are ids"):
        action_map.from_actions(torch.tensor([PATTERNS]))


def test_train_on_latent_actions_needs_a_lam_and_a_label_per_episode(tmp_path):
    from genie2.data.clips import ClipDataset
    from genie2.data.latent import LABELS_FILE

    pure_video(tmp_path / "data", episodes=2, length=8)
    with pytest.raises(SystemExit):
        main(["train", "--data", str(tmp_path / "data"), "--tokenizer", "t", "--out", "o", "--actions", "latent"])
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / LABELS_FILE).write_text(json.dumps(dict(num_latent_actions=4)))
    with pytest.raises(InputError, match="genie2 label"):
        ClipDataset(tmp_path / "data", clip_frames=2, split="all", actions=labels)


def test_load_lam_finds_the_map_beside_it_and_refuses_unknown_names(pure_lam, tmp_path):
    import genie2

    data, lam_dir, _ = pure_lam
    lam = genie2.load_lam(lam_dir)
    with pytest.raises(InputError, match="no action map"):
        lam.to_actions(torch.tensor([0]))
    main(["map-actions", "--lam", str(lam_dir), "--data", str(data), "--episodes", "3", "--out", str(tmp_path)])
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((lam_dir / name).read_bytes())
    lam = genie2.load_lam(tmp_path)
    episode = Episode.load(episode_path(data, 9))
    frames, true = torch.from_numpy(episode.frames), torch.from_numpy(episode.actions[1:, 0])
    changed = visibly_changed(frames[:-1], frames[1:])
    assert (lam.to_actions(lam.infer(frames))[changed] == true[changed]).float().mean() >= 0.95
    with pytest.raises(InputError, match="no LAM named"):
        genie2.load_lam("no-such-lam")


def test_a_world_with_an_action_map_rolls_out_real_actions_as_their_latent_ones():
    from conftest import tiny_world
    from genie2.lam.mapping import ActionMap

    world = tiny_world(num_actions=4)
    action_map = ActionMap(to_action=[1, 0, 2, 2], from_action=[1, 0, 3], action_names=["a", "b", "c"])
    mapped = type(world)(world.model, action_map=action_map)
    assert mapped.action_names == ["a", "b", "c"]
    prompt = torch.randint(0, 256, (1, 16, 16, 3), dtype=torch.uint8)
    real = torch.tensor([-1, 0, 2, 1, -1])
    latent = torch.tensor([-1, 1, 3, 0, -1])
    assert torch.equal(mapped.rollout(prompt, real), world.rollout(prompt, latent))
    for bad in (3, -2):  # past the real actions, or below "no key"
        with pytest.raises(InputError, match="real actions are ids"):
            mapped.rollout(prompt, torch.tensor([-1, bad]))
    with pytest.raises(InputError, match="latent actions but the world has"):
        type(world)(world.model, action_map=ActionMap([0, 1], [0, 1], ["a", "b"]))


def test_a_world_of_latent_actions_trains_maps_and_evaluates_with_real_actions(pure_lam, tmp_path, capsys):
    data, lam, _ = pure_lam
    tok, world, report = tmp_path / "tok", tmp_path / "world", tmp_path / "eval"
    main(["train-tokenizer", "--data", str(data), "--out", str(tok), "--preset", "tiny", "--quiet", "--device", "cpu"])
    main(
        ["train", "--data", str(data), "--tokenizer", str(tok), "--out", str(world), "--preset", "tiny", "--quiet"]
        + ["--actions", "latent", "--lam", str(lam), "--cpu"]
    )
    info = json.loads((world / "dataset.json").read_text())
    assert info["num_actions"] == 8 and info["source"]["latent_actions"]["num_latent_actions"] == 8
    with pytest.raises(InputError, match="resume with the same --actions and --lam"):  # not on the true actions
        check_same_actions(world, None)
    check_same_actions(world, str(lam))
    main(["map-actions", "--lam", str(lam), "--data", str(data), "--episodes", "3", "--out", str(world)])
    evaluate = ["eval", "--world", str(world), "--data", str(data), "--split", "all", "--episodes", "2"]
    main([*evaluate, "--horizon", "3", "--out", str(report), "--lam", str(lam), "--quiet"])
    found = json.loads((report / "report.json").read_text())["latent_agreement"]
    assert found["mapped_accuracy"] >= 0.95 and "mapped to the true one" in capsys.readouterr().out


def test_a_mapped_world_session_steps_real_actions_as_their_latent_ones():
    from conftest import tiny_world
    from genie2.lam.mapping import ActionMap

    world = tiny_world(num_actions=4)
    mapped = type(world)(world.model, action_map=ActionMap([1, 0, 2, 2], [1, 0, 3], ["a", "b", "c"]))
    assert mapped.num_actions == 3 and world.num_actions == 4
    frame = torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8)
    plain, real = (w.session(frame, temperature=0.0) for w in (world, mapped))
    for latent, action in ((1, 0), (3, 2), (0, 1)):
        assert torch.equal(plain.step(latent), real.step(action))
    with pytest.raises(InputError, match="action ids must be in"):
        real.step(3)


def test_a_video_without_an_action_log_becomes_a_world_of_latent_actions(tmp_path, capsys):
    import imageio.v3 as iio

    patterns = (np.random.default_rng(0).random((PATTERNS, 16, 16, 3)) > 0.5).astype(np.uint8) * 255
    data = str(tmp_path / "data")
    for seed in (1, 2):  # two recordings: one to train on, one held out for validation
        video = tmp_path / f"v{seed}.gif"
        iio.imwrite(video, patterns[np.random.default_rng(seed).integers(0, PATTERNS, 40)], duration=50)
        main(["import-video", str(video), "--out", data, "--frame-size", "16"])
    episode = Episode.load(episode_path(data, 0))
    assert (episode.actions == -1).all() and len(episode.frames) > 20  # no labels (a GIF merges repeated frames)
    quiet = ["--preset", "tiny", "--quiet"]
    main(["train-lam", "--data", data, "--out", str(tmp_path / "lam"), *quiet, "--device", "cpu"])
    assert "mapped accuracy" not in capsys.readouterr().out  # nothing to agree with
    main(["train-tokenizer", "--data", data, "--out", str(tmp_path / "tok"), *quiet, "--device", "cpu"])
    world = tmp_path / "world"
    latent = ["--actions", "latent", "--lam", str(tmp_path / "lam"), "--cpu"]
    main(["train", "--data", data, "--tokenizer", str(tmp_path / "tok"), "--out", str(world), *quiet, *latent])
    assert json.loads((world / "dataset.json").read_text())["action_names"] == [
        "latent 1",
        "latent 2",
        "latent 3",
        "latent 4",
    ]
