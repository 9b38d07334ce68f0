"""Session frame rate of the generation benchmark's model (dim 256, depth 6, 8x8 codes, a
16-frame window), eager and compiled: the median of 3 timed runs of 8 frames after one
warm-up. Small enough to run the code before and after a change back to back, alternating:

    for i in 1 2 3; do
        PYTHONPATH=OLD/src python benchmarks/session_speed.py --label before
        python benchmarks/session_speed.py --label after
    done

Each run appends one JSON line (benchmarks/report.py's report) to --out and prints its row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from report import write_report

from genie2 import Genie2, WorldModelSession


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True, help="what this run measures (before, after, ...)")
    parser.add_argument(
        "--out", default="benchmarks/results/session-speed-cpu.jsonl", help="JSON lines to append to (.json: write)"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    model = Genie2(
        dim=256, depth=6, heads=8, dim_latent=32, num_actions=8, vq_codebook_size=4096, latent_channel_first=True
    ).eval()
    image = torch.randn(32, 8, 8)
    row = dict(label=args.label, torch=torch.__version__, threads=torch.get_num_threads())
    for compile in (False, True):
        rates = []
        for run in range(4):
            session = WorldModelSession(model, image, action=0, compile=compile, max_context_frames=16)
            start = time.perf_counter()
            for i in range(8):
                session.step(i % 8)
            if run:  # the first run warms up (and compiles)
                rates.append(8 / (time.perf_counter() - start))
        row["compiled_frames_per_s" if compile else "eager_frames_per_s"] = statistics.median(rates)
    print(json.dumps(row))
    write_report(args.out, args, [row])


if __name__ == "__main__":
    main()
