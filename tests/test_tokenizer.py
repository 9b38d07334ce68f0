"""The frame tokenizer: shapes, ranges, overfitting, save/load, errors, and its use in Genie2."""

import json

import numpy as np
import pytest
import torch

from genie2 import Genie2
from genie2.data.codes import encode_dataset
from genie2.data.collect import collect
from genie2.evaluate import psnr
from genie2.tokenizer.model import Tokenizer, TokenizerConfig, codebook_stats
from genie2.tokenizer.train import FrameBatches, TokenizerTraining, train_tokenizer


def tiny_tokenizer(**overrides) -> Tokenizer:
    config = dict(frame_size=16, channels=(8, 16), res_blocks=1, dim_latent=8, codebook_size=16)
    return Tokenizer(TokenizerConfig(**{**config, **overrides}))


@pytest.mark.parametrize("quantizer", ["vq", "fsq"])
def test_shapes_ranges_and_codes(quantizer):
    tokenizer = tiny_tokenizer(quantizer=quantizer, fsq_levels=(4, 4)).eval()
    frames = torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8)
    codes = tokenizer.encode(frames)
    assert codes.shape == (2, 3, 4, 4) and not codes.dtype.is_floating_point
    assert 0 <= int(codes.min()) and int(codes.max()) < tokenizer.num_codes
    decoded = tokenizer.decode(codes)
    assert decoded.shape == (2, 3, 16, 16, 3) and decoded.min() >= 0 and decoded.max() <= 1
    assert torch.equal(tokenizer.encode(frames.float() / 255), codes)  # uint8 and [0, 1] floats agree
    assert tokenizer.encode(frames[0]).shape == (3, 4, 4)  # unbatched


def test_tiny_tokenizer_overfits_a_few_frames():
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer(channels=(32, 32), codebook_size=32)
    frames = torch.zeros(1, 4, 16, 16, 3)
    for t in range(4):  # four frames of blocks of colour
        frames[0, t, : 4 * (t + 1), :8, t % 3] = 1.0
    optimizer = torch.optim.Adam(tokenizer.parameters(), lr=2e-3)
    for step in range(400):  # the training recipe: autoencoder, seed the codebook, then quantize
        if step == 200:
            with torch.no_grad():
                tokenizer.init_codebook(tokenizer.encode_latents(frames).flatten(0, -2))
        loss, _ = tokenizer(frames, quantize=step >= 200)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tokenizer.eval()
    assert psnr(tokenizer.decode(tokenizer.encode(frames))[0], frames[0]).mean() > 25


@pytest.mark.parametrize("encoder", ["patch", "conv"])
def test_a_patch_encoder_keeps_a_local_change_in_one_code(encoder):
    tokenizer = tiny_tokenizer(encoder=encoder).eval()
    frames = torch.rand(1, 1, 16, 16, 3)
    changed = frames.clone()
    changed[0, 0, 4:8, 8:12] = torch.rand(4, 4, 3)  # one 4x4 patch: latent (1, 2)
    with torch.no_grad():
        moved = (tokenizer.encode_latents(frames) - tokenizer.encode_latents(changed)).abs().amax(-1)[0, 0] > 0
    if encoder == "patch":
        assert moved.nonzero().tolist() == [[1, 2]]
    else:  # strided convs see across patches: the change spreads
        assert moved.sum() > 1


def test_a_config_saved_before_the_encoder_option_loads_as_conv(tmp_path):
    tokenizer = tiny_tokenizer(encoder="conv").eval()
    tokenizer.save_pretrained(tmp_path / "tok")
    saved = json.loads((tmp_path / "tok" / "config.json").read_text())
    del saved["encoder"]
    (tmp_path / "tok" / "config.json").write_text(json.dumps(saved))
    assert Tokenizer.from_pretrained(tmp_path / "tok").config.encoder == "conv"
    with pytest.raises(ValueError, match="encoder must be one of"):
        TokenizerConfig(encoder="vit")


def test_save_load_round_trip_gives_identical_codes(tmp_path):
    tokenizer = tiny_tokenizer().eval()
    frames = torch.rand(1, 2, 16, 16, 3)
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = Tokenizer.from_pretrained(tmp_path / "tok")
    assert torch.equal(loaded.encode(frames), tokenizer.encode(frames))
    assert loaded.config == tokenizer.config
    with pytest.raises(FileNotFoundError, match="not a tokenizer"):
        Tokenizer.from_pretrained(tmp_path)


