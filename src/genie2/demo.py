"""`genie2 demo`: the whole pipeline on an env (default MiniGrid DoorKey) in one command, within a time budget.

collect -> train tokenizer -> tokenize -> train world model -> eval (report, plot, video) ->
the command that plays the result. Each stage's outcome is written to OUT/demo.json when it
finishes, so running the demo again skips finished stages and resumes an interrupted one,
whenever it was stopped or killed: collect and tokenize continue with the missing episodes,
the trainers resume from their last checkpoint (or start again when none was whole yet). The
two training stages get their step counts from a short timing probe on this machine, so the
whole run fits in `minutes`.

    OUT/data/         the collected episodes (and data/codes/<tokenizer hash>/)
    OUT/tokenizer/    the tokenizer run (a Tokenizer.from_pretrained folder)
    OUT/world/        the world-model run (a Genie2.from_pretrained folder; genie2.load(OUT/world))
    OUT/eval/         report.json, psnr.png, rollouts.gif (truth | real actions | random actions)
    OUT/demo.json     what each finished stage did and how long it took
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from genie2.data.envs import DEFAULT_ENV, resolve
from genie2.data.episode import atomic_write
from genie2.errors import InputError

STAGES = ("collect", "tokenizer", "tokenize", "world", "eval")
# what differs from DemoPlan's defaults per env (others take them as they are): Crafter's tile-aligned
# presets, and the moves policy, half of whose actions scroll the view (uniformly random ones, a quarter)
ENV_PLANS = {
    "crafter": dict(
        tokenizer_preset="crafter-cpu", world_preset="crafter-cpu", policy="moves", episodes=200, steps_per_episode=200
    ),
}


@dataclass
class DemoPlan:
    """How the demo spends its minutes (fractions of the budget for the two training stages)."""

    minutes: float = 30.0
    env: str = DEFAULT_ENV  # a preset or Gymnasium env id (genie2.data.envs)
    tokenizer_preset: str = "cpu"
    world_preset: str = "cpu"
    # uniformly random actions: under the sticky policy the last move predicts the next one 83%
    # of the time, so a short training run learns to continue the motion instead of reading
    # the key (docs/pretrained.md); many short episodes show the model many layouts
    policy: str = "random"
    episodes: int = 300
    steps_per_episode: int = 160
    tokenizer_share: float = 0.12
    world_share: float = 0.7
    min_tokenizer_steps: int = 300
    min_world_steps: int = 100
    eval_episodes: int = 16
    horizon: int = 16
    workers: int = 2
    seed: int = 0
    # measure play speed uncompiled: compiling takes a minute the budget is better spent training on
    # (`genie2 play` compiles; benchmarks/play.py measures it)
    compile_play: bool = False

    @classmethod
    def for_env(cls, env: str = DEFAULT_ENV, **overrides) -> DemoPlan:
        """The plan for `env`: DemoPlan's defaults, then ENV_PLANS[env], then `overrides` (None values ignored)."""
        values = {**ENV_PLANS.get(env, {}), **{k: v for k, v in overrides.items() if v is not None}}
        return cls(env=env, **values)

    def check(self) -> None:
        """Clear errors for budgets and envs that cannot run (before demo.json records the plan)."""
        resolve(self.env)  # an unknown env says which presets there are
        if isinstance(self.minutes, bool) or not isinstance(self.minutes, (int, float)) or self.minutes <= 0:
            raise InputError(f"minutes must be a positive number, got {self.minutes!r}")
        for name in ("episodes", "steps_per_episode", "eval_episodes", "horizon", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive int, got {value!r}")


def seconds_per_step(step, warmup: int = 2, repeats: int = 5) -> float:
    """Median seconds of `step()` after a warm-up: the timing probe that sizes a training stage."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def probe_tokenizer(config) -> float:
    """Seconds per tokenizer training step of `config` (a TokenizerTraining) on this machine."""
    from genie2.tokenizer.model import Tokenizer
    from genie2.tokenizer.train import train_step

    model = Tokenizer(config.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    size = config.model.frame_size
    frames = torch.randint(0, 256, (config.batch_size, 1, size, size, 3), dtype=torch.uint8)
    return seconds_per_step(lambda: train_step(model, optimizer, frames, 1e-4, True, 1.0))


def probe_world(config, tokenizer_path: Path, num_actions: int, horizon: int) -> tuple[float, float]:
    """Seconds per world-model training step of `config` (a Training), and seconds per dreamed frame of
    a `horizon`-frame rollout, on this machine (an untrained model is as fast as a trained one)."""
    from genie2.model.genie2 import Genie2
    from genie2.tokenizer.model import Tokenizer
    from genie2.train.world_model import world_loss
    from genie2.world import World

    tokenizer = Tokenizer.from_pretrained(tokenizer_path)
    model = Genie2.from_tokenizer(tokenizer, num_actions=num_actions, **config.model).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    b, t, (h, w) = config.batch_size, config.clip_frames, tokenizer.latent_shape
    batch = dict(
        codes=torch.randint(0, tokenizer.num_codes, (b, t, h, w)),
        actions=torch.randint(0, num_actions, (b, t, 1)),
        video_time_len=torch.full((b,), t),
    )

    def step():
        loss, _ = world_loss(model, batch, "cpu")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    per_step = seconds_per_step(step, warmup=1, repeats=3)
    size = tokenizer.config.frame_size
    prompt, actions = torch.zeros(1, size, size, 3, dtype=torch.uint8), torch.zeros(1 + horizon, dtype=torch.long)
    world = World(model)
    per_rollout = seconds_per_step(lambda: world.rollout(prompt, actions), warmup=1, repeats=1)
    return per_step, per_rollout / horizon


class DemoRun:
    """The stages of one demo folder, with what each finished one recorded."""

    def __init__(self, out: str | Path, plan: DemoPlan):
        self.out, self.plan = Path(out), plan
        self.budget = plan.minutes * 60  # seconds
        self.data, self.tokenizer_dir = self.out / "data", self.out / "tokenizer"
        self.world_dir, self.eval_dir = self.out / "world", self.out / "eval"
        self.record_path = self.out / "demo.json"
        self.record = json.loads(self.record_path.read_text()) if self.record_path.is_file() else {}
        saved = self.record.get("plan")
        saved = saved and {**asdict(DemoPlan()), **saved}  # fields added since it was saved have their defaults
        if saved and saved != asdict(plan):
            changed = sorted(k for k in saved if saved[k] != asdict(plan).get(k))
            raise InputError(
                f"{self.out} holds a demo run with other settings ({', '.join(changed)}); "
                "run it with the same options to resume, or choose a new --out"
            )
        self.record["plan"] = asdict(plan)

    def save(self) -> None:
        """Write demo.json atomically."""
        self.out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.record, indent=2)
        atomic_write(self.record_path, lambda tmp: tmp.write_text(text))

    def done(self, stage: str) -> bool:
        """Whether a stage finished in an earlier (or this) run."""
        return self.record.get(stage, {}).get("done", False)

    def finish(self, stage: str, seconds: float, **results) -> None:
        """Record a finished stage."""
        self.record[stage] = dict(self.record.get(stage, {}), done=True, seconds=round(seconds, 1), **results)
        self.save()

    def spent(self) -> float:
        """Seconds the finished stages took."""
        return sum(self.record[s]["seconds"] for s in STAGES if self.done(s))

    def header(self, index: int, stage: str, text: str) -> None:
        """Announce a stage with the time spent so far."""
        elapsed = self.spent()
        eta = time.strftime("%H:%M", time.localtime(time.time() + max(0.0, self.plan.minutes * 60 - elapsed)))
        used = f"{elapsed / 60:.1f} of {self.plan.minutes:g} min used, done by about {eta}"
        print(f"\n[{index}/{len(STAGES)}] {text}  ({used})", flush=True)


def run_demo(out: str | Path = "genie2-demo", plan: DemoPlan | None = None, progress: bool = True) -> dict:
    """Run (or resume) every stage of the demo; returns demo.json's record."""
    plan = plan or DemoPlan()
    plan.check()
    run = DemoRun(out, plan)
    run.save()
    # each stage imports its modules when it runs, so a finished stage costs nothing
    runners = (collect_stage, tokenizer_stage, tokenize_stage, world_stage, eval_stage)
    for stage, run_stage in zip(STAGES, runners, strict=True):
        if not run.done(stage):
            run_stage(run, progress)
    print_summary(run.record, run.out)
    return run.record


def collect_stage(run: DemoRun, progress: bool) -> None:
    """Stage 1: collect the episodes."""
    from genie2.data.collect import collect

    plan = run.plan
    run.header(1, "collect", f"collect {plan.episodes} episodes of {plan.env} ({plan.policy} policy)")
    start = time.perf_counter()
    info = collect(run.data, plan.env, plan.episodes, plan.steps_per_episode, plan.seed, policy=plan.policy,
                   workers=plan.workers, progress=progress)  # fmt: skip
    run.finish("collect", time.perf_counter() - start, episodes=info.num_episodes, frames=info.num_frames,
               frame_size=info.frame_size)  # fmt: skip


def tokenizer_stage(run: DemoRun, progress: bool) -> None:
    """Stage 2: train the tokenizer for the steps its timing probe fits in the budget."""
    from genie2.data.sprites import sprite_report
    from genie2.tokenizer.model import Tokenizer
    from genie2.tokenizer.train import TokenizerTraining, train_tokenizer

    plan = run.plan
    config = TokenizerTraining.preset(plan.tokenizer_preset)
    stage = run.record.setdefault("tokenizer", {})
    if "steps" not in stage:  # sized once, so a resumed run keeps its schedule
        per_step = probe_tokenizer(config)
        stage["steps"] = max(plan.min_tokenizer_steps, int(plan.tokenizer_share * run.budget / per_step))
        stage["probe_seconds_per_step"] = round(per_step, 4)
        run.save()
    run.header(2, "tokenizer", f"train the frame tokenizer for {stage['steps']} steps")
    start = time.perf_counter()
    # resume=True from any moment: the trainer starts again from scratch when no checkpoint is whole yet
    result = train_tokenizer(str(run.data), str(run.tokenizer_dir), config, True, progress, steps=stage["steps"])
    scores = dict(psnr=round(result["psnr"], 2), bad_tiles=round(result["bad_tiles"], 4), usage=result["usage"])
    if plan.env == "minigrid":  # every DoorKey sprite state, drawn right?
        scores["sprites"] = sprite_report(Tokenizer.from_pretrained(run.tokenizer_dir))
    run.finish("tokenizer", time.perf_counter() - start, **scores)


def tokenize_stage(run: DemoRun, progress: bool) -> None:
    """Stage 3: encode every frame into codes."""
    from genie2.data.codes import encode_dataset

    run.header(3, "tokenize", "encode every frame into codes")
    start = time.perf_counter()
    encode_dataset(run.data, run.tokenizer_dir, progress=progress)
    run.finish("tokenize", time.perf_counter() - start)


def world_stage(run: DemoRun, progress: bool) -> None:
    """Stage 4: train the world model for the steps its timing probe fits in what is left of the budget."""
    from genie2.data.codes import default_codes_dir
    from genie2.data.episode import DatasetInfo
    from genie2.train.world_model import Training, train

    plan = run.plan
    config = Training.preset(plan.world_preset, eval_every=10**9)  # the demo evaluates once, at the end
    stage = run.record.setdefault("world", {})
    if "planned_steps" not in stage:
        num_actions = DatasetInfo.load(run.data).num_actions
        per_step, per_frame = probe_world(config, run.tokenizer_dir, num_actions, plan.horizon)
        # the evaluation dreams each episode's horizon twice (real and random actions), then times play
        stage["eval_seconds"] = round(1.5 * per_frame * plan.horizon * (2 * plan.eval_episodes + 1) + 30, 1)
        left = max(0.0, run.budget - run.spent() - stage["eval_seconds"])
        stage["planned_steps"] = max(plan.min_world_steps, int(min(plan.world_share * run.budget, left) / per_step))
        stage["probe_seconds_per_step"] = round(per_step, 4)
        run.save()
    config.steps = stage["planned_steps"]
    run.header(4, "world", f"train the world model for {config.steps} steps")
    start = time.perf_counter()
    codes = default_codes_dir(run.data, run.tokenizer_dir)
    # a stage slower than its probe (a busy machine) trains fewer steps, re-planned as it goes; a plan
    # already at its floor of min_world_steps (a budget too small for more) trains them all
    deadline = time.time() + max(0.0, run.budget - run.spent() - stage["eval_seconds"])
    deadline = None if config.steps <= plan.min_world_steps else deadline
    train(str(run.data), str(codes), str(run.tokenizer_dir), str(run.world_dir), config, True, progress,
          deadline=deadline)  # fmt: skip
    last = json.loads((run.world_dir / "metrics.jsonl").read_text().splitlines()[-1])
    run.finish("world", time.perf_counter() - start, steps=last["step"], final_loss=round(last["loss"], 3))


def eval_stage(run: DemoRun, progress: bool) -> None:
    """Stage 5: evaluate the world on held-out episodes and measure how fast it plays."""
    from genie2.evaluate import evaluate_world, write_report
    from genie2.world import load

    plan = run.plan
    run.header(5, "eval", f"dream {plan.horizon} frames after held-out frames, with real and random actions")
    start = time.perf_counter()
    world = load(run.world_dir)
    report = evaluate_world(
        world, run.data, "val", plan.eval_episodes, plan.horizon, prompt_frames=1, seed=plan.seed, progress=progress
    )
    write_report(report, run.eval_dir, run.world_dir, dict(episodes=plan.eval_episodes, horizon=plan.horizon))
    m = report["metrics"]
    results = dict(
        psnr_step_1=round(m["psnr"]["mean"][0], 2),
        psnr_last_step=round(m["psnr"]["mean"][-1], 2),
        tokenizer_psnr=round(m["tokenizer_psnr"]["overall"], 2),
        tokenizer_bad_tiles=round(m["tokenizer_bad_tiles"]["overall"], 4),
        bad_tiles_step_8=round(m["bad_tiles"]["mean"][min(7, plan.horizon - 1)], 4),
        copy_psnr_last_step=round(m["psnr_copy"]["mean"][-1], 2),
        delta_psnr_step_8=round(m["delta_psnr"]["mean"][min(7, plan.horizon - 1)], 2),
        play_frames_per_s=round(play_speed(world, compile=plan.compile_play), 1),
    )
    run.finish("eval", time.perf_counter() - start, **results)


def play_speed(world, frames: int = 16, compile: bool = True) -> float:
    """Median frames/s of a play session (compiled, as `genie2 play` runs it), after warm-up."""
    size = world.model.tokenizer.config.frame_size
    start = world.start_frames[0] if world.start_frames is not None else torch.zeros(size, size, 3, dtype=torch.uint8)
    session = world.session(start, temperature=0.0, compile=compile)
    seconds = []
    for i in range(frames + 4):
        begin = time.perf_counter()
        session.step(i % world.model.num_actions)
        seconds.append(time.perf_counter() - begin)
    seconds = sorted(seconds[4:])
    return 1 / seconds[len(seconds) // 2]


def print_summary(record: dict, out: Path) -> None:
    """The table at the end: each stage's time and result, then what to run next."""
    t = record["tokenizer"]
    sprites = t.get("sprites") or dict(errors=[], wrong=[])  # DoorKey's only
    right = len(sprites["errors"]) - len(sprites["wrong"])
    drawn = f", {right} of {len(sprites['errors'])} sprite states drawn right" if sprites["errors"] else ""
    rows = [
        ("collect", f"{record['collect']['episodes']} episodes, {record['collect']['frames']:,} frames"),
        (
            "tokenizer",
            f"{t['steps']} steps, val PSNR {t['psnr']} dB, {t['bad_tiles']:.2%} of tiles with a bad pixel{drawn}",
        ),
        ("tokenize", "codes of every frame"),
        (
            "world",
            f"{record['world']['steps']} steps (planned {record['world']['planned_steps']}), "
            f"final loss {record['world']['final_loss']}",
        ),
    ]
    e = record["eval"]
    rows.append(
        (
            "eval",
            f"PSNR {e['psnr_step_1']} dB at step 1, {e['psnr_last_step']} dB at the last step "
            f"(tokenizer ceiling {e['tokenizer_psnr']}, copying the last real frame {e['copy_psnr_last_step']}); "
            f"delta PSNR at step 8 {e['delta_psnr_step_8']} dB; "
            f"plays at {e['play_frames_per_s']} frames/s{'' if record['plan']['compile_play'] else ' uncompiled'}",
        )
    )
    total = sum(record[s]["seconds"] for s in STAGES)
    print("\n| stage | minutes | result |\n|---|---|---|")
    for stage, text in rows:
        print(f"| {stage} | {record[stage]['seconds'] / 60:.1f} | {text} |")
    print(f"| total | {total / 60:.1f} | |")
    results = out / "eval"
    print(f"\nreport: {results / 'report.json'}, plot: {results / 'psnr.png'}, video: {results / 'rollouts.gif'}")
    print(f"play it:  genie2 play --world {out / 'world'}")
