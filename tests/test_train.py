"""World-model training: it learns, it resumes exactly after kill -9, it refuses to overwrite."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from genie2 import Genie2
from genie2.data.codes import default_codes_dir, encode_dataset
from genie2.data.collect import collect
from genie2.tokenizer.model import Tokenizer, TokenizerConfig
from genie2.train.run import load_state
from genie2.train.world_model import Training, train
from genie2.world import WORLD_FILES


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A small collected dataset, a (random) 16x16 tokenizer and its codes."""
    root = tmp_path_factory.mktemp("pipeline")
    collect(root / "data", episodes=6, steps=24, frame_size=16, progress=False)
    torch.manual_seed(0)
    Tokenizer(
        TokenizerConfig(frame_size=16, channels=(8, 16), res_blocks=1, dim_latent=8, codebook_size=16)
    ).save_pretrained(root / "tok")
    encode_dataset(root / "data", root / "tok", progress=False)
    return root


def run_args(root, out, *extra):
    return [
        sys.executable,
        "-m",
        "genie2.cli",
        "train",
        "--data",
        str(root / "data"),
        "--tokenizer",
        str(root / "tok"),
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--quiet",
        *extra,
    ]


def test_tiny_preset_learns_and_saves_a_playable_checkpoint(pipeline, tmp_path):
    config = Training.preset("tiny", steps=40, eval_every=40)
    codes = default_codes_dir(pipeline / "data", pipeline / "tok")
    out = train(
        str(pipeline / "data"), str(codes), str(pipeline / "tok"), str(tmp_path / "run"), config, progress=False
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in rows]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    # the validation at the last step sits in the same row: losses and how much the actions tell the model
    assert {"val_loss", "val_state_loss", "val_action_gain"} <= set(rows[-1]) and "val_loss" not in rows[0]
    assert math.isfinite(rows[-1]["val_action_gain"])
    assert list((out / "samples").glob("*.gif")) and list((out / "logs").rglob("events.out.tfevents*"))
    world = Genie2.from_pretrained(out)  # the checkpoint alone carries the tokenizer
    video = world.generate(torch.rand(1, 3, 16, 16), num_frames=2, actions=torch.tensor([[0, 1, 2]]))
    assert video.shape == (1, 3, 3, 16, 16)
    with pytest.raises(ValueError, match="--resume"):
        train(str(pipeline / "data"), str(codes), str(pipeline / "tok"), str(tmp_path / "run"), config)


