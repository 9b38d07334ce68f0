"""How soon does a world model read the keys? Trains variants of the `cpu` world preset for the
same number of steps on the same tokenized data, then measures each one: delta PSNR (real vs
random actions, `genie2 eval`'s metric) and the action gain (validation state loss with the
actions hidden minus with them, nats per code). Prints a table, writes JSON.

    python benchmarks/action_reading.py --data demo/data --tokenizer demo/tokenizer --steps 700

Variants (name=JSON of Genie2 arguments added to the preset's model), by default:
    single='{"add_action_to_codes": false}'                  the reference's one action token
    dropout-0.1='{"add_action_to_codes": false, "cfg_train_action_dropout": 0.1}'
    on-codes='{"add_action_to_codes": true}'                  the frame's action on every code token
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from report import write_report

from genie2.data.clips import ClipDataset
from genie2.data.codes import default_codes_dir
from genie2.evaluate import evaluate_world
from genie2.train.world_model import Training, train, val_losses
from genie2.world import load

VARIANTS = [
    'single={"add_action_to_codes": false}',
    'dropout-0.1={"add_action_to_codes": false, "cfg_train_action_dropout": 0.1}',
    'on-codes={"add_action_to_codes": true}',
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a collected dataset, tokenized by --tokenizer")
    parser.add_argument("--tokenizer", required=True, help="the tokenizer checkpoint whose codes to train on")
    parser.add_argument("--steps", type=int, default=700, help="training steps of every variant")
    parser.add_argument("--episodes", type=int, default=16, help="validation episodes for delta PSNR")
    parser.add_argument("--horizon", type=int, default=16, help="dreamed steps per episode")
    parser.add_argument("--runs", default="runs/action-reading", help="where the variants' run folders go")
    parser.add_argument("--variant", action="append", help="name=JSON of Genie2 arguments (repeatable)")
    parser.add_argument("--out", default="benchmarks/results/action-reading-cpu.json", help="where the JSON goes")
    args = parser.parse_args()

    codes = default_codes_dir(args.data, args.tokenizer)
    rows = []
    for spec in args.variant or VARIANTS:
        name, _, extra = spec.partition("=")
        extra = json.loads(extra or "{}")
        if not isinstance(extra, dict):
            raise ValueError(f"--variant {spec!r}: give name={{...}} with a JSON object of Genie2 arguments")
        run = Path(args.runs) / name
        config = Training.preset("cpu", steps=args.steps, eval_every=10**9)
        config.model = dict(config.model, **extra)
        start = time.perf_counter()
        train(args.data, str(codes), args.tokenizer, str(run), config, (run / "checkpoints").is_dir(), False)
        minutes = (time.perf_counter() - start) / 60
        world = load(run)
        report = evaluate_world(world, args.data, "val", args.episodes, args.horizon, prompt_frames=1, progress=False)
        m = report["metrics"]
        val = val_losses(world.model, ClipDataset(args.data, 8, "val", codes=codes), 64, world.model.device)
        rows.append(
            dict(
                variant=name,
                model=extra,
                steps=args.steps,
                train_minutes=round(minutes, 1),
                psnr_step_1=m["psnr"]["mean"][0],
                psnr_last_step=m["psnr"]["mean"][-1],
                delta_psnr_step_8=m["delta_psnr"]["mean"][min(7, args.horizon - 1)],
                delta_psnr_last_step=m["delta_psnr"]["mean"][-1],
                val_state_loss=val["val_state_loss"],
                action_gain=val["val_action_gain"],
            )
        )
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'variant':>12} {'steps':>5} {'PSNR@1':>7} {'PSNR@last':>9} {'dPSNR@8':>8} {'loss':>7} {'gain':>7}")
    for r in rows:
        print(
            f"{r['variant']:>12} {r['steps']:>5} {r['psnr_step_1']:>7.2f} {r['psnr_last_step']:>9.2f} "
            f"{r['delta_psnr_step_8']:>8.2f} {r['val_state_loss']:>7.4f} {r['action_gain']:>7.4f}"
        )
    write_report(args.out, args, rows)


if __name__ == "__main__":
    main()
