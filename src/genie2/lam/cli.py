"""The latent-action verbs of the `genie2` command: learning actions from frames alone.

genie2 train-lam --data D --out lam     a latent action model (LAM) from D's frames (labels unused)
"""

from __future__ import annotations

import argparse

from genie2.flags import add_shared, positive_int


def train_lam(args) -> None:
    """genie2 train-lam: learn a small vocabulary of latent actions from how a dataset's frames change,
    without its action labels (also under `accelerate launch`). Where the data has labels, each evaluation
    scores how the latent actions agree with them (normalised mutual information, mapped accuracy)."""
    from genie2.lam.model import LAMConfig
    from genie2.lam.train import LAMTraining
    from genie2.lam.train import train_lam as run

    config = LAMTraining.preset(args.preset, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    model = dict(
        num_latent_actions=args.latent_actions,
        change_weight=args.change_weight,
        symmetry=args.symmetry,
        dead_code_threshold=args.dead_code_threshold,
    )
    if any(value is not None for value in model.values()):
        values = {key: value for key, value in model.items() if value is not None}
        config.model = LAMConfig(**{**config.model.__dict__, **values})
    resumable = (args.resume, not args.quiet, args.skip_corrupt, args.device)
    result = run(args.data, args.out, config, *resumable, steps=args.steps)
    agree = f", mapped accuracy {result['mapped_accuracy']:.1%}" if "mapped_accuracy" in result else ""
    print(
        f"{args.out}: next-frame PSNR {result['psnr']:.2f} dB (copying {result['copy_psnr']:.2f}), "
        f"{result['usage']:.0%} of the latent actions used, perplexity {result['perplexity']:.2f}{agree}"
    )


def add_train_lam(verbs: argparse._SubParsersAction) -> None:
    """The arguments of `genie2 train-lam`."""
    p = verbs.add_parser("train-lam", help="learn latent actions from a dataset's frames alone (no action labels)")
    p.description = train_lam.__doc__
    p.add_argument("--data", required=True, help="dataset folder (from genie2 collect or import-video)")
    p.add_argument("--out", required=True, help="run folder; it becomes the LAM checkpoint (genie2.load_lam)")
    p.add_argument("--preset", default="cpu", help="tiny (for tests) or cpu (default)")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="frame pairs per step (default: preset)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the preset's)")
    p.add_argument("--seed", type=int, default=None, help="seed of initialisation and data order (default 0)")
    p.add_argument("--latent-actions", type=positive_int, default=None, help="vocabulary size K (default 8)")
    weight = "pixels that change between two frames weigh 1 + this in the loss (default 10)"
    p.add_argument("--change-weight", type=float, default=None, help=weight)
    symmetry = (
        "what the game's actions mean the same under: rot90, the frame turned by quarter turns (MiniGrid, whose "
        "agent turns and moves relative to its heading: without it latent actions name headings, not turns); "
        "none (default: actions move things the same way on screen, as in Crafter)"
    )
    p.add_argument("--symmetry", choices=["none", "rot90"], default=None, help=symmetry)
    dead = "latent actions used less than this (EMA count) are re-seeded from the batch, against collapse; 0: never"
    p.add_argument("--dead-code-threshold", type=float, default=None, help=f"{dead} (default 2)")
    add_shared(p, "--resume", "--skip-corrupt", "--device", "--quiet")
    p.set_defaults(fn=train_lam)


def label(args) -> None:
    """genie2 label: write the latent action of every step of a dataset, beside its episodes (resumable:
    running it again labels only the episodes that are missing); `genie2 train --actions latent` trains on them."""
    from genie2.lam.label import label_dataset

    out = label_dataset(args.data, args.lam, args.out, args.batch_size, args.skip_corrupt, not args.quiet, args.device)
    print(f"latent actions written to {out}")


def add_label(verbs: argparse._SubParsersAction) -> None:
    """The arguments of `genie2 label`."""
    p = verbs.add_parser("label", help="label a dataset's steps with a LAM's latent actions")
    p.description = label.__doc__
    p.add_argument("--data", required=True, help="dataset folder (its frames are read; its actions are not)")
    p.add_argument("--lam", required=True, help="LAM run or checkpoint folder (from genie2 train-lam)")
    where = "labels folder (default: DATA/latent-actions/<first 12 hex digits of the LAM weights' SHA-256>)"
    p.add_argument("--out", default=None, help=where)
    p.add_argument("--batch-size", type=positive_int, default=256, help="frame pairs inferred at once (default 256)")
    add_shared(p, "--skip-corrupt", "--device", "--quiet")
    p.set_defaults(fn=label)


def map_actions(args) -> None:
    """genie2 map-actions: learn which real action each latent action is, and back, from the first
    --episodes labelled episodes of --data; score it on them and on --eval-data (per-action accuracy over the
    steps whose frame changed, the others apart; normalised mutual information; a confusion-matrix plot)."""
    from genie2.lam.mapping import map_actions as run

    report = run(args.lam, args.data, args.out, args.episodes, args.eval_data, skip_corrupt=args.skip_corrupt)
    for name in ("fit", "held_out"):
        if name in report:
            found = report[name]
            print(
                f"{name.replace('_', '-')}: {found['mapped_accuracy']:.1%} of {found['changed_steps']} changed steps "
                f"mapped to the true action (NMI {found['nmi']:.3f}; unchanged steps {found['unchanged_accuracy']:.1%})"
            )
    print(f"map written to {args.out}")


def add_map_actions(verbs: argparse._SubParsersAction) -> None:
    """The arguments of `genie2 map-actions`."""
    p = verbs.add_parser("map-actions", help="map latent actions to real ones from a few labelled episodes")
    p.description = map_actions.__doc__
    p.add_argument("--lam", required=True, help="LAM run or checkpoint folder (from genie2 train-lam)")
    p.add_argument("--data", required=True, help="dataset folder with action labels; its first --episodes are used")
    p.add_argument("--out", required=True, help="folder for action-map.json, report.json and confusion.png")
    p.add_argument("--episodes", type=positive_int, default=10, help="labelled episodes to fit on (default 10)")
    p.add_argument("--eval-data", default=None, help="labelled held-out dataset to score the map on")
    add_shared(p, "--skip-corrupt")
    p.set_defaults(fn=map_actions)


VERBS = (add_train_lam, add_label, add_map_actions)
