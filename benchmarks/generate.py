"""Generation speed: cached (our decoding path) vs uncached (the reference's way: the whole
transformer over the whole history for every sampled token), then raster decoding against the
parallel mode at each number of passes K. Prints two tables, writes JSON.

    python benchmarks/generate.py                       # the issue's configuration, on CPU
    python benchmarks/generate.py --sides 8 16 --frames 16 --modes-only   # raster vs parallel only
    python benchmarks/generate.py --device cuda --out benchmarks/results/generate-cuda.json
    python benchmarks/generate.py --profile 8           # where the time of one 8x8 frame goes
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time
import warnings

import torch
from report import write_report

from genie2 import Genie2, WorldModelSession, gumbel_sample, min_p_filter
from genie2.model.config import DEFAULT_CONTEXT_FRAMES


def build(args, decoding: str = "raster", precision: str = "float32") -> Genie2:
    """The benchmark model: dim 256, depth 6, 8 heads (the issue's configuration), in a decoding mode, its
    weights (and so its cache) in float32 or bfloat16, or its linear layers int8 (dynamic quantization)."""
    torch.manual_seed(0)
    model = Genie2(
        decoding=decoding,
        dim=args.dim,
        depth=args.depth,
        heads=args.heads,
        dim_latent=args.dim_latent,
        num_actions=8,
        vq_codebook_size=args.codebook_size,
        latent_channel_first=True,
        max_context_frames=args.context or None,  # 0: unbounded, like the uncached reference
    )
    model = model.to(args.device).eval()
    if precision == "bfloat16":
        return model.to(torch.bfloat16)
    if precision == "int8":
        with warnings.catch_warnings():  # torch.ao's quantization is deprecated in favour of torchao
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model


@torch.no_grad()
def uncached_rollout(model: Genie2, codes: torch.Tensor, actions: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Sample like the reference: a full forward over all frames so far for every token."""
    b, _, h, w = codes.shape
    for frame in range(1, num_frames + 1):
        current = torch.zeros(b, 1, h, w, dtype=torch.long, device=codes.device)
        codes = torch.cat((codes, current), dim=1)
        for index in range(h * w):
            logits = model(state_codes=codes, actions=actions[:, : frame + 1], return_loss=False)
            logits = min_p_filter(logits[:, frame * h * w + index], 0.1)
            codes[:, frame].view(b, -1)[:, index] = gumbel_sample(logits, 0.9, keepdim=False)
    return codes


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(fn, repeats: int, args, warmup: bool = True) -> float:
    """Median seconds of `repeats` runs, after one warm-up run (which also compiles) unless told otherwise."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        sync(args.device)
        start = time.perf_counter()
        fn()
        sync(args.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cached_rollout(model: Genie2, image, actions, compile: bool, decode_steps: int | None = None) -> int:
    """Our decoding path (a session over the model's window, as players use it); returns the
    cache's bytes at the end."""
    session = WorldModelSession(model, image, action=int(actions[0, 0]), compile=compile, decode_steps=decode_steps)
    for action in actions[0, 1:].tolist():
        session.step(action)
    return session.rollout.cache.nbytes()


def profile(args) -> None:
    """Print torch.profiler's table for one compiled frame at --profile SIDE (after warm-up)."""
    from torch.profiler import profile as torch_profile

    model, side = build(args), args.profile
    image = torch.randn(args.dim_latent, side, side, device=args.device)
    session = WorldModelSession(model, image, action=0, compile=True)
    for _ in range(args.context or 16):  # fill the window
        session.step(1)
    with torch_profile() as prof:
        session.step(2)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def run(args) -> list[dict]:
    model = build(args)
    context = None if args.context == 0 else args.context
    rows = []
    for side in args.sides:
        image = torch.randn(args.dim_latent, side, side, device=args.device)
        _, prompt_codes, _ = model.encode_state(image[None, :, None])
        for frames in args.frames:
            actions = torch.randint(0, 8, (1, frames + 1), device=args.device)
            tokens = frames * side * side
            row = dict(latent=f"{side}x{side}", frames=frames, tokens=tokens, context=context)
            for name, compile in (("eager", False), ("compiled", True)):
                if args.device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                seconds = measure(lambda: cached_rollout(model, image, actions, compile), args.repeats, args)
                row[f"{name}_s"] = seconds
                row[f"{name}_frames_per_s"] = frames / seconds
                row[f"{name}_tokens_per_s"] = tokens / seconds
            row["cache_mib"] = cached_rollout(model, image, actions, False) / 2**20
            row["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else None
            row["uncached_s"] = row["speedup_eager"] = row["speedup_compiled"] = None
            if tokens <= args.max_uncached_tokens:
                uncached = measure(
                    lambda: uncached_rollout(model, prompt_codes, actions, frames), args.uncached_repeats, args, False
                )
                row.update(uncached_s=uncached, uncached_frames_per_s=frames / uncached)
                row.update(speedup_eager=uncached / row["eager_s"], speedup_compiled=uncached / row["compiled_s"])
            rows.append(row)
            print_row(row)
    return rows


def run_modes(args) -> list[dict]:
    """Raster decoding against the parallel mode at each K, compiled, in each precision, on the same
    weights' shapes (untrained: speed does not depend on the weights), `--frames`[-1] frames per
    rollout; "x raster" is over the first precision's raster decoding of the same latent size."""
    frames, rows, raster = args.frames[-1], [], {}
    print(f"{'precision':>9} {'mode':>8} {'K':>3} {'latent':>6} {'compiled f/s':>12} {'tokens/s':>9} {'x raster':>8}")
    for precision in args.precisions:
        models = {mode: build(args, mode, precision) for mode in ("raster", "parallel")}
        for side in args.sides:
            image = torch.randn(args.dim_latent, side, side, device=args.device).to(models["raster"].dtype)
            actions = torch.randint(0, 8, (1, frames + 1), device=args.device)
            for mode, steps in [("raster", None)] + [("parallel", k) for k in args.decode_steps]:
                model = models[mode]
                seconds = measure(lambda: cached_rollout(model, image, actions, True, steps), args.repeats, args)
                raster.setdefault(side, seconds)
                row = dict(precision=precision, mode=mode, decode_steps=steps, latent=f"{side}x{side}", frames=frames)
                row.update(compiled_s=seconds, frames_per_s=frames / seconds, tokens_per_s=frames * side**2 / seconds)
                passes = steps + 1 if steps else side * side + 1  # K passes and one that caches; a step a token
                row.update(speedup_over_raster=raster[side] / seconds, passes_per_frame=passes)
                rows.append(row)
                print(
                    f"{precision:>9} {mode:>8} {steps or '-':>3} {row['latent']:>6} {row['frames_per_s']:>12.2f} "
                    f"{row['tokens_per_s']:>9.0f} {row['speedup_over_raster']:>7.1f}x"
                )
    return rows


HEADER = (
    f"{'latent':>6} {'frames':>6} {'eager f/s':>10} {'compiled f/s':>12} {'tokens/s':>9} "
    f"{'uncached f/s':>12} {'speedup':>8} {'compiled':>9} {'cache MiB':>9}"
)


def print_row(row: dict) -> None:
    """One line of the table: frames/s eager and compiled, and speedups over the uncached path."""
    uncached = f"{row['uncached_frames_per_s']:>12.2f}" if row["uncached_s"] else f"{'skipped':>12}"
    eager_x = f"{row['speedup_eager']:>7.1f}x" if row["uncached_s"] else f"{'-':>8}"
    compiled_x = f"{row['speedup_compiled']:>8.1f}x" if row["uncached_s"] else f"{'-':>9}"
    print(
        f"{row['latent']:>6} {row['frames']:>6} {row['eager_frames_per_s']:>10.2f} "
        f"{row['compiled_frames_per_s']:>12.2f} {row['compiled_tokens_per_s']:>9.0f} {uncached} "
        f"{eager_x} {compiled_x} {row['cache_mib']:>9.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="torch device to run on (cpu, cuda)")
    parser.add_argument("--sides", type=int, nargs="+", default=[4, 8], help="latent map side lengths")
    parser.add_argument("--frames", type=int, nargs="+", default=[4, 16, 64], help="rollout lengths in frames")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cached measurement (median)")
    parser.add_argument("--uncached-repeats", type=int, default=1, help="timed runs per uncached measurement")
    parser.add_argument(
        "--max-uncached-tokens",
        type=int,
        default=1024,
        help="skip the uncached baseline above this many generated tokens (it is quadratic)",
    )
    parser.add_argument(
        "--context",
        type=int,
        default=DEFAULT_CONTEXT_FRAMES,
        help="max_context_frames of the cached path (0: unbounded, like the uncached reference)",
    )
    parser.add_argument("--dim", type=int, default=256, help="model width")
    parser.add_argument("--depth", type=int, default=6, help="transformer layers")
    parser.add_argument("--heads", type=int, default=8, help="attention heads")
    parser.add_argument("--dim-latent", type=int, default=32, help="latent (codebook vector) width")
    parser.add_argument("--codebook-size", type=int, default=4096, help="codebook entries")
    parser.add_argument("--profile", type=int, default=None, help="only profile one compiled frame of SIDE x SIDE")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--decode-steps", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="parallel-mode passes K to measure"
    )
    parser.add_argument("--modes-only", action="store_true", help="only the raster vs parallel table")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=["float32", "bfloat16", "int8"],
        default=["float32"],
        help="weights of the modes table: float32, bfloat16 (weights and cache), int8 (dynamic, linear layers)",
    )
    parser.add_argument("--out", default="benchmarks/results/generate-cpu.json", help="where to write the JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.profile:
        profile(args)
        return
    params = sum(p.numel() for p in build(args).parameters())
    print(
        f"genie2 generation, {params / 1e6:.1f}M parameters, device {args.device}, "
        f"{torch.get_num_threads()} CPU threads, batch 1"
    )
    rows = []
    if not args.modes_only:
        print(HEADER)
        rows = run(args)
    modes = run_modes(args)
    extra = dict(
        parameters=params,
        torch=torch.__version__,
        processor=platform.processor(),
        threads=torch.get_num_threads(),
        rss_peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    if args.device.startswith("cuda"):
        extra["gpu"] = torch.cuda.get_device_name()
    write_report(args.out, args, rows, modes=modes, **extra)


if __name__ == "__main__":
    main()
