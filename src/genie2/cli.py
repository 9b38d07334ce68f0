"""The `genie2` command: one verb per pipeline stage (collect -> tokenizer -> train -> eval -> play)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from genie2 import __version__
from genie2.data.envs import DEFAULT_ENV
from genie2.errors import InputError
from genie2.flags import DECODE_STEPS, ENV, SHARED, WORLD, add_shared, finite_float, positive_int
from genie2.lam.cli import VERBS as LAM_VERBS

if TYPE_CHECKING:
    import numpy as np

    from genie2.play.protocol import PlayerConfig
    from genie2.world import World


def collect(args) -> None:
    """genie2 collect: record episodes from an environment."""
    from genie2.data.collect import collect as run
    from genie2.data.episode import count

    knobs = "env episodes steps seed policy frame_size workers".split()  # run's arguments after the folder, in order
    info = run(args.out, *(getattr(args, knob) for knob in knobs), progress=not args.quiet)
    print(f"{args.out}: {count(info.num_episodes, 'episode')}, {count(info.num_frames, 'frame')} of {info.env_id}")


def import_video(args) -> None:
    """genie2 import-video: add a recording and its action log to a dataset."""
    from genie2.data.episode import count
    from genie2.data.video import import_video as run

    names = args.action_names.split(",") if args.action_names else None
    info = run(args.video, args.actions, args.out, args.frame_size, args.num_actions, names)
    print(f"{args.out}: {count(info.num_episodes, 'episode')}, {count(info.num_frames, 'frame')}")


def train_tokenizer(args) -> None:
    """genie2 train-tokenizer: train the frame tokenizer on a dataset's frames (on several GPUs under
    `accelerate launch`)."""
    from genie2.tokenizer.model import TokenizerConfig
    from genie2.tokenizer.train import TokenizerTraining
    from genie2.tokenizer.train import train_tokenizer as run

    overrides = dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr, rare_share=args.rare_share)
    config = TokenizerTraining.preset(args.preset, **overrides)
    model = {k: v for k, v in dict(codebook_size=args.codebook_size, quantizer=args.quantizer).items() if v is not None}
    if model:
        config.model = TokenizerConfig(**{**config.model.__dict__, **model})
    result = run(
        args.data, args.out, config, args.resume, not args.quiet, args.skip_corrupt, args.device, steps=args.steps
    )
    print(
        f"{args.out}: validation PSNR {result['psnr']:.2f} dB, codebook usage {result['usage']:.0%}, "
        f"perplexity {result['perplexity']:.1f}, encode+decode {result['frames_per_s']:.0f} frames/s"
    )


def tokenize(args) -> None:
    """genie2 tokenize: pre-encode a dataset's frames to codes with a trained tokenizer."""
    from genie2.data.codes import encode_dataset

    out = encode_dataset(
        args.data, args.tokenizer, args.out, args.batch_size, args.skip_corrupt, not args.quiet, device=args.device
    )
    print(f"codes written to {out}")


def train(args) -> None:
    """genie2 train: train the world model on a dataset's codes, encoding the missing ones first (also under
    `accelerate launch`)."""
    from genie2.data.codes import default_codes_dir
    from genie2.train.world_model import Training
    from genie2.train.world_model import train as run

    knobs = "steps batch_size grad_accum clip_frames lr seed checkpoint_every eval_every ema optimizer".split()
    config = Training.preset(args.preset, **{knob: getattr(args, knob) for knob in knobs})  # the flags of its fields
    model = {key: getattr(args, key) for key in ("decoding", "decode_steps", "raster", "learn_rewards")}  # over preset
    config.model = {**config.model, **{key: value for key, value in model.items() if value is not None}}
    codes = args.codes or str(default_codes_dir(args.data, args.tokenizer))
    resumable = (args.resume, not args.quiet, args.skip_corrupt)
    if (args.actions == "latent") != bool(args.lam):
        raise InputError("--actions latent and --lam go together: the LAM whose latent actions to train on")
    out = run(
        args.data,
        codes,
        args.tokenizer,
        args.out,
        config,
        *resumable,
        cpu=args.cpu or None,
        steps=args.steps,
        lam=args.lam if args.actions == "latent" else None,
    )
    print(f"world model saved in {out} (Genie2.from_pretrained)")


