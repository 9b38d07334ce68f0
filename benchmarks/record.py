"""Keep what a genie2 command wrote as a benchmark result: runs COMMAND, then stores the JSON file it
wrote (--take) as the one row of --out, with the command line and the commit like every benchmark.
For results that come from the pipeline's own verbs (demo.json, an eval report.json).

    python benchmarks/record.py --take demo/demo.json --out benchmarks/results/demo-cpu.json -- genie2 demo --out demo
    python benchmarks/record.py --take eval/report.json --out benchmarks/results/pretrained-eval-heldout.json -- \\
        genie2 eval --checkpoint src/genie2/pretrained/minigrid-doorkey --data heldout --split all --episodes 32 \\
        --horizon 16 --out eval
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from report import write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--take", required=True, help="the JSON file COMMAND writes")
    parser.add_argument("--out", required=True, help="where the result goes (benchmarks/results/NAME.json)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    args = parser.parse_args()
    args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not args.command:
        parser.error("give the command to run after --")
    take, start = Path(args.take), time.time()  # (mtimes may be a second coarse)
    done = subprocess.run(args.command)
    if done.returncode:
        sys.exit(f"record: {args.command[0]} exited with {done.returncode}; nothing recorded")
    if not take.is_file() or take.stat().st_mtime < start - 2:
        sys.exit(f"record: the command did not write {take} (a finished run left from before?); nothing recorded")
    write_report(args.out, args, [json.loads(take.read_text())], seconds=round(time.time() - start, 1))


if __name__ == "__main__":
    main()
