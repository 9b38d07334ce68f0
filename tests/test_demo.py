"""`genie2 demo`: every stage runs and reports, and a second run resumes instead of redoing."""

import json
import signal
import subprocess
import sys

import pytest

from genie2.demo import DemoPlan, run_demo

TINY = dict(
    minutes=0.05,
    tokenizer_preset="tiny",
    world_preset="tiny",
    episodes=4,
    steps_per_episode=30,
    min_tokenizer_steps=20,
    min_world_steps=10,
    eval_episodes=1,
    horizon=4,
    workers=1,
    compile_play=False,
)


def test_demo_runs_every_stage_then_resumes_from_the_last_finished_one(tmp_path, capsys):
    out = tmp_path / "demo"
    record = run_demo(out, DemoPlan(**TINY), progress=False)
    for stage in ("collect", "tokenizer", "tokenize", "world", "eval"):
        assert record[stage]["done"] and record[stage]["seconds"] >= 0
    assert record["tokenizer"]["steps"] >= 20 and record["world"]["steps"] >= 10
    assert json.loads((out / "data" / "dataset.json").read_text())["source"]["policy"] == "random"
    for name in ("report.json", "psnr.png", "rollouts.gif"):
        assert (out / "eval" / name).is_file()
    assert (out / "world" / "start-frames.safetensors").is_file()  # the result plays without its data
    printed = capsys.readouterr().out
    assert "| total |" in printed and f"genie2 play --world {out / 'world'}" in printed

    # forget the last stage, as if the run had been killed during it: only eval runs again
    saved = json.loads((out / "demo.json").read_text())
    del saved["eval"]
    (out / "demo.json").write_text(json.dumps(saved))
    weights = (out / "world" / "model.safetensors").stat().st_mtime_ns
    again = run_demo(out, DemoPlan(**TINY), progress=False)
    assert again["eval"]["done"] and (out / "world" / "model.safetensors").stat().st_mtime_ns == weights
    assert "[5/5]" in capsys.readouterr().out