def evaluate(args) -> None:
    """genie2 eval: PSNR/SSIM per horizon step, the tokenizer ceiling and delta PSNR on held-out episodes."""
    from genie2.evaluate import evaluate_world, write_report
    from genie2.world import load, world_folder

    world = load(args.checkpoint)
    if args.lam and world.action_map is None:  # before the rollouts, not after
        raise InputError(
            "--lam scores a world of latent actions with action-map.json beside it; this has none "
            "(genie2 map-actions --lam LAM --data LABELLED --out WORLD)"
        )
    # evaluate_world's keywords, each read from the flag of its name
    knobs = "split episodes horizon prompt_frames seed skip_corrupt decode_steps raster cond_scale".split()
    report = evaluate_world(world, args.data, progress=not args.quiet, **{knob: getattr(args, knob) for knob in knobs})
    if args.lam:  # how the LAM's actions, through the world's map, agree with the data's
        from genie2.lam.mapping import world_agreement
        from genie2.lam.model import lam_folder

        found = world_agreement(lam_folder(args.lam), world.action_map, args.data, args.split, args.episodes)
        report["latent_agreement"] = found
        print(f"latent actions mapped to the true one on {found['mapped_accuracy']:.1%} of changed steps")
    write_report(report, args.out, world_folder(args.checkpoint), {k: v for k, v in vars(args).items() if k != "fn"})
    m = report["metrics"]
    print(
        f"PSNR step 1 {m['psnr']['mean'][0]:.2f} dB, step {args.horizon} {m['psnr']['mean'][-1]:.2f} dB "
        f"(tokenizer ceiling {m['tokenizer_psnr']['overall']:.2f} dB, copying the last real frame "
        f"{m['psnr_copy']['mean'][-1]:.2f} dB at step {args.horizon}); delta PSNR at step {args.horizon} "
        f"{m['delta_psnr']['mean'][-1]:.2f} dB; {report['frames_per_s']:.1f} frames/s; report in {args.out}"
        + "".join(
            f"; {k.replace('_', ' ')} {v:.2f}" for k, v in (report["outcomes"] or {}).items() if "frames" not in k
        )
    )


def demo(args) -> None:
    """genie2 demo: the whole pipeline on an env (default MiniGrid DoorKey) within --minutes:
    collect -> train tokenizer -> tokenize -> train world model -> eval, then the command that
    plays the result. Run it again to resume from the last finished stage."""
    from genie2.demo import DemoPlan, run_demo

    plan = DemoPlan.for_env(args.env, minutes=args.minutes, episodes=args.episodes, workers=args.workers)
    run_demo(args.out, plan, progress=not args.quiet)


def play(args) -> None:
    """genie2 play: step inside a world model, in the browser (default: a local server streams
    each dreamed frame to a page) or in this terminal (--terminal). Without --world it plays
    the pretrained MiniGrid world that ships with genie2; --world crafter plays the Crafter one."""
    from genie2.world import load

    kwargs = {knob: getattr(args, knob) for knob in ("temperature", "cond_scale", "decode_steps", "raster")}
    config = None if args.terminal else player_config(args, kwargs)  # settings are checked before the world loads
    world = load(args.checkpoint)
    names, frames = play_start(args, world)
    if args.terminal:
        from genie2.play.terminal import play_terminal

        colour = {"auto": None, "always": True, "never": False}[args.colour]
        play_terminal(world, frames[args.start], args.save_path, colour, names, compile=bool(args.compile), **kwargs)
        return
    from genie2.play.app import create_app
    from genie2.play.origins import loopback_hosts
    from genie2.play.serve import serve

    app = create_app(world, frames, names, config, hosts=loopback_hosts(args.host))
    print(f"genie2 play: open http://{args.host}:{args.port}/ in a browser (Ctrl-C stops)", flush=True)
    serve(app, args.host, args.port, warm=config.compile)  # the page says it is warming up meanwhile


def player_config(args: argparse.Namespace, sampling: dict) -> PlayerConfig:
    """The browser player's PlayerConfig from the play options, once --port is known to be free."""
    from genie2.play.protocol import PlayerConfig
    from genie2.play.serve import check_port

    check_port(args.host, args.port)

    return PlayerConfig(
        **sampling,
        max_sessions=args.max_sessions,
        compile=args.compile is not False,
        idle_timeout=args.idle_timeout,
        allow_origins=args.allow_origin,
    )


