"""The data stage: environments, the episode format, resumable collection, clips, video import."""

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from genie2.data.clips import ClipDataset, split_episodes
from genie2.data.collect import collect
from genie2.data.envs import GameEnv
from genie2.data.episode import CorruptEpisodeError, DatasetInfo, Episode, episode_indices, episode_path
from genie2.data.video import import_video, read_actions_csv, read_video
from genie2.errors import InputError


def random_episode(t=7, keys=1, size=8, seed=0):
    rng = np.random.default_rng(seed)
    actions = rng.integers(-1, 4, (t, keys))
    actions[0] = -1
    return Episode(
        rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8),
        actions,
        rng.random(t).astype(np.float32),
        np.arange(t) == t - 1,
        np.zeros(t, dtype=bool),
    )


def test_episode_round_trip(tmp_path):
    episode = random_episode(keys=3)
    episode.save(tmp_path / "e.safetensors")
    loaded = Episode.load(tmp_path / "e.safetensors")
    for name in ("frames", "actions", "rewards", "terminated", "truncated"):
        assert np.array_equal(getattr(loaded, name), getattr(episode, name)), name
        assert getattr(loaded, name).dtype == getattr(episode, name).dtype
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


def test_default_env_collects_two_episodes_quickly(tmp_path):
    start = time.perf_counter()
    info = collect(tmp_path / "d", episodes=2, steps=40, progress=False)
    assert time.perf_counter() - start < 30
    assert info.env_id == "MiniGrid-DoorKey-8x8-v0" and info.num_actions == 7
    assert info.action_names[:3] == ["left", "right", "forward"]
    episode = Episode.load(episode_path(tmp_path / "d", 0))
    assert episode.frames.shape[1:] == (64, 64, 3) and episode.frames.dtype == np.uint8
    assert episode.actions[0, 0] == -1 and (episode.actions[1:] >= 0).all()
    assert len(episode) == info.num_frames - len(Episode.load(episode_path(tmp_path / "d", 1)))
    assert episode.terminated[-1] or episode.truncated[-1]
    assert DatasetInfo.load(tmp_path / "d").num_episodes == 2


@pytest.mark.parametrize("env, module", [("breakout", "ale_py"), ("crafter", "crafter"), ("doom-basic", "vizdoom")])
def test_optional_presets_collect(tmp_path, monkeypatch, env, module):
    pytest.importorskip(module)
    monkeypatch.chdir(tmp_path)  # ViZDoom writes _vizdoom.ini into the working folder
    info = collect(tmp_path / env, env, episodes=1, steps=6, frame_size=32, progress=False)
    episode = Episode.load(episode_path(tmp_path / env, 0))
    assert episode.frames.shape == (7, 32, 32, 3) and len(info.action_names) == info.num_actions


def test_collect_is_deterministic_across_workers_and_resumes(tmp_path):
    collect(tmp_path / "one", episodes=3, steps=20, progress=False)
    collect(tmp_path / "two", episodes=3, steps=20, workers=2, progress=False)
    for i in range(3):
        a, b = Episode.load(episode_path(tmp_path / "one", i)), Episode.load(episode_path(tmp_path / "two", i))
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.actions, b.actions)
    # a lost episode is collected again, the same as before
    before = Episode.load(episode_path(tmp_path / "one", 1))
    episode_path(tmp_path / "one", 1).unlink()
    info = collect(tmp_path / "one", episodes=4, steps=20, progress=False)
    assert info.num_episodes == 4 and episode_indices(tmp_path / "one") == [0, 1, 2, 3]
    assert np.array_equal(Episode.load(episode_path(tmp_path / "one", 1)).frames, before.frames)