def test_demo_refuses_a_folder_made_with_other_settings(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.json").write_text(json.dumps({"plan": {**DemoPlan(**TINY).__dict__, "episodes": 9}}))
    with pytest.raises(ValueError, match="other settings"):
        run_demo(out, DemoPlan(**TINY), progress=False)


def test_a_demo_folder_saved_before_a_plan_field_existed_still_resumes(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    old = {k: v for k, v in DemoPlan(**TINY).__dict__.items() if k != "env"}  # demo.json from before --env
    (out / "demo.json").write_text(json.dumps({"plan": old}))
    from genie2.demo import DemoRun

    assert DemoRun(out, DemoPlan(**TINY)).record["plan"]["env"] == "minigrid"
    with pytest.raises(ValueError, match="other settings"):
        DemoRun(out, DemoPlan(**{**TINY, "env": "crafter"}))


def test_each_env_gets_its_own_demo_plan_and_the_options_override_it():
    crafter = DemoPlan.for_env("crafter", minutes=5, episodes=None)
    assert (crafter.env, crafter.tokenizer_preset, crafter.world_preset) == ("crafter", "crafter-cpu", "crafter-cpu")
    assert crafter.minutes == 5 and crafter.episodes == 200 and crafter.policy == "moves"
    assert DemoPlan.for_env("crafter", episodes=7).episodes == 7
    pong = DemoPlan.for_env("pong")
    assert (pong.env, pong.tokenizer_preset, pong.world_preset, pong.episodes) == ("pong", "cpu", "cpu", 300)


def test_an_unknown_demo_env_is_refused_before_the_folder_records_it(tmp_path):
    with pytest.raises(ValueError, match="unknown env 'crafterr'"):
        run_demo(tmp_path / "demo", DemoPlan.for_env("crafterr", **{k: v for k, v in TINY.items() if k != "env"}))
    assert not (tmp_path / "demo" / "demo.json").exists()  # the right --env then runs in the same folder


@pytest.mark.parametrize("field, value", [("minutes", 0), ("episodes", 0), ("horizon", "8")])
def test_demo_plan_checks_its_values(field, value):
    with pytest.raises(ValueError, match=field):
        DemoPlan(**{**TINY, field: value}).check()


# runs the demo in a fresh process that kills itself (SIGKILL, as kill -9 or the OOM killer would) when
# MODULE's OBJECT is called for the AT-th time: python -c KILLED OUT PLAN MODULE OBJECT AT
KILLED = """
import importlib, json, os, signal, sys
out, plan, module, name, at = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
owner = importlib.import_module(module)
*parents, attr = name.split(".")
for parent in parents:
    owner = getattr(owner, parent)
real, calls = getattr(owner, attr), [0]
def dying(*args, **kwargs):
    calls[0] += 1
    if calls[0] == at:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
setattr(owner, attr, dying)
from genie2.demo import DemoPlan, run_demo
run_demo(out, DemoPlan(**plan), progress=False)
"""


def rows(run) -> list[int]:
    """The steps of a run's metrics.jsonl rows."""
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_demo_killed_at_any_moment_continues_when_run_again(tmp_path):
    """kill -9 mid-collect, mid-tokenizer (before its first checkpoint), mid-world model (after a checkpoint),
    mid-checkpoint write and mid-export: each rerun carries on, and the logs keep one row per step."""
    from genie2 import Genie2, Tokenizer

    out, plan = tmp_path / "demo", dict(TINY, min_tokenizer_steps=4, min_world_steps=12)  # world: checkpoint at 10

    def killed_at(module: str, name: str, at: int) -> dict:
        args = [sys.executable, "-c", KILLED, str(out), json.dumps(plan), module, name, str(at)]
        assert subprocess.run(args, timeout=300).returncode == -signal.SIGKILL
        return json.loads((out / "demo.json").read_text())

    record = killed_at("genie2.data.episode", "Episode.save", 2)
    assert "collect" not in record and len(list((out / "data" / "episodes").iterdir())) == 1
    record = killed_at("genie2.tokenizer.train", "FrameBatches.next", 3)
    assert record["collect"]["done"] and "done" not in record["tokenizer"]
    assert rows(out / "tokenizer") == [1, 2] and not list((out / "tokenizer").glob("checkpoints/step-*"))
    # killed at step 12: step 11's row is newer than checkpoint 10
    record = killed_at("genie2.train.world_model", "collate", 12)
    assert record["tokenizer"]["done"] and record["tokenize"]["done"] and "done" not in record["world"]
    assert rows(out / "tokenizer") == list(range(1, record["tokenizer"]["steps"] + 1))
    assert rows(out / "world") == list(range(1, 12))
    assert [p.name for p in (out / "world" / "checkpoints").glob("step-*")] == ["step-00000010"]
    killed_at("genie2.train.run", "save_state", 1)  # writing the checkpoint of step 12
    assert [p.name[:18] for p in (out / "world" / "checkpoints").glob(".tmp-*")] == [".tmp-step-00000012"]
    killed_at("shutil", "copyfile", 2)  # exporting the last checkpoint to the run folder
    assert (out / "world" / "checkpoints" / "step-00000012").is_dir() and not (out / "world" / "config.json").exists()
    record = killed_at("genie2.evaluate", "evaluate_world", 1)
    assert record["world"]["done"] and record["world"]["steps"] == 12 and "eval" not in record
    assert rows(out / "world") == list(range(1, 13))
    last = out / "world" / "checkpoints" / "step-00000012"
    for name in ("config.json", "model.safetensors", "dataset.json", "start-frames.safetensors", "training.json"):
        assert (out / "world" / name).read_bytes() == (last / name).read_bytes(), name
    assert Genie2.from_pretrained(out / "world").tokenizer is not None and Tokenizer.from_pretrained(out / "tokenizer")