def play_start(args: argparse.Namespace, world: World) -> tuple[list[str] | None, np.ndarray]:
    """The action names and start frames to play from: --data's, else the world's; checks --start."""
    from genie2.data.clips import start_frames
    from genie2.data.episode import DatasetInfo

    names, frames = world.action_names, world.start_frames
    if args.data:
        info, num_actions = DatasetInfo.load(args.data), world.model.num_actions
        if info.num_actions != num_actions:  # as eval refuses it: its names and frames belong to another world
            raise InputError(f"the model has {num_actions} actions but {args.data} has {info.num_actions}")
        names, frames = info.action_names, start_frames(args.data, count=12)
    if frames is None:
        where = args.checkpoint or "the pretrained world"
        raise InputError(f"{where} holds no start frames: pass --data with the dataset it was trained on")
    if not 0 <= args.start < len(frames):
        raise InputError(f"--start must be in [0, {len(frames)}): there are {len(frames)} start frames")
    return names, frames


def add_collect(verbs: argparse._SubParsersAction) -> None:
    """The arguments of `genie2 collect`."""
    p = verbs.add_parser("collect", help="record (frame, action) episodes from an environment")
    p.description = collect.__doc__
    p.add_argument("--env", default=DEFAULT_ENV, help=ENV)
    p.add_argument("--episodes", type=int, default=100, help="episodes to have in the dataset (default 100)")
    p.add_argument("--out", required=True, help="dataset folder; run again with the same arguments to resume")
    p.add_argument("--steps", type=int, default=500, help="at most this many actions per episode (default 500)")
    p.add_argument("--seed", type=int, default=0, help="episode i uses env seed SEED + i (default 0)")
    p.add_argument(
        "--policy",
        default="sticky",
        help="'sticky' (random, repeated; default), 'random', 'moves' (random afresh, half of them moves: Crafter's "
        "recipe), or 'module:function' returning a policy",
    )
    p.add_argument("--frame-size", type=int, default=None, help="frames are resized to this square size (default 64)")
    p.add_argument("--workers", type=int, default=1, help="processes collecting in parallel (default 1)")
    add_shared(p, "--quiet")
    p.set_defaults(fn=collect)


def add_import_video(verbs: argparse._SubParsersAction) -> None:
    """The arguments of `genie2 import-video`."""
    p = verbs.add_parser("import-video", help="turn a video and its action CSV into a dataset episode")
    p.description = import_video.__doc__
    p.add_argument("video", help="the video file (anything PyAV reads: mp4, webm, gif, ...)")
    csv = "CSV with an 'action' column, one row per frame (see docs); without it the steps carry no action, and "
    p.add_argument(
        "--actions", help=csv + "`genie2 train-lam` then `train --actions latent` learn them from the frames"
    )
    p.add_argument("--out", required=True, help="dataset folder (created, or appended to)")
    p.add_argument("--frame-size", type=int, default=64, help="frames are resized to this square size (default 64)")
    p.add_argument("--num-actions", type=int, default=None, help="size of the action space (default: largest id + 1)")
    p.add_argument("--action-names", default=None, help="comma-separated names of the actions, in id order")
    p.set_defaults(fn=import_video)


def add_train_tokenizer(verbs: argparse._SubParsersAction) -> None:
    """The arguments of `genie2 train-tokenizer`."""
    p = verbs.add_parser("train-tokenizer", help="train the frame tokenizer (VQ autoencoder) on a dataset")
    p.description = train_tokenizer.__doc__
    p.add_argument("--data", required=True, help="dataset folder (from genie2 collect or import-video)")
    p.add_argument("--out", required=True, help="run folder; it becomes the tokenizer checkpoint")
    p.add_argument(
        "--preset",
        default="cpu",
        help="tiny, cpu (default: the shipped MiniGrid recipe), crafter-cpu (the Crafter one) or gpu",
    )
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--batch-size", type=int, default=None, help="frames per step (default: the preset's)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the preset's)")
    p.add_argument("--codebook-size", type=int, default=None, help="VQ codebook entries (default: the preset's)")
    p.add_argument("--quantizer", choices=["vq", "fsq"], default=None, help="vq (default) or fsq")
    p.add_argument("--rare-share", type=float, default=None, help="batch share drawn so rare patches show often")
    add_shared(p, "--resume", "--skip-corrupt", "--device", "--quiet")
    p.set_defaults(fn=train_tokenizer)


