"""`genie2 demo`: every stage runs and reports, and a second run resumes instead of redoing."""

import json

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
    assert "| total |" in printed and f"genie2 play --checkpoint {out / 'world'}" in printed

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


@pytest.mark.parametrize("field, value", [("minutes", 0), ("episodes", 0), ("horizon", "8")])
def test_demo_plan_checks_its_values(field, value):
    with pytest.raises(ValueError, match=field):
        DemoPlan(**{**TINY, field: value}).check()
