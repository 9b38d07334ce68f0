"""A training run's validation curve as a result: the rows of RUN/metrics.jsonl that carry validation
figures (every --eval-every steps), printed as a table and kept with the command, so a model card can
quote how a run's held-out losses moved (and whether they had stopped) without the run folder.

    python benchmarks/curve.py --run /work/runs/c19/world-moves --out benchmarks/results/crafter-world-curve.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from report import write_report


def validation_rows(metrics: Path) -> list[dict]:
    """The rows of a metrics.jsonl with any `val_` figure: step, the validation figures, the train loss."""
    rows = []
    for line in metrics.read_text().splitlines():
        row = json.loads(line)
        val = {key: value for key, value in row.items() if key.startswith("val_")}
        if val:
            rows.append(dict(step=row["step"], loss=row.get("loss"), lr=row.get("lr"), **val))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a `genie2 train` or `genie2 train-tokenizer` run folder")
    parser.add_argument("--out", required=True, help="where the result goes (benchmarks/results/NAME.json)")
    args = parser.parse_args()
    metrics = Path(args.run) / "metrics.jsonl"
    if not metrics.is_file():
        parser.error(f"{metrics} does not exist: give the folder a training run wrote (--out of genie2 train)")
    rows = validation_rows(metrics)
    if not rows:
        parser.error(f"{metrics} has no validation rows: the run evaluated nothing (--eval-every)")
    keys = [key for key in rows[0] if key != "step"]
    print("step   " + "  ".join(f"{key:>16}" for key in keys))
    for row in rows:
        print(f"{row['step']:<6} " + "  ".join(f"{row.get(key, float('nan')):>16.4g}" for key in keys))
    write_report(args.out, args, rows)


if __name__ == "__main__":
    main()