def add_tokenize(verbs: argparse._SubParsersAction) -> None:
    """The arguments of `genie2 tokenize`."""
    p = verbs.add_parser("tokenize", help="pre-encode a dataset to codes with a trained tokenizer")
    p.description = tokenize.__doc__
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--tokenizer", required=True, help="tokenizer checkpoint folder (from train-tokenizer)")
    p.add_argument("--out", default=None, help="codes folder (default: DATA/codes/<tokenizer hash>)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="frames encoded at once (default 64)")
    add_shared(p, "--skip-corrupt", "--device", "--quiet")
    p.set_defaults(fn=tokenize)


def add_train(verbs: argparse._SubParsersAction) -> None:
    """The arguments of `genie2 train`."""
    p = verbs.add_parser("train", help="train the world model on a tokenized dataset")
    p.description = train.__doc__
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument(
        "--tokenizer",
        required=True,
        help="tokenizer checkpoint folder; codes of the dataset it has not encoded yet are encoded first, as "
        "`genie2 tokenize` would",
    )
    p.add_argument("--out", required=True, help="run folder; it becomes the world-model checkpoint")
    p.add_argument("--codes", default=None, help="codes folder (default: DATA/codes/<tokenizer hash>)")
    p.add_argument("--preset", default="cpu", help="tiny, cpu (default), crafter-cpu, gpu-small or gpu-base")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: preset; extends a --resume)")
    p.add_argument("--batch-size", type=int, default=None, help="clips per step over all processes (default: preset)")
    p.add_argument("--grad-accum", type=int, default=None, help="gradient accumulation steps (default 1)")
    p.add_argument("--clip-frames", type=int, default=None, help="frames per training clip (default: preset)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: preset)")
    p.add_argument("--seed", type=int, default=None, help="seed of initialisation and data order (default 0)")
    p.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (default: preset)")
    p.add_argument("--eval-every", type=int, default=None, help="steps between validation rollouts (default: preset)")
    p.add_argument("--ema", type=float, default=None, help="keep and export an EMA of the weights with this decay")
    sgd = "adamw (default) or sgd: plain SGD, whose step is linear in the gradient (tests compare runs with it)"
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default=None, help=sgd)
    decoding = "raster: one code after another (as the reference); parallel: MaskGIT, a frame's codes in passes"
    p.add_argument("--decoding", choices=["raster", "parallel"], help=f"{decoding} (default: the preset's, raster)")
    steps = f"{DECODE_STEPS}; saved as the model's own (default 8; eval and play may override it)"
    p.add_argument("--decode-steps", type=positive_int, metavar="K", help=steps)
    raster = "how a raster model fills a frame, saved as its own (default sequential; see genie2 play --help)"
    p.add_argument("--raster", choices=SHARED["--raster"]["choices"], help=raster)
    rewards = "also learn each frame's reward sign and episode end from the data (WorldEnv returns them)"
    p.add_argument("--learn-rewards", action="store_true", default=None, help=rewards)
    actions = "true: the episodes' own (default); latent: --lam's latent actions, learned without labels"
    p.add_argument("--actions", choices=["true", "latent"], default="true", help=actions)
    p.add_argument("--lam", default=None, help="with --actions latent: the LAM (from genie2 train-lam)")
    p.add_argument("--cpu", action="store_true", help="train on CPU even when a GPU is present")
    add_shared(p, "--resume", "--skip-corrupt", "--quiet")
    p.set_defaults(fn=train)


def add_evaluate(verbs: argparse._SubParsersAction) -> None:
    """The arguments of `genie2 eval`."""
    p = verbs.add_parser("eval", help="measure a world model on held-out episodes (report.json, plot, video)")
    p.description = evaluate.__doc__
    p.add_argument("--world", "--checkpoint", dest="checkpoint", required=True, help=WORLD)
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--out", required=True, help="report folder: report.json, psnr.png, rollouts.gif")
    p.add_argument("--split", default="val", choices=["train", "val", "all"], help="episodes to use (default val)")
    p.add_argument("--episodes", type=positive_int, default=16, help="episodes to roll out (default 16)")
    p.add_argument("--horizon", type=int, default=16, help="frames dreamed after the prompt (default 16)")
    p.add_argument("--prompt-frames", type=int, default=1, help="real frames given first (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random actions (default 0)")
    p.add_argument("--decode-steps", type=positive_int, metavar="K", help=f"{DECODE_STEPS} (default: the model's)")
    lam = (
        "a world of latent actions: also score how this LAM's actions agree with the data's (a shipped name or folder)"
    )
    p.add_argument("--lam", default=None, help=lam)
    add_shared(p, "--raster", "--cond-scale", "--skip-corrupt", "--quiet")
    p.set_defaults(fn=evaluate)


