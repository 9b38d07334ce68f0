"""The JSON every benchmark writes: its options, the machine, and its rows."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from genie2.data.episode import atomic_write


def write_report(path: str | Path, args, rows: list[dict], **extra) -> Path:
    """Write the options (`args`, an argparse namespace), the machine and `rows` to `path`
    (atomically), and say where."""
    report = dict(config=vars(args), machine=platform.platform(), cpus=os.cpu_count(), **extra, rows=rows)
    path = Path(path)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    print(f"wrote {path}")
    return path