def test_killed_collect_resumes_to_exactly_n_whole_episodes(tmp_path):
    out = tmp_path / "d"
    cmd = [sys.executable, "-m", "genie2.cli", "collect", "--out", str(out), "--episodes", "20", "--steps", "150"]
    cmd += ["--quiet"]
    proc = subprocess.Popen(cmd)
    deadline = time.time() + 60
    while len(episode_indices(out)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(episode_indices(out)) < 20
    for index in episode_indices(out):
        Episode.load(episode_path(out, index))  # every file present is whole
    subprocess.run(cmd, check=True)
    assert episode_indices(out) == list(range(20))
    assert DatasetInfo.load(out).num_episodes == 20


def test_collect_refuses_another_dataset_and_bad_names(tmp_path):
    collect(tmp_path / "d", episodes=1, steps=5, progress=False)
    with pytest.raises(ValueError, match="different dataset"):
        collect(tmp_path / "d", episodes=1, steps=5, seed=1, progress=False)
    with pytest.raises(ValueError, match="minigrid"):  # the error lists the presets
        GameEnv("NoSuchGame-v9")
    with pytest.raises(ValueError, match="unknown env"):
        GameEnv("MiniGrid-DoorKey-9x9-v0")
    assert GameEnv("minigrid:MiniGrid-Empty-5x5-v0").num_actions == 7
    with pytest.raises(ValueError, match="policy"):
        collect(tmp_path / "e", episodes=1, policy="clever", progress=False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a genie2 dataset"):
        collect(tmp_path / "junk", episodes=1, progress=False)


def test_the_example_policies_walk_with_their_forward_share(monkeypatch):
    """examples/policies.py, loaded by name as `genie2 collect --policy` loads it (from the repo root)."""
    from genie2.data.collect import make_policy

    monkeypatch.chdir(Path(__file__).parents[1])
    for name, forward in (("forward_biased", 0.6), ("turn_biased", 0.4)):
        act = make_policy(f"examples.policies:{name}", 7, np.random.default_rng(0))
        actions = np.array([act(None) for _ in range(4000)])
        assert set(actions.tolist()) == {0, 1, 2}  # left, right, forward only
        assert abs((actions == 2).mean() - forward) < 0.03
    with pytest.raises(ValueError, match="left, right and forward"):
        make_policy("examples.policies:forward_biased", 2, np.random.default_rng(0))


class TextOnlyEnv(gym.Env):
    """An env that claims to render frames but renders text."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    action_space = gym.spaces.Discrete(2)
    observation_space = gym.spaces.Discrete(1)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, seed=None, options=None):
        return 0, {}

    def render(self):
        return "a text frame"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_env_without_rgb_frames_is_refused():
    gym.register("TextOnly-v0", entry_point=TextOnlyEnv)
    env = GameEnv("TextOnly-v0")
    with pytest.raises(ValueError, match="rgb_array"):
        env.reset(0)
    TextOnlyEnv.metadata = {"render_modes": ["ansi"], "render_fps": 10}
    with pytest.raises(ValueError, match="rgb_array"):
        GameEnv("TextOnly-v0")


def test_format_version_and_corrupt_shards(tmp_path):
    out = tmp_path / "d"
    collect(out, episodes=3, steps=10, progress=False)
    path = episode_path(out, 1)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(CorruptEpisodeError, match="episode-000001"):
        Episode.load(path)
    with pytest.raises(CorruptEpisodeError, match="episode-000001"):
        ClipDataset(out, clip_frames=4, split="all")
    with pytest.warns(UserWarning, match="episode-000001"):
        dataset = ClipDataset(out, clip_frames=4, split="all", skip_corrupt=True)
    assert 1 not in dataset.episodes
    with pytest.warns(UserWarning, match="collecting it again"):
        info = collect(out, episodes=3, steps=10, progress=False)  # resume repairs the damaged episode
    assert info.num_episodes == 3 and len(Episode.load(path)) > 1
    data = json.loads((out / "dataset.json").read_text())
    data["format_version"] = 99
    (out / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="format version 99"):
        DatasetInfo.load(out)


def make_dataset(root, lengths, keys=1):
    info = DatasetInfo("test", "test", 8, 4, ["a", "b", "c", "d"], keys)
    for i, t in enumerate(lengths):
        random_episode(t, keys, seed=i).save(episode_path(root, i))
    info.num_episodes, info.num_frames = len(lengths), sum(lengths)
    info.save(root)


def test_clips_windows_and_padding_at_episode_edges(tmp_path):
    make_dataset(tmp_path, [10, 3], keys=2)
    dataset = ClipDataset(tmp_path, clip_frames=4, split="all", stride=3)
    starts = [(dataset.episodes[i], s) for i, s in dataset.clips]
    assert starts == [(0, 0), (0, 3), (0, 6), (1, 0)]  # windows never run past an episode
    episode = Episode.load(episode_path(tmp_path, 0))
    item = dataset[2]
    assert np.array_equal(item["frames"].numpy(), episode.frames[6:10]) and item["video_time_len"] == 4
    assert np.array_equal(item["actions"].numpy(), episode.actions[6:10])
    short = dataset[3]
    assert short["video_time_len"] == 3 and short["frames"].shape == (4, 8, 8, 3)
    assert (short["frames"][3] == 0).all() and (short["actions"][3] == -1).all()


def test_split_is_disjoint_deterministic_and_by_episode():
    indices = list(range(50))
    train, val = split_episodes(indices, "train", 0.2, seed=3), split_episodes(indices, "val", 0.2, seed=3)
    assert not set(train) & set(val) and sorted(train + val) == indices and 3 <= len(val) <= 20
    grown = split_episodes(list(range(200)), "val", 0.2, seed=3)
    assert [i for i in grown if i < 50] == val  # growing a dataset never moves an episode across
    assert val == split_episodes(indices, "val", 0.2, seed=3) != split_episodes(indices, "val", 0.2, seed=4)
    assert len(split_episodes([0, 1], "val", 0.1)) == 1
    with pytest.raises(ValueError, match="split"):
        split_episodes(indices, "test")


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frame", "action"])
        writer.writerows(rows)


def test_import_video_round_trip_and_length_check(tmp_path):
    import imageio.v3 as iio

    frames = np.zeros((5, 32, 32, 3), dtype=np.uint8)
    for t in range(5):
        frames[t, :, : 6 * (t + 1)] = 255
    iio.imwrite(tmp_path / "v.gif", frames, duration=50, loop=0)
    write_csv(tmp_path / "a.csv", [(0, ""), (1, "2"), (2, "1 3"), (3, "-1"), (4, "0")])
    actions = read_actions_csv(tmp_path / "a.csv")
    assert actions.tolist() == [[-1, -1], [2, -1], [1, 3], [-1, -1], [0, -1]]
    info = import_video(tmp_path / "v.gif", tmp_path / "a.csv", tmp_path / "d", frame_size=16)
    assert info.num_actions == 4 and info.max_num_actions == 2 and info.num_frames == 5
    episode = Episode.load(episode_path(tmp_path / "d", 0))
    assert episode.frames.shape == (5, 16, 16, 3)
    assert episode.frames[4].mean() > episode.frames[0].mean()  # the bar widens
    iio.imwrite(tmp_path / "w.gif", frames[::-1], duration=50, loop=0)  # another recording
    write_csv(tmp_path / "b.csv", [(0, ""), (1, "1"), (2, "1"), (3, "0"), (4, "0")])
    info = import_video(tmp_path / "w.gif", tmp_path / "b.csv", tmp_path / "d", frame_size=16)  # appended
    assert info.num_episodes == 2 and info.num_actions == 4
    clips = ClipDataset(tmp_path / "d", clip_frames=3, split="all")
    assert {tuple(clips[i]["actions"].shape) for i in range(len(clips))} == {(3, 2)}  # one key width
    write_csv(tmp_path / "short.csv", [(0, ""), (1, "2")])
    with pytest.raises(ValueError, match="2 action rows but"):
        import_video(tmp_path / "v.gif", tmp_path / "short.csv", tmp_path / "e")


def write_mp4(path, frames=12, start=1):
    """A real H.264 mp4 (moov atom first, so a truncated copy keeps its header) of a widening bar."""
    import av

    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            frame = np.zeros((32, 32, 3), dtype=np.uint8)
            frame[:, : 2 * (t + start)] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


# cut: in the frames (a decoder error), before the frames (none decoded), in the header (no stream or no reader)
@pytest.mark.parametrize("keep", [0.8, 0.5, 0.1, 0.01])
def test_import_video_of_a_truncated_mp4_says_so(tmp_path, keep):
    write_mp4(tmp_path / "whole.mp4")
    write_csv(tmp_path / "a.csv", [(t, "" if t == 0 else "1") for t in range(12)])
    assert len(read_video(tmp_path / "whole.mp4", 16)) == 12  # the whole file reads
    data = (tmp_path / "whole.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputError, match=r"cut.mp4 could not be read as a video \(truncated or not a video file\): ."):
        import_video(tmp_path / "cut.mp4", tmp_path / "a.csv", tmp_path / "d")
    assert not (tmp_path / "d" / "dataset.json").exists()


@pytest.mark.parametrize("name", ["noise.mp4", "noise.gif", "noise.bin", "empty.mp4"])
def test_a_file_that_is_not_a_video_is_named_without_an_install_hint(tmp_path, name):
    size = 0 if name.startswith("empty") else 4096
    (tmp_path / name).write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="could not be read as a video") as caught:
        read_video(tmp_path / name, 16)
    assert "pip install" not in str(caught.value) and name in str(caught.value)


def test_the_install_hint_only_when_no_video_reader_is_installed(tmp_path, monkeypatch):
    import genie2.data.video as video

    (tmp_path / "noise.mp4").write_bytes(bytes(range(256)) * 16)
    monkeypatch.setattr(video, "video_reader_installed", lambda: False)
    with pytest.raises(InputError, match=r"no video reader is installed .*pip install av"):
        read_video(tmp_path / "noise.mp4", 16)


def test_importing_the_same_video_twice_is_refused_naming_the_earlier_import(tmp_path):
    write_mp4(tmp_path / "run.mp4")
    write_csv(tmp_path / "a.csv", [(t, "" if t == 0 else "1") for t in range(12)])
    import_video(tmp_path / "run.mp4", tmp_path / "a.csv", tmp_path / "d", frame_size=16)
    shutil.copy(tmp_path / "run.mp4", tmp_path / "copy.mp4")  # a copy under another name is the same recording
    for again in ("run.mp4", "copy.mp4"):
        with pytest.raises(InputError, match=r"already in .*episode 0 was imported from .*run\.mp4"):
            import_video(tmp_path / again, tmp_path / "a.csv", tmp_path / "d", frame_size=16)
    info = DatasetInfo.load(tmp_path / "d")
    assert info.num_episodes == 1 and episode_indices(tmp_path / "d") == [0]
    (imported,) = info.source["imports"]
    assert imported["sha256"] == hashlib.sha256((tmp_path / "run.mp4").read_bytes()).hexdigest()
    assert imported["episode"] == 0 and info.source["videos"] == [str(tmp_path / "run.mp4")]
    write_mp4(tmp_path / "other.mp4", start=2)  # another recording: appended
    assert import_video(tmp_path / "other.mp4", tmp_path / "a.csv", tmp_path / "d", frame_size=16).num_episodes == 2


def test_a_dataset_imported_before_identities_were_recorded_still_takes_videos(tmp_path):
    write_mp4(tmp_path / "run.mp4")
    write_csv(tmp_path / "a.csv", [(t, "" if t == 0 else "1") for t in range(12)])
    import_video(tmp_path / "run.mp4", tmp_path / "a.csv", tmp_path / "d", frame_size=16)
    info = DatasetInfo.load(tmp_path / "d")
    del info.source["imports"]  # as written before: paths only
    info.save(tmp_path / "d")
    assert import_video(tmp_path / "run.mp4", tmp_path / "a.csv", tmp_path / "d", frame_size=16).num_episodes == 2
    assert [e["episode"] for e in DatasetInfo.load(tmp_path / "d").source["imports"]] == [1]


def test_import_video_cli_counts_in_words_and_names_a_broken_file_in_one_line(tmp_path):
    write_mp4(tmp_path / "run.mp4", frames=1)
    (tmp_path / "cut.mp4").write_bytes((tmp_path / "run.mp4").read_bytes()[:100])
    write_csv(tmp_path / "a.csv", [(0, "")])
    for video, folder in (("run.mp4", "d"), ("cut.mp4", "e")):
        cmd = [
            "import-video",
            str(tmp_path / video),
            "--actions",
            str(tmp_path / "a.csv"),
            "--out",
            str(tmp_path / folder),
        ]
        out = subprocess.run([sys.executable, "-m", "genie2.cli", *cmd], capture_output=True, text=True)
        if video == "run.mp4":
            assert out.returncode == 0 and out.stdout.strip().endswith(": 1 episode, 1 frame"), out.stderr
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "cut.mp4 could not be read as a video (truncated or not a video file)" in out.stderr


def test_cli_help_and_errors(tmp_path):
    out = subprocess.run([sys.executable, "-m", "genie2.cli", "collect", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--episodes" in out.stdout and "sticky" in out.stdout
    bad = [sys.executable, "-m", "genie2.cli", "collect", "--env", "Nope-v0", "--out", str(tmp_path / "x")]
    out = subprocess.run(bad, capture_output=True, text=True)
    assert out.returncode == 2 and "unknown env" in out.stderr and "Traceback" not in out.stderr


def test_missing_extra_names_the_pip_command():
    from genie2.data.envs import Preset, _import

    with pytest.raises(ImportError, match=r"pip install 'genie2\[atari\]'"):
        _import(Preset("ALE/Nothing-v5", extra="atari", module="no_such_module_for_genie2"))


def test_start_frames_come_from_validation_episodes_or_all_of_a_tiny_dataset(tmp_path):
    from genie2.data.clips import start_frames

    collect(tmp_path / "one", episodes=1, steps=5, frame_size=16, progress=False)
    frames = start_frames(tmp_path / "one")
    assert frames.shape == (1, 16, 16, 3) and frames.dtype == np.uint8
    collect(tmp_path / "many", episodes=12, steps=5, frame_size=16, progress=False)
    val = split_episodes(episode_indices(tmp_path / "many"), "val")
    expected = np.stack([Episode.load(episode_path(tmp_path / "many", i)).frames[0] for i in val])
    assert np.array_equal(start_frames(tmp_path / "many"), expected)


def test_codes_of_a_temporal_tokenizer_equal_the_whole_episode_encoded_at_once(tmp_path):
    """Episodes are encoded in chunks; a temporal tokenizer's codes must not restart at each chunk."""
    from safetensors.torch import load_file

    from genie2.data.codes import encode_dataset
    from genie2.data.episode import Episode
    from genie2.tokenizer.model import Tokenizer, TokenizerConfig

    collect(tmp_path / "data", episodes=1, steps=11, frame_size=16, progress=False)
    config = TokenizerConfig(frame_size=16, channels=(8, 16), res_blocks=1, dim_latent=8, codebook_size=16)
    tokenizer = Tokenizer(TokenizerConfig(**{**config.__dict__, "temporal": True})).eval()
    tokenizer.save_pretrained(tmp_path / "tok")
    codes_dir = encode_dataset(tmp_path / "data", tmp_path / "tok", batch_size=4, progress=False)
    episode = sorted((tmp_path / "data" / "episodes").glob("*.safetensors"))[0]
    frames = torch.from_numpy(Episode.load(episode).frames)
    assert len(frames) > 4  # several chunks
    whole = tokenizer.encode(frames[None])[0]
    assert torch.equal(load_file(str(codes_dir / episode.name))["codes"].long(), whole)


def test_every_minigrid_id_renders_like_the_presets():
    """An ad-hoc MiniGrid id gets the presets' settings: the world without the agent's view cone."""
    adhoc, preset = GameEnv("MiniGrid-Empty-8x8-v0"), GameEnv("minigrid-empty")
    assert adhoc.preset.make_kwargs == preset.preset.make_kwargs
    assert np.array_equal(adhoc.reset(3), preset.reset(3))


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_honour_the_umask(tmp_path, umask):
    """Episodes, JSON and checkpoints get the mode the umask gives (safetensors alone makes 0600)."""
    from genie2.data.episode import DatasetInfo, Episode
    from genie2.model.genie2 import Genie2

    old = os.umask(umask)
    try:
        z = np.zeros(3)
        episode = Episode(np.zeros((3, 8, 8, 3), np.uint8), np.zeros((3, 1), np.int64), z, z > 0, z > 0)
        episode.save(tmp_path / "ep.safetensors")
        DatasetInfo("minigrid", "x", 8, 2, ["a", "b"]).save(tmp_path)
        Genie2(dim=8, dim_latent=4, depth=1, heads=1, attn_dim_head=8, vq_codebook_size=4).save_pretrained(
            tmp_path / "m"
        )
    finally:
        os.umask(old)
    files = [tmp_path / "ep.safetensors", tmp_path / "dataset.json", *(tmp_path / "m").iterdir()]
    assert {oct(f.stat().st_mode & 0o777) for f in files} == {oct(0o666 & ~umask)}


def test_the_moves_policy_draws_the_moves_half_the_time_afresh_each_step():
    from genie2.data.collect import make_policy

    names = ["noop", "move_left", "move_right", "move_up", "move_down", "do", "sleep", "place_stone"]
    act = make_policy("moves", len(names), np.random.default_rng(0), names)
    drawn = np.array([act(None) for _ in range(8000)])
    share = np.isin(drawn, [1, 2, 3, 4]).mean()
    assert 0.47 < share < 0.53 and set(drawn) == set(range(len(names)))  # every action still comes
    repeats = (drawn[1:] == drawn[:-1]).mean()  # independent draws: about sum p^2, not sticky's 0.8
    assert repeats < 0.2
    uniform = make_policy("moves", 3, np.random.default_rng(0), ["a", "b", "c"])  # no moves: uniformly random
    assert set(uniform(None) for _ in range(200)) == {0, 1, 2}