def add_demo(verbs: argparse._SubParsersAction) -> None:
    """The arguments of `genie2 demo`."""
    p = verbs.add_parser("demo", help="the whole pipeline in one command (MiniGrid: ~30 min on 2 CPU cores)")
    p.description = demo.__doc__
    p.add_argument("--out", default="genie2-demo", help="folder for every stage's output (default ./genie2-demo)")
    p.add_argument("--minutes", type=float, default=30.0, help="time budget; training stages fit it (default 30)")
    p.add_argument("--env", default=DEFAULT_ENV, help=f"{ENV}; crafter trains with the crafter-cpu presets")
    p.add_argument("--episodes", type=int, default=None, help="episodes to collect (default 300; crafter 200)")
    p.add_argument("--workers", type=int, default=2, help="processes collecting in parallel (default 2)")
    add_shared(p, "--quiet")
    p.set_defaults(fn=demo)


def add_play(verbs: argparse._SubParsersAction) -> None:
    """The arguments of `genie2 play`."""
    p = verbs.add_parser("play", help="play inside a world model, in the browser or the terminal")
    p.description = play.__doc__
    p.add_argument("--world", "--checkpoint", dest="checkpoint", help=f"{WORLD} (default minigrid)")
    p.add_argument("--data", help="dataset folder for the start frames and action names (default: the checkpoint's)")
    p.add_argument("--temperature", type=finite_float, default=0.0, help="sampling temperature (default 0: greedy)")
    steps = f"{DECODE_STEPS}; the page can change it (default: the model's; raster models ignore it)"
    p.add_argument("--decode-steps", type=positive_int, metavar="K", help=steps)
    add_shared(p, "--raster", "--cond-scale")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to serve on (default 8000)")
    p.add_argument("--max-sessions", type=int, default=4, help="browser tabs playing at once (default 4)")
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=300.0,
        help="close a tab's connection after this many seconds without a message, freeing its slot (default 300; "
        "a visible page pings, a hidden one reconnects when shown)",
    )
    p.add_argument(
        "--allow-origin",
        action="extend",
        default=[],
        type=lambda text: [origin.strip() for origin in text.split(",") if origin.strip()],
        metavar="ORIGIN",
        help="also let pages from this origin (like https://example.com) open the WebSocket; repeat it or separate "
        "origins with commas; * allows any page. By default only the server's own page may play",
    )
    p.add_argument("--terminal", action="store_true", help="play in this terminal instead of the browser")
    p.add_argument("--start", type=int, default=0, help="terminal: which start frame to begin from (default 0)")
    p.add_argument("--save-path", default="./last-frame.png", help="terminal: where the newest frame is saved as PNG")
    colour = "terminal: draw frames in colour: auto (default: if stdout is a colour terminal), always or never"
    p.add_argument("--colour", choices=["auto", "always", "never"], default="auto", help=colour)
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="compile the decode step: seconds up front, then faster frames (default: on in the browser, off in the "
        "terminal)",
    )
    p.set_defaults(fn=play)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every verb."""
    parser = argparse.ArgumentParser(prog="genie2", description=__doc__)
    parser.add_argument("--version", action="version", version=f"genie2 {__version__}", help="print the version")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    stages = (add_collect, add_import_video, add_train_tokenizer, add_tokenize, add_train, add_evaluate)
    for add in (*stages, *LAM_VERBS, add_demo, add_play):
        add(verbs)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `genie2` console script."""
    from safetensors import SafetensorError

    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except KeyboardInterrupt:
        again = "with --resume " if args.verb.startswith("train") else ""
        told = "stopped" if args.verb == "play" else f"interrupted; run the same command again {again}to continue"
        print(f"genie2 {args.verb}: {told}", file=sys.stderr)
        sys.exit(130)
    except (InputError, OSError, ImportError, FloatingPointError, SafetensorError) as error:
        # what the user can fix: bad input (InputError), a missing or unreadable file, a missing
        # extra, a diverged run, a damaged safetensors file. Anything else is a bug: its traceback shows.
        print(f"genie2 {args.verb}: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