@pytest.mark.parametrize("ema", [False, True])
def test_kill_9_then_resume_matches_an_uninterrupted_run(pipeline, tmp_path, ema):
    steps = ["--steps", "30", "--checkpoint-every", "5", "--eval-every", "100", *(["--ema", "0.9"] if ema else [])]
    subprocess.run(run_args(pipeline, tmp_path / "whole", *steps), check=True)
    proc = subprocess.Popen(run_args(pipeline, tmp_path / "killed", *steps))
    deadline = time.time() + 120
    while not list((tmp_path / "killed" / "checkpoints").glob("step-*0")) and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for folder in (tmp_path / "killed" / "checkpoints").glob("step-*"):  # never half-written
        assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "trainer", *WORLD_FILES}
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    subprocess.run(run_args(pipeline, tmp_path / "killed", *steps, "--resume"), check=True)
    whole = load_file(str(tmp_path / "whole" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.allclose(whole[name], resumed[name], atol=1e-6), name
    assert metric_steps(tmp_path / "killed") == list(range(1, 31))  # rows after the checkpoint are not repeated


def metric_steps(run) -> list[int]:
    """The step of each row of a run's metrics.jsonl."""
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_resume_without_a_whole_checkpoint_starts_from_scratch(pipeline, tmp_path):
    """A run killed before its first checkpoint was whole leaves only leftovers; --resume starts it again cleanly."""
    codes = default_codes_dir(pipeline / "data", pipeline / "tok")
    killed = tmp_path / "killed"
    (killed / "checkpoints" / ".tmp-step-00000002-12345").mkdir(parents=True)  # a checkpoint being written
    (killed / "checkpoints" / ".tmp-step-00000002-12345" / "config.json").write_text("{")
    (killed / "logs").mkdir()
    (killed / "logs" / "events.out.tfevents.0").write_bytes(b"old")
    (killed / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "loss": 8.0}\n{"step": 3, "lo')
    (killed / "training.json").write_text("{}")
    config = Training.preset("tiny", steps=2, eval_every=100)
    args = (str(pipeline / "data"), str(codes), str(pipeline / "tok"))
    train(*args, str(killed), config, resume=True, progress=False)
    train(*args, str(tmp_path / "fresh"), config, progress=False)
    assert metric_steps(killed) == [1, 2] and not (killed / "logs" / "events.out.tfevents.0").exists()
    assert [p.name for p in (killed / "checkpoints").iterdir()] == ["step-00000002"]
    fresh, restarted = (load_file(str(run / "model.safetensors")) for run in (tmp_path / "fresh", killed))
    for name in fresh:
        assert torch.equal(fresh[name], restarted[name]), name
    # a folder that holds anything else is not a run to restart: it is refused, not cleared
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt"):
        train(*args, str(tmp_path / "other"), config, resume=True, progress=False)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_resume_drops_the_metrics_rows_written_after_the_last_checkpoint(pipeline, tmp_path):
    codes = default_codes_dir(pipeline / "data", pipeline / "tok")
    args = (str(pipeline / "data"), str(codes), str(pipeline / "tok"), str(tmp_path / "run"))
    train(*args, Training.preset("tiny", steps=7, checkpoint_every=5, eval_every=100), progress=False)
    import shutil

    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step-00000007")  # as if killed at step 7: step 5 is the last
    train(*args, Training.preset("tiny"), resume=True, progress=False)
    assert metric_steps(tmp_path / "run") == list(range(1, 8))


def test_keep_checkpoints_must_keep_at_least_one():
    with pytest.raises(ValueError, match="keep_checkpoints"):
        Training.preset("tiny", keep_checkpoints=0).check()


class FakeModel:
    """Writes model files whose bytes say which step they are from."""

    def __init__(self, step):
        self.step = step

    def save_pretrained(self, folder):
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "model.safetensors", "dataset.json"):
            (folder / name).write_text(f"{name} of step {self.step}")


def test_export_switches_every_model_file_at_once(tmp_path, monkeypatch):
    """A crash while exporting leaves the run folder's model files all of one step, never mixed."""
    import shutil

    from genie2.train.run import export_latest, save_checkpoint

    names = ("config.json", "model.safetensors", "dataset.json")
    with pytest.raises(ValueError, match="keep"):
        save_checkpoint(tmp_path, 1, FakeModel(1), {}, keep=0)
    save_checkpoint(tmp_path, 1, FakeModel(1), {})
    export_latest(tmp_path, names)
    assert {(tmp_path / name).read_text() for name in names} == {f"{name} of step 1" for name in names}
    save_checkpoint(tmp_path, 2, FakeModel(2), {})
    real_copy, calls = shutil.copyfile, []

    def dying_copy(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise SystemExit("killed")
        return real_copy(*args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", dying_copy)
    with pytest.raises(SystemExit):
        export_latest(tmp_path, names)
    assert {(tmp_path / name).read_text() for name in names} == {f"{name} of step 1" for name in names}
    monkeypatch.setattr(shutil, "copyfile", real_copy)
    export_latest(tmp_path, names)
    assert {(tmp_path / name).read_text() for name in names} == {f"{name} of step 2" for name in names}
    assert [p.name[:21] for p in tmp_path.glob(".export-*")] == [".export-step-00000002"]  # older exports go


def test_train_encodes_the_codes_it_is_missing(pipeline, tmp_path):
    """Without codes for its tokenizer, train encodes them first (as `genie2 tokenize` would)."""
    codes = tmp_path / "codes"
    config = Training.preset("tiny", steps=2, eval_every=100)
    args = (str(pipeline / "data"), str(codes), str(pipeline / "tok"))
    train(*args, str(tmp_path / "run"), config, progress=False)
    made = sorted(p.name for p in codes.glob("episode-*.safetensors"))
    assert len(made) == 6 and (codes / "codes.json").is_file()
    (codes / made[0]).unlink()  # a tokenize that was killed part-way
    train(*args, str(tmp_path / "again"), config, progress=False)
    assert sorted(p.name for p in codes.glob("episode-*.safetensors")) == made


def test_codes_of_another_tokenizer_are_refused(pipeline, tmp_path):
    other = Tokenizer.from_pretrained(pipeline / "tok")
    with torch.no_grad():
        next(other.parameters()).add_(1.0)  # another tokenizer of the same shape
    other.save_pretrained(tmp_path / "other")
    codes = default_codes_dir(pipeline / "data", pipeline / "tok")
    with pytest.raises(ValueError, match="another tokenizer"):
        train(
            str(pipeline / "data"), str(codes), str(tmp_path / "other"), str(tmp_path / "run"), Training.preset("tiny")
        )


def test_two_processes_match_one_with_the_same_global_batch(pipeline, tmp_path):
    """DDP over gloo on CPU: the same global batch split over 2 processes trains the same model.

    Plain SGD, so float noise stays float noise (AdamW divides by the gradient's RMS: on a weight whose
    gradient is ~0 that turns noise into a whole +-lr step). The two runs add the same per-clip
    gradients in another order (two halves, then the all-reduce), so each gradient element differs by
    a few float32 roundings, relative ~1e-7. A step moves a weight by lr * (clipped gradient, norm <= 1)
    with lr = (t + 1) / 100 in the warmup, 0.36 over the 8 steps: at most ~4e-7 apart from the gradients,
    plus one float32 rounding of each weight per step (8 * 2**-23 * |w| ~ 1e-6 |w|). atol = rtol = 1e-5
    leaves 10x headroom; a wrong split (ranks training on the same clips, or on another rank's action
    dropout) moves weights by ~1e-3."""
    steps = ["--steps", "8", "--eval-every", "100", "--cpu", "--optimizer", "sgd", "--lr", "1"]
    one = run_args(pipeline, tmp_path / "one", *steps)
    subprocess.run(one, check=True)
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    subprocess.run(two + run_args(pipeline, tmp_path / "two", *steps)[1:], check=True)
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), rtol=1e-5, atol=1e-5), name
    rows = [
        [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        for run in ("one", "two")
    ]
    for row_one, row_two in zip(
        *rows, strict=True
    ):  # the logged loss is the global batch's, on any number of processes
        for key in ("loss", "state_loss", "grad_norm"):
            assert math.isclose(row_one[key], row_two[key], rel_tol=1e-5), (row_one["step"], key)


def two_processes(pipeline, out, *extra, env=None):
    """`genie2 train` on 2 gloo processes (torch.distributed.run), started; its output goes to out.log."""
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    args += run_args(pipeline, out, "--cpu", *extra)[1:]
    out.mkdir()
    log = (out.parent / f"{out.name}.log").open("w")
    env = {**os.environ, **(env or {})}
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)


def kill_group(proc) -> None:
    """SIGKILL the launcher and its workers (each in a session of its own), when anything is left of them."""
    import psutil

    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for process in family:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def test_a_stop_signal_on_one_process_stops_both_at_the_same_step(pipeline, tmp_path):
    """SIGTERM reaches rank 1 only: both ranks stop after the same step and write its checkpoint
    (a rank that stopped alone would wait at the checkpoint's barrier while the other waits in the
    gradient all-reduce)."""
    import psutil

    out = tmp_path / "run"
    proc = two_processes(pipeline, out, "--steps", "1000", "--checkpoint-every", "1000", "--eval-every", "1000")
    try:
        deadline = time.time() + 120
        while not ((out / "metrics.jsonl").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) >= 2):
            assert time.time() < deadline and proc.poll() is None, (tmp_path / "run.log").read_text()
            time.sleep(0.05)
        (worker,) = [p for p in psutil.Process(proc.pid).children() if p.environ().get("RANK") == "1"]
        os.kill(worker.pid, signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        kill_group(proc)
    (checkpoint,) = (out / "checkpoints").glob("step-*")
    step = int(checkpoint.name.split("-")[1])
    assert step < 1000 and metric_steps(out) == list(range(1, step + 1)), (tmp_path / "run.log").read_text()
    assert (tmp_path / "run.log").read_text().count("genie2 train: interrupted") == 2  # each rank, by the flag


def test_a_nan_on_one_process_stops_both_with_the_error(pipeline, tmp_path):
    """A non-finite loss on rank 1 only (the GENIE2_TEST_NAN_AT test hook): both ranks raise the
    FloatingPointError at the same step; the last checkpoint is kept."""
    out = tmp_path / "run"
    proc = two_processes(pipeline, out, "--steps", "8", "--checkpoint-every", "2", env={"GENIE2_TEST_NAN_AT": "1:3"})
    try:
        proc.wait(timeout=120)
    finally:
        kill_group(proc)
    log = (tmp_path / "run.log").read_text()
    assert proc.returncode != 0 and log.count("non-finite world-model loss at step 3; the last checkpoint") == 2, log
    assert [p.name for p in (out / "checkpoints").glob("step-*")] == ["step-00000002"] and metric_steps(out) == [
        1,
        2,
        3,
    ]


def test_eval_writes_every_output_and_a_valid_report(pipeline, tmp_path):
    from genie2 import load
    from genie2.evaluate import CopyLastFrame, evaluate_world, psnr_ssim, write_report

    config = Training.preset("tiny", steps=4, eval_every=100)
    codes = default_codes_dir(pipeline / "data", pipeline / "tok")
    run = train(
        str(pipeline / "data"), str(codes), str(pipeline / "tok"), str(tmp_path / "run"), config, progress=False
    )
    world = load(run)
    report = evaluate_world(world, pipeline / "data", "all", episodes=2, horizon=3, prompt_frames=2, progress=False)
    write_report(report, tmp_path / "report", run, {"horizon": 3})
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert {"version", "episodes", "horizon", "prompt_frames", "metrics", "frames_per_s", "checkpoint_sha256"} <= set(
        saved
    )
    for name in ("psnr", "ssim", "psnr_random", "ssim_random", "psnr_copy", "delta_psnr", "tokenizer_psnr"):
        assert len(saved["metrics"][name]["mean"]) == 3 and len(saved["metrics"][name]["std"]) == 3, name
    assert (tmp_path / "report" / "psnr.png").stat().st_size > 0 and (tmp_path / "report" / "rollouts.gif").exists()

    # a world that copies the last prompt frame scores exactly the metrics of that copy
    baseline = evaluate_world(CopyLastFrame(), pipeline / "data", "all", episodes=1, horizon=3, progress=False)
    from genie2.data.episode import Episode

    first = sorted((pipeline / "data" / "episodes").glob("*.safetensors"))[0]
    frames = torch.from_numpy(Episode.load(first).frames[:4])
    psnr, _ = psnr_ssim(frames[:1].expand(3, -1, -1, -1), frames[1:])
    assert torch.allclose(torch.tensor(baseline["metrics"]["psnr"]["mean"]), psnr, atol=1e-4)
    assert baseline["metrics"]["psnr_copy"]["mean"] == baseline["metrics"]["psnr"]["mean"]  # the built-in copy
    with pytest.raises(FileNotFoundError, match="world-model checkpoint"):
        load(tmp_path / "nothing")
    with pytest.raises(ValueError, match="lower --horizon"):
        evaluate_world(world, pipeline / "data", "all", episodes=1, horizon=500, progress=False)


def test_train_decoding_parallel_saves_a_parallel_world_that_eval_decodes_in_k_passes(pipeline, tmp_path, monkeypatch):
    import genie2.cli as cli
    import genie2.model.decoding as decoding

    data, run = str(pipeline / "data"), tmp_path / "run"
    train_args = ["train", "--data", data, "--tokenizer", str(pipeline / "tok"), "--out", str(run), "--quiet"]
    cli.main([*train_args, "--preset", "tiny", "--steps", "2", "--decoding", "parallel", "--decode-steps", "3"])
    saved = json.loads((run / "config.json").read_text())
    assert (saved["decoding"], saved["decode_steps"]) == ("parallel", 3)
    assert json.loads((run / "training.json").read_text())["model"]["decoding"] == "parallel"
    assert Genie2.from_pretrained(run).mask_token is not None  # the parallel mode's learned mask token
    passes, real = [], decoding.frame_pass
    monkeypatch.setattr(decoding, "frame_pass", lambda *args, **kw: passes.append(1) or real(*args, **kw))
    counts, eval_args = {}, ["eval", "--checkpoint", str(run), "--data", data, "--split", "all", "--quiet"]
    for k in (None, 1, 4):
        passes.clear()
        out = tmp_path / f"eval-{k}"
        cli.main([*eval_args, "--out", str(out), "--episodes", "1", "--horizon", "2", "--prompt-frames", "1",
                  *(["--decode-steps", str(k)] if k else [])])  # fmt: skip
        report, counts[k] = json.loads((out / "report.json").read_text()), len(passes)
        assert (report["decoding"], report["decode_steps"], report["config"]["decode_steps"]) == ("parallel", k or 3, k)
    # two rollouts (real and random actions) of two frames each: 2 x 2 x 3 passes more at K = 4 than at K = 1
    assert counts[4] - counts[1] == 12 and counts[None] - counts[1] == 8  # the model's own K = 3 by default


def test_eval_refuses_a_dataset_with_other_actions(pipeline, tmp_path):
    from genie2.data.episode import DatasetInfo, Episode, episode_path
    from genie2.evaluate import evaluate_world
    from genie2.world import World

    other = tmp_path / "other"
    source = Episode.load(sorted((pipeline / "data" / "episodes").glob("*.safetensors"))[0])
    source.save(episode_path(other, 0))
    DatasetInfo("test", "test", 16, 3, ["a", "b", "c"], num_episodes=1, num_frames=len(source)).save(other)
    world = World(Genie2.from_pretrained(_tiny_run(pipeline, tmp_path)))
    with pytest.raises(ValueError, match="actions"):
        evaluate_world(world, other, "all", episodes=1, horizon=2, progress=False)


def _tiny_run(pipeline, tmp_path):
    codes = default_codes_dir(pipeline / "data", pipeline / "tok")
    config = Training.preset("tiny", steps=2, eval_every=100)
    return train(
        str(pipeline / "data"), str(codes), str(pipeline / "tok"), str(tmp_path / "tiny"), config, progress=False
    )


@pytest.mark.parametrize(
    "verb, args, message",
    [
        ("train", ["--preset", "huge"], "unknown preset"),
        ("train", ["--steps", "0"], "steps must be a positive int"),
        ("train", ["--clip-frames", "1"], "clip_frames must be >= 2"),
        ("train-tokenizer", ["--preset", "huge"], "unknown preset"),
        ("train-tokenizer", ["--batch-size", "100000"], "larger than"),
        ("eval", ["--checkpoint", "runs/missing"], "not a world-model checkpoint"),
        ("eval", ["--world", "missing"], "no world named 'missing'"),  # a bare name: the shipped ones are listed
        ("tokenize", ["--tokenizer", "missing"], "not a tokenizer checkpoint"),
    ],
)
def test_cli_bad_values_get_clear_errors(pipeline, tmp_path, verb, args, message):
    base = {
        "train": ["--data", str(pipeline / "data"), "--tokenizer", str(pipeline / "tok"), "--out", str(tmp_path / "r")],
        "train-tokenizer": ["--data", str(pipeline / "data"), "--out", str(tmp_path / "t"), "--preset", "tiny"],
        "eval": ["--data", str(pipeline / "data"), "--out", str(tmp_path / "e")],
        "tokenize": ["--data", str(pipeline / "data")],
    }[verb]
    out = subprocess.run([sys.executable, "-m", "genie2.cli", verb, *base, *args], capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_terminal_player_reprompts_plays_and_quits(pipeline, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    run = _tiny_run(pipeline, tmp_path)
    cmd = [sys.executable, "-m", "genie2.cli", "play", "--checkpoint", str(run), "--data", str(pipeline / "data")]
    cmd += ["--terminal", "--colour", "always", "--temperature", "0", "--save-path", str(tmp_path / "frame.png")]
    child = pexpect.spawn(cmd[0], cmd[1:], timeout=60, encoding="utf-8")
    child.expect("left")  # the dataset's action names are listed
    child.expect("▀")  # the frame is drawn with half blocks
    child.expect("next action")
    child.sendline("9")
    child.expect("invalid action")
    child.sendline("2")
    child.expect("frame 1 saved")
    child.sendline("q")
    child.expect("stopped after 1 dreamed frames")
    child.expect(pexpect.EOF)
    from PIL import Image

    assert Image.open(tmp_path / "frame.png").size == (16, 16)


def test_half_blocks_draw_two_pixel_rows_per_line():
    from genie2.play.terminal import half_blocks

    frame = np.zeros((4, 2, 3), dtype=np.uint8)
    frame[0] = 255  # top row white
    lines = half_blocks(frame).split("\n")
    assert len(lines) == 2 and lines[0].count("▀") == 2
    assert "38;2;255;255;255m" in lines[0] and "48;2;0;0;0m" in lines[0]


def test_browser_player_serves_a_trained_run_without_its_dataset(pipeline, tmp_path):
    """`genie2 play` (browser) on a run folder: the start frames and action names come with it."""
    import socket
    import urllib.request

    from genie2.world import load

    run = _tiny_run(pipeline, tmp_path)
    world = load(run)  # the run folder carries what playing and evaluating need
    assert world.action_names[:2] == ["left", "right"] and world.start_frames.dtype == np.uint8
    assert world.max_context_frames == Training.preset("tiny").clip_frames - 1  # as much context as training
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "genie2.cli", "play", "--checkpoint", str(run), "--port", str(port), "--no-compile"]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert f"http://127.0.0.1:{port}/" in server.stdout.readline()
        for _ in range(100):
            try:
                info = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=1).read())
                break
            except OSError:
                time.sleep(0.1)
        assert info["action_names"][:3] == ["left", "right", "forward"] and info["start_frames"] >= 1
        from websockets.sync.client import connect

        with connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:  # the model runs on the main thread
            assert json.loads(ws.recv())["type"] == "hello"
            for message in ({"type": "reset", "start": 0}, {"type": "step", "keys": [2], "id": 7}):
                ws.send(json.dumps(message))
                reply = json.loads(ws.recv(timeout=60))
                assert reply["type"] == "frame", reply
            assert reply["id"] == 7 and reply["index"] == 1
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("error", [TypeError("a bug"), ValueError("a bug"), KeyError("a bug")])
def test_cli_shows_the_traceback_of_a_bug(monkeypatch, error):
    """Only the project's input errors get the one-line message; a TypeError from a bug is not one."""
    import genie2.cli as cli

    def broken(args):
        raise error

    monkeypatch.setattr(cli, "evaluate", broken)
    with pytest.raises(type(error), match="a bug"):
        cli.main(["eval", "--checkpoint", "c", "--data", "d", "--out", "o"])


def test_cli_gives_input_errors_one_line_and_exit_code_2(monkeypatch, capsys):
    import genie2.cli as cli
    from genie2.errors import InputError

    def refused(args):
        raise InputError("--horizon must be positive")

    monkeypatch.setattr(cli, "evaluate", refused)
    with pytest.raises(SystemExit) as exit:
        cli.main(["eval", "--checkpoint", "c", "--data", "d", "--out", "o"])
    assert exit.value.code == 2 and "genie2 eval: error: --horizon must be positive" in capsys.readouterr().err


def test_a_run_slower_than_planned_replans_its_steps_to_meet_its_deadline(pipeline, tmp_path, capsys):
    config = Training.preset("tiny", steps=200, checkpoint_every=100, eval_every=100)
    codes = default_codes_dir(pipeline / "data", pipeline / "tok")
    out = train(str(pipeline / "data"), str(codes), str(pipeline / "tok"), str(tmp_path / "run"), config,
                progress=False, deadline=time.time())  # fmt: skip
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 10  # the first re-plan, after 10 steps: none fit before a deadline passed
    assert "val_loss" in rows[-1]  # the last step (the new one) still evaluates, checkpoints and exports
    assert load_state(tmp_path / "run" / "checkpoints" / "step-00000010")["config"]["steps"] == 10
    assert json.loads((out / "training.json").read_text())["steps"] == 10  # the new plan, which --resume goes on from
    assert "re-planned to 10 steps" in capsys.readouterr().out


def test_first_no_key_gives_that_share_of_clips_a_first_frame_with_no_key(pipeline, tmp_path, monkeypatch):
    import genie2.train.world_model as world_model

    seen, real = [], world_model.world_loss

    def record(model, batch, *args):  # the training batches (validation runs without gradients)
        if torch.is_grad_enabled():
            seen.append(batch)
        return real(model, batch, *args)

    monkeypatch.setattr(world_model, "world_loss", record)
    codes = default_codes_dir(pipeline / "data", pipeline / "tok")
    shares = {}
    for share in (0.0, 0.5, 1.0):
        seen.clear()
        config = Training.preset("tiny", steps=16, eval_every=100, batch_size=4, first_no_key=share)
        out = str(tmp_path / f"run-{share}")
        train(str(pipeline / "data"), str(codes), str(pipeline / "tok"), out, config, progress=False)
        first = torch.cat([batch["actions"][:, 0] for batch in seen])  # (clips a): each first frame's keys
        shares[share] = float((first == -1).all(dim=-1).float().mean())
        assert (torch.cat([batch["actions"][:, 1:] for batch in seen]) >= 0).any()  # later frames keep theirs
    # with none, only the clips at an episode's start (whose first frame has no key anyway)
    assert shares[0.0] < 0.5 and shares[0.0] < shares[0.5] < 1.0 and shares[1.0] == 1.0
    with pytest.raises(ValueError, match="first_no_key"):
        Training.preset("tiny", first_no_key=1.5).check()