def test_bad_frames_and_codes_raise_clear_errors():
    tokenizer = tiny_tokenizer().eval()
    with pytest.raises(ValueError, match="channels last"):
        tokenizer.encode(torch.rand(1, 2, 3, 16, 16))
    with pytest.raises(TypeError, match="uint8 or float"):
        tokenizer.encode(torch.zeros(1, 2, 16, 16, 3, dtype=torch.int32))
    with pytest.raises(TypeError, match="torch.Tensor"):
        tokenizer.encode(np.zeros((1, 2, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match=r"codes must be in \[0, 16\)"):
        tokenizer.decode(torch.full((1, 1, 4, 4), 16))
    with pytest.raises(ValueError, match="divisible"):
        TokenizerConfig(frame_size=20, channels=(8, 16, 16))


def test_codebook_stats_and_psnr():
    stats = codebook_stats(torch.tensor([0, 0, 1, 1]), 4)
    assert stats["usage"] == 0.5 and abs(stats["perplexity"] - 2.0) < 1e-5
    x = torch.rand(2, 8, 8, 3)
    assert torch.all(psnr(x, x) == 100.0)
    assert abs(float(psnr(torch.zeros(1, 4), torch.full((1, 4), 0.1))) - 20.0) < 1e-4


def test_train_resume_tokenize_and_plug_into_genie2(tmp_path):
    data = tmp_path / "data"
    collect(data, episodes=3, steps=12, frame_size=16, progress=False)
    config = TokenizerTraining.preset("tiny", steps=6, checkpoint_every=3, eval_every=3, val_frames=8)
    config.model = TokenizerConfig(**{**config.model.__dict__, "channels": (8, 16)})
    result = train_tokenizer(str(data), str(tmp_path / "tok"), config, progress=False)
    assert set(result) >= {"psnr", "usage", "perplexity", "frames_per_s"}
    assert list((tmp_path / "tok" / "samples").glob("*.png"))
    with pytest.raises(ValueError, match="--resume"):
        train_tokenizer(str(data), str(tmp_path / "tok"), config, progress=False)
    # a run killed after step 4 (checkpoint at 3) and resumed ends with the same weights
    calls = {"n": 0}
    real_next = FrameBatches.next

    def dying_next(self):
        calls["n"] += 1
        if calls["n"] > 4:
            raise SystemExit("killed")
        return real_next(self)

    FrameBatches.next = dying_next
    try:
        with pytest.raises(SystemExit):
            train_tokenizer(str(data), str(tmp_path / "part"), config, progress=False)
    finally:
        FrameBatches.next = real_next
    train_tokenizer(str(data), str(tmp_path / "part"), config, resume=True, progress=False)
    whole, resumed = Tokenizer.from_pretrained(tmp_path / "tok"), Tokenizer.from_pretrained(tmp_path / "part")
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    assert metric_steps(tmp_path / "part") == list(range(1, 7))  # step 4's row, after the checkpoint, is not repeated

    codes_dir = encode_dataset(data, tmp_path / "tok", progress=False)
    from safetensors.numpy import load_file

    codes = load_file(str(next(codes_dir.glob("episode-*.safetensors"))))["codes"]
    assert codes.shape[1:] == (4, 4) and codes.max() < whole.num_codes
    world = Genie2.from_tokenizer(whole, dim=32, depth=1, heads=2, attn_dim_head=16, num_actions=7, num_meta_tokens=1)
    video = world.generate(torch.rand(1, 3, 16, 16), num_frames=2, actions=torch.tensor([[0, 1, 2]]))
    assert video.shape == (1, 3, 3, 16, 16) and video.min() >= 0 and video.max() <= 1  # pixels out
    world.train()
    assert not world.tokenizer.training and not any(p.requires_grad for p in world.tokenizer.parameters())
    loss, _ = world(torch.rand(1, 3, 3, 16, 16), actions=torch.tensor([[0, 1, 2]]))
    loss.backward()


def metric_steps(run) -> list[int]:
    """The step of each row of a run's metrics.jsonl."""
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_resume_without_a_whole_checkpoint_starts_from_scratch(tmp_path):
    """A run killed before its first checkpoint was whole: --resume starts it again, as a new run would go."""
    data = tmp_path / "data"
    collect(data, episodes=3, steps=12, frame_size=16, progress=False)
    config = TokenizerTraining.preset("tiny", steps=3, eval_every=3, val_frames=8)
    config.model = TokenizerConfig(**{**config.model.__dict__, "channels": (8, 16)})
    killed = tmp_path / "killed"
    (killed / "checkpoints" / ".tmp-step-00000003-12345").mkdir(parents=True)
    (killed / "samples").mkdir()
    (killed / "samples" / "step-00000003.png").write_bytes(b"half a png")
    (killed / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "lo')
    train_tokenizer(str(data), str(killed), config, resume=True, progress=False)
    train_tokenizer(str(data), str(tmp_path / "fresh"), config, progress=False)
    assert metric_steps(killed) == [1, 2, 3]
    assert [p.name for p in (killed / "checkpoints").iterdir()] == ["step-00000003"]
    fresh, restarted = Tokenizer.from_pretrained(tmp_path / "fresh"), Tokenizer.from_pretrained(killed)
    for (name, a), b in zip(fresh.state_dict().items(), restarted.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_non_finite_loss_stops_the_run_at_its_step(tmp_path, monkeypatch):
    """The loop both trainers share: a NaN loss raises with the step's number, before that step is logged
    or saved; the checkpoint before it is kept."""
    import genie2.tokenizer.train as trainer

    data = tmp_path / "data"
    collect(data, episodes=3, steps=12, frame_size=16, progress=False)
    config = TokenizerTraining.preset("tiny", steps=6, checkpoint_every=2, eval_every=100, val_frames=8)
    config.model = TokenizerConfig(**{**config.model.__dict__, "channels": (8, 16)})
    real_step, calls = trainer.train_step, []

    def nan_at_step_3(*args, **kwargs):
        calls.append(args)
        record = real_step(*args, **kwargs)
        return dict(record, loss=float("nan")) if len(calls) == 4 else record

    monkeypatch.setattr(trainer, "train_step", nan_at_step_3)
    with pytest.raises(FloatingPointError, match="non-finite tokenizer loss at step 3; the last checkpoint is kept"):
        train_tokenizer(str(data), str(tmp_path / "tok"), config, progress=False)
    assert metric_steps(tmp_path / "tok") == [1, 2, 3]
    assert [p.name for p in (tmp_path / "tok" / "checkpoints").glob("step-*")] == ["step-00000002"]


def test_resume_falls_back_past_a_damaged_checkpoint_and_says_so(tmp_path, capsys):
    """--resume with a damaged newest checkpoint continues from the one before it (saying which),
    sets the damaged one aside, and ends where the undamaged run ended."""
    data = tmp_path / "data"
    collect(data, episodes=3, steps=12, frame_size=16, progress=False)
    config = TokenizerTraining.preset("tiny", steps=6, checkpoint_every=2, eval_every=100, val_frames=8)
    config.model = TokenizerConfig(**{**config.model.__dict__, "channels": (8, 16)})
    run = tmp_path / "run"
    train_tokenizer(str(data), str(run), config, progress=False)
    finished = Tokenizer.from_pretrained(run).state_dict()
    damaged = run / "checkpoints" / "step-00000006" / "trainer" / "state.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])
    train_tokenizer(str(data), str(run), config, resume=True, progress=False)
    assert "continuing from step-00000004" in capsys.readouterr().out
    assert (run / "checkpoints" / ".damaged-step-00000006").is_dir() and metric_steps(run) == [1, 2, 3, 4, 5, 6]
    for (name, a), b in zip(finished.items(), Tokenizer.from_pretrained(run).state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_the_hard_tile_loss_is_the_mean_error_of_the_worst_tiles():
    tokenizer = tiny_tokenizer(hard_tile_share=2 / 32)  # 16x16 frames, 4x4 tiles: the worst 2 of 2 x 16
    target = torch.zeros(1, 2, 16, 16, 3)
    recon = target.clone()
    recon[0, 0, :4, :4] = 0.5  # one tile off by 0.5 everywhere
    recon[0, 1, 4:8, 8:12, 0] = 0.3  # one off by 0.3 in a channel: mean 0.1
    recon[0, 1, 12:, 12:] = 0.05  # a milder one, not among the worst two
    assert torch.allclose(tokenizer.hard_tile_loss(recon, target), torch.tensor(0.3))
    assert tiny_tokenizer().hard_tile_loss(recon, target) == 0  # off by default
    loss, parts = tokenizer(torch.rand(1, 2, 16, 16, 3), quantize=False)
    assert parts["hard"] > 0 and loss > parts["l1"] + parts["mse"]
    with pytest.raises(ValueError, match="hard_tile_share"):
        TokenizerConfig(hard_tile_share=1.5)


def test_the_codebook_is_seeded_with_one_latent_per_distinct_patch(monkeypatch):
    from genie2.tokenizer.train import seed_codebook

    tokenizer = tiny_tokenizer()  # 16x16 frames, 4x4 patches: 16 per frame
    floor = torch.zeros(1, 16, 16, 3, dtype=torch.uint8)
    sprite = floor.clone()
    sprite[0, 4:8, 8:12] = 200  # one patch in one frame of a hundred: 1 in 1,600
    frames = [floor] * 99 + [sprite]
    seen = {}
    monkeypatch.setattr(tokenizer, "init_codebook", lambda latents, batch_tokens: seen.update(latents=latents))
    seed_codebook(tokenizer, [{"frames": f} for f in frames], seed=0, batch_size=4)
    latents = seen["latents"]
    assert len(latents) == 2  # the floor once and the sprite once, so k-means++ weighs them alike
    sprite_latent = tokenizer.encode_latents(sprite[None])[0, 0, 1, 2]
    assert torch.isclose(latents, sprite_latent, atol=1e-5).all(-1).any()


def _frames_dataset(root, frames: np.ndarray):
    """A one-episode dataset of `frames` (t 16 16 3 uint8), read back as single training frames."""
    from genie2.data.clips import ClipDataset
    from genie2.data.episode import DatasetInfo, Episode, episode_path

    t = len(frames)
    actions = np.zeros(t, np.int64)
    actions[0] = -1
    Episode(frames, actions, np.zeros(t), np.zeros(t, bool), np.zeros(t, bool)).save(episode_path(root, 0))
    DatasetInfo("test", "test", 16, 1, ["a"], num_episodes=1, num_frames=t).save(root)
    return ClipDataset(root, clip_frames=1, split="all", stride=1)


def test_patch_rarity_gives_each_distinct_patch_content_the_same_weight(tmp_path):
    from genie2.tokenizer.train import patch_rarity

    frames = np.zeros((100, 16, 16, 3), np.uint8)  # 4x4 patches: the floor, and a sprite in 2 frames of 100
    frames[[10, 60], 4:8, 8:12] = 200
    weights = patch_rarity(_frames_dataset(tmp_path, frames), 4)
    assert weights.shape == (100,) and np.isclose(weights.sum(), 1.0)
    # two contents weigh 1 each: the sprite's frames share the sprite's half, the 100 frames the floor's
    assert np.isclose(weights[[10, 60]].sum(), 0.5 + 0.5 * 2 * 15 / (100 * 16 - 2), atol=1e-9)
    assert weights[10] == weights[60] > 20 * weights[0]


def test_rare_draws_show_a_rare_frame_often_and_repeat_on_resume(tmp_path):
    frames = np.zeros((100, 16, 16, 3), np.uint8)
    frames[37, :4, :4] = 255  # one frame of a hundred holds the only white patch
    dataset = _frames_dataset(tmp_path, frames)
    from genie2.tokenizer.train import patch_rarity

    weights = patch_rarity(dataset, 4)
    rare = FrameBatches(dataset, 8, seed=0, weights=weights, rare=4)
    uniform = FrameBatches(dataset, 8, seed=0)

    def white(batches) -> int:
        return sum(int(frame[0, :4, :4].max() == 255) for _ in range(25) for frame in batches.next())

    assert white(rare) > 30 and white(uniform) <= 4  # about half the rare draws, against 2 in 200 uniformly
    again = FrameBatches(dataset, 8, seed=0, weights=weights, rare=4)
    again.epoch, again.position = rare.epoch, rare.position  # where a resumed run starts
    assert torch.equal(rare.next(), again.next())


def test_a_rare_share_out_of_range_is_refused(tmp_path):
    data = tmp_path / "data"
    collect(data, episodes=2, steps=6, frame_size=16, progress=False)
    config = TokenizerTraining.preset("tiny", steps=2, rare_share=1.5)
    with pytest.raises(ValueError, match="rare_share"):
        train_tokenizer(str(data), str(tmp_path / "tok"), config, progress=False)
