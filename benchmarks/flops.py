"""Work per dreamed frame: the floating-point operations (torch's FlopCounterMode: matmuls and
attention, 2 per multiply-add) one frame costs benchmarks/generate.py's model, raster and parallel at
each K, beside the frames/s that generate.py measured, giving the arithmetic rate each reached.
A raster frame reads the weights h*w + 1 times for one token each; a parallel pass reads them once
for all h*w + 1 tokens, so the same work is bound by arithmetic, not memory. Prints a table, writes JSON.

    python benchmarks/flops.py --speeds benchmarks/results/generate-modes-cpu.json
"""

from __future__ import annotations

import argparse
import json

import torch
from generate import build
from report import write_report
from torch.utils.flop_counter import FlopCounterMode

from genie2.model.session import WorldModelSession


def frame_flops(args, side: int, decoding: str, k: int | None) -> float:
    """FLOPs of one frame once the window is full (its later frames cost the same)."""
    model = build(args, decoding)
    codes = torch.randint(0, args.codebook_size, (1, side, side))
    session = WorldModelSession(model, codes=codes, temperature=0.0, max_context_frames=args.context, decode_steps=k)
    for action in range(args.context + 1):  # fill the window
        session.step(action % 8)
    with FlopCounterMode(display=False) as counter:
        session.step(1)
    return counter.get_total_flops()


def measured(path: str | None) -> dict:
    """float32 frames/s by (latent, mode, K) from generate.py's JSON, if given."""
    if not path:
        return {}
    with open(path) as f:
        rows = json.load(f)["modes"]
    rows = [r for r in rows if r["precision"] == "float32"]
    return {(r["latent"], r["mode"], r["decode_steps"]): r["frames_per_s"] for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=int, nargs="+", default=[8, 16], help="latent map side lengths")
    parser.add_argument("--decode-steps", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="K of parallel rows")
    parser.add_argument("--speeds", help="generate.py's JSON: adds its float32 frames/s and the GFLOP/s they mean")
    parser.add_argument("--dim", type=int, default=256, help="model width (as generate.py)")
    parser.add_argument("--depth", type=int, default=6, help="transformer layers")
    parser.add_argument("--heads", type=int, default=8, help="attention heads")
    parser.add_argument("--dim-latent", type=int, default=32, help="latent (codebook vector) width")
    parser.add_argument("--codebook-size", type=int, default=4096, help="codebook entries")
    parser.add_argument("--context", type=int, default=16, help="frames in view")
    parser.add_argument("--out", default="benchmarks/results/flops-cpu.json", help="where to write the JSON")
    args = parser.parse_args()
    args.device = "cpu"
    speeds, rows = measured(args.speeds), []
    print(f"{'latent':>6} {'mode':>8} {'K':>3} {'GFLOP/frame':>11} {'frames/s':>9} {'GFLOP/s':>8}")
    for side in args.sides:
        for decoding, k in [("raster", None)] + [("parallel", k) for k in args.decode_steps]:
            latent = f"{side}x{side}"
            gflop = frame_flops(args, side, decoding, k) / 1e9
            fps = speeds.get((latent, decoding, k))
            rate = gflop * fps if fps else None
            rows.append(dict(latent=latent, mode=decoding, decode_steps=k, gflop_per_frame=gflop, frames_per_s=fps,
                             gflop_per_s=rate))  # fmt: skip
            shown = f"{fps:9.2f} {rate:8.1f}" if fps else f"{'-':>9} {'-':>8}"
            print(f"{latent:>6} {decoding:>8} {k or '-':>3} {gflop:11.2f} {shown}", flush=True)
    write_report(args.out, args, rows)


if __name__ == "__main__":
    main()
