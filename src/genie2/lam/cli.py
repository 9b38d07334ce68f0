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
    model = dict(num_latent_actions=args.latent_actions, change_weight=args.change_weight)
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
    add_shared(p, "--resume", "--skip-corrupt", "--device", "--quiet")
    p.set_defaults(fn=train_lam)


VERBS = (add_train_lam,)
