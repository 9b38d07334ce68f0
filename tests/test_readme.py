"""The README's code examples run as tests."""

import builtins
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, monkeypatch, tmp_path):
    answers = iter(["7", "not an action", "300", "12"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(answers, "3"))
    monkeypatch.chdir(tmp_path)  # the interactive example saves ./last-frame.*
    exec(compile(BLOCKS[index], f"README block {index}", "exec"), {"__name__": "readme"})


def test_readme_commands_match_ci():
    ci = (README.parent / ".ci" / "run").read_text()
    test_command = re.findall(r"```bash\n(.*?)\n```", README.read_text(), flags=re.DOTALL)[1]
    assert test_command in ci


def test_the_eval_docs_python_example_runs(monkeypatch, tmp_path):
    (block,) = re.findall(r"```python\n(.*?)```", (README.parent / "docs" / "eval.md").read_text(), flags=re.DOTALL)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "docs/eval.md", "exec"), {"__name__": "docs"})
