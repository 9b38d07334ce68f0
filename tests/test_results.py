"""Benchmark results say where they came from: every file under benchmarks/results names the command
that wrote it and the commit it measured, every result the docs cite exists, and every benchmark
writes through benchmarks/report.py (which records both)."""

import json
import re
import shlex
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CITED = re.compile(r"benchmarks/results/[\w./-]*\w")  # ends on a word character, not the sentence's full stop
SHA = re.compile(r"[0-9a-f]{40}")


def reports() -> list:
    """A pytest.param(name, line) for every report under benchmarks/results: a .json file (line None),
    or a line of a .jsonl file."""
    found = [pytest.param(path.name, None, id=path.name) for path in sorted(RESULTS.glob("*.json"))]
    for path in sorted(RESULTS.glob("*.jsonl")):
        lines = enumerate(path.read_text().splitlines(), 1)
        found += [pytest.param(path.name, n, id=f"{path.name}:{n}") for n, line in lines if line.strip()]
    return found


def provenance_problems(report: dict) -> list[str]:
    """What a report lacks to say where it came from: the command that wrote it (running a script of
    this repository) and the commit it measured."""
    missing = [key for key in ("command", "commit") if key not in report]
    if missing:
        return [f"no {' and no '.join(missing)}: rerun the command that writes it (benchmarks/report.py records both)"]
    problems = [] if SHA.fullmatch(str(report["commit"])) else [f"commit {report['commit']!r} is not a git commit"]
    scripts = [word for word in shlex.split(report["command"]) if word.endswith(".py")]
    if not scripts or not (ROOT / scripts[0]).is_file():
        problems.append(f"command {report['command']!r} runs no script of this repository")
    return problems


@pytest.mark.parametrize(("name", "line"), reports())
def test_every_result_names_the_command_and_the_commit_that_wrote_it(name, line):
    text = (RESULTS / name).read_text()
    report = json.loads(text if line is None else text.splitlines()[line - 1])
    where = name if line is None else f"{name} line {line}"
    assert not (problems := provenance_problems(report)), f"{where}: {problems}"


def test_every_result_the_docs_cite_exists():
    cited = {(doc.name, path) for doc in DOCS for path in CITED.findall(doc.read_text())}
    assert cited, "the docs cite no results: is the pattern wrong?"
    missing = sorted(f"{doc} cites {path}" for doc, path in cited if not (ROOT / path).is_file())
    assert not missing, missing


def test_every_benchmark_writes_through_report():
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        text = path.read_text()
        if path.name == "report.py":
            continue
        assert "from report import write_report" in text, f"{path.name} does not write through report.write_report"
        for writer in ("write_text(", ".write(", "json.dump(", "atomic_write("):
            assert writer not in text, f"{path.name} writes a file itself ({writer}); use report.write_report"


def test_the_report_records_command_commit_and_dirty_and_appends_to_jsonl(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from report import write_report

    monkeypatch.setattr(sys, "argv", [str(ROOT / "benchmarks" / "collect.py"), "--note", "two words"])
    monkeypatch.delenv("PYTHONPATH", raising=False)
    write_report(tmp_path / "one.json", Namespace(note="two words"), [{"x": 1}], extra=2)
    report = json.loads((tmp_path / "one.json").read_text())
    assert report["command"] == "python benchmarks/collect.py --note 'two words'"  # relative to the repo, quoted
    assert report["config"] == {"note": "two words"} and report["rows"] == [{"x": 1}] and report["extra"] == 2
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:  # a checkout: its commit, and whether its code differs
        assert report["commit"] == head.stdout.strip() and isinstance(report["dirty"], bool)
    else:
        assert report["commit"] == "unknown" and report["dirty"] is None
    if head.returncode == 0:
        assert provenance_problems(report) == []  # what the results test asks for
    assert provenance_problems({"config": {}, "rows": []})  # a report from before provenance fails it
    assert provenance_problems(dict(report, command="python benchmarks/gone.py"))
    for n in (1, 2):
        write_report(tmp_path / "runs.jsonl", Namespace(run=n), [{"x": n}])
    lines = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [line["config"]["run"] for line in lines] == [1, 2] and all("commit" in line for line in lines)


def test_the_commit_is_unknown_without_git(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import report

    monkeypatch.setenv("PATH", str(tmp_path))  # no git on it
    assert report.code_version()["commit"] == "unknown"
