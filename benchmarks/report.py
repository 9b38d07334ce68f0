"""The JSON every benchmark writes: the command that ran, the commit of the code it measured, its
options, the machine and its rows. A path ending in `.jsonl` gets the report appended as one line
(for runs compared back to back, such as the code before and after a change)."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from genie2.data.episode import atomic_write

REPO = Path(__file__).resolve().parents[1]
# not code: rewriting results or docs between two runs does not make the second run's code differ
# what a benchmark runs: the package, the benchmarks and the project file (not the results, docs or tests)
CODE = ("src", "benchmarks", "pyproject.toml", ":(exclude)benchmarks/results", ":(exclude,glob)**/*.md")


def command_line() -> str:
    """The command running now, as typed at the repository root (`python benchmarks/NAME.py ...`),
    led by PYTHONPATH when it is set (a run of another checkout's code)."""
    script = Path(sys.argv[0]).resolve()
    if script.is_relative_to(REPO):
        script = script.relative_to(REPO)
    words = shlex.join(["python", str(script), *sys.argv[1:]])
    path = os.environ.get("PYTHONPATH")
    return f"PYTHONPATH={shlex.quote(path)} {words}" if path else words


def git(*args: str, cwd: Path) -> str:
    """The output of a git command (raises OSError or SubprocessError if git or the checkout is missing)."""
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30).stdout


def code_version() -> dict:
    """The commit of the checkout whose genie2 is imported (the code measured: PYTHONPATH=OTHER/src
    measures OTHER), whether its tracked code differs from that commit, and where genie2 came from;
    commit "unknown" (dirty None) without git or outside a checkout, as for an installed wheel."""
    import genie2

    source = Path(genie2.__file__).resolve().parent
    try:
        top, commit = git("rev-parse", "--show-toplevel", "HEAD", cwd=source).splitlines()
        if Path(top).resolve() / "src" / "genie2" != source:  # e.g. site-packages inside some other repository
            raise subprocess.SubprocessError(f"{source} is not the genie2 of the checkout {top}")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", *CODE, cwd=Path(top)).strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return dict(commit="unknown", dirty=None, genie2=str(source))
    return dict(commit=commit, dirty=dirty, genie2=str(source))


def write_report(path: str | Path, args, rows: list[dict], **extra) -> Path:
    """Write the command, the commit, the options (`args`, an argparse namespace), the machine and
    `rows` to `path` (atomically; appended as one line to a .jsonl file), and say where."""
    report = dict(command=command_line(), **code_version(), config=vars(args), machine=platform.platform())
    report.update(cpus=os.cpu_count(), **extra, rows=rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        with path.open("a") as log:
            log.write(json.dumps(report) + "\n")
    else:
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    print(f"wrote {path}")
    return path
