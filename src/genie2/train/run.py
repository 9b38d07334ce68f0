"""Resumable training: state on disk without pickle (tensors in safetensors, everything else in
JSON), atomic checkpoint folders, RNG state, stop signals and the learning-rate schedule.

A training run folder holds the model's own checkpoint (config.json + model.safetensors,
what `from_pretrained` reads) and `trainer/` with what resuming needs: the optimizer and
scheduler state, the RNG, the step and the data position.

A run resumes from any moment: checkpoint folders exist only when whole, a run killed before
its first one starts again from scratch (`open_run`), metrics.jsonl is cut back to the step
resumed from (`truncate_metrics`), and the run folder's exported model files switch from one
step to the next all at once (`export_latest`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from genie2.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from genie2.data.episode import atomic_write
from genie2.errors import InputError

TRAINER_DIR = "trainer"


def _split(tree, prefix: str, tensors: dict):
    """Move the tensors of a nested dict/list into `tensors`; leave JSON-able placeholders."""
    if isinstance(tree, torch.Tensor):
        tensors[prefix] = tree.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(tree, dict):
        return {"__dict__": [[key, _split(value, f"{prefix}/{key}", tensors)] for key, value in tree.items()]}
    if isinstance(tree, (list, tuple)):
        return [_split(value, f"{prefix}/{i}", tensors) for i, value in enumerate(tree)]
    return tree


def _join(tree, tensors: dict):
    """Undo `_split`."""
    if isinstance(tree, dict) and "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if isinstance(tree, dict) and "__dict__" in tree:
        return {key: _join(value, tensors) for key, value in tree["__dict__"]}
    if isinstance(tree, list):
        return [_join(value, tensors) for value in tree]
    return tree


def save_state(folder: str | Path, state: dict) -> None:
    """Write a nested dict of tensors and JSON values (optimizer state_dicts included)."""
    folder = Path(folder) / TRAINER_DIR
    tensors: dict = {}
    skeleton = _split(state, "s", tensors)
    atomic_write(folder / "state.safetensors", lambda tmp: save_file(tensors, str(tmp)))
    atomic_write(folder / "state.json", lambda tmp: tmp.write_text(json.dumps(skeleton)))


def load_state(folder: str | Path) -> dict:
    """Read what save_state wrote; a missing or damaged state raises a clear error."""
    folder = Path(folder) / TRAINER_DIR
    if not (folder / "state.json").is_file() or not (folder / "state.safetensors").is_file():
        raise FileNotFoundError(f"{folder} holds no training state to resume from")
    tensors = load_file(str(folder / "state.safetensors"))
    return _join(json.loads((folder / "state.json").read_text()), tensors)


CHECKPOINT_DIR = "checkpoints"


def save_checkpoint(run: str | Path, step: int, model, state: dict, keep: int = 2, extra=None) -> Path:
    """Write run/checkpoints/step-N (the model's own files, `extra(folder)`'s, the trainer state)
    into a temporary folder and rename it, so a checkpoint folder exists only when whole; keep the
    newest `keep` (at least 1: resuming needs one)."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise InputError(f"keep must be an int >= 1 (checkpoints kept; resuming needs one), got {keep!r}")
    root = Path(run) / CHECKPOINT_DIR
    final, tmp = root / f"step-{step:08d}", root / f".tmp-step-{step:08d}-{os.getpid()}"
    for stale in root.glob(".tmp-step-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    model.save_pretrained(tmp)
    if extra is not None:
        extra(tmp)
    save_state(tmp, state)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in run_checkpoints(run)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def run_checkpoints(run: str | Path) -> list[Path]:
    """A run's whole checkpoint folders, oldest first."""
    return sorted((Path(run) / CHECKPOINT_DIR).glob("step-*"))


def latest_checkpoint(run: str | Path) -> Path | None:
    """The newest whole checkpoint folder of a run, or None."""
    found = run_checkpoints(run)
    return found[-1] if found else None


def cosine_lr(step: int, peak: float, warmup: int, steps: int) -> float:
    """Linear warmup to `peak`, then cosine decay to 10% of it at `steps`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps, so the checkpoint it then
    writes is exactly the state after a whole step."""

    def __init__(self):
        self.raised = False

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            self.previous = {}
            return self
        self.previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in self.previous:
            signal.signal(sig, lambda *_: setattr(self, "raised", True))
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def rng_state() -> dict:
    """CPU and (when present) CUDA random states."""
    state = dict(cpu=torch.get_rng_state())
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class SeededBatches:
    """Seeded, resumable batches of dataset indices: epoch e visits them in the order of
    randperm(seed + e), so (epoch, position) says exactly where a run stopped."""

    def __init__(self, size: int, batch_size: int, seed: int):
        if batch_size > size:
            raise InputError(f"batch_size {batch_size} is larger than the {size} training items; collect more data")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.epoch, self.position = 0, 0  # resume_from sets them to where a run stopped
        self._order: tuple[int, torch.Tensor] | None = None

    def next(self) -> list[int]:
        """The next batch of indices."""
        if self.position + self.batch_size > self.size:
            self.epoch, self.position = self.epoch + 1, 0
        if self._order is None or self._order[0] != self.epoch:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            self._order = (self.epoch, torch.randperm(self.size, generator=generator))
        items = self._order[1][self.position : self.position + self.batch_size].tolist()
        self.position += self.batch_size
        return items


# what a run writes before its first whole checkpoint; `open_run` restarts a folder holding only these
RUN_LEFTOVERS = ("training.json", "metrics.jsonl", "logs", "samples", "eval.json", CHECKPOINT_DIR)
METRICS_FILE = "metrics.jsonl"


def open_run(out: str | Path, resume: bool) -> tuple[Path | None, dict | None]:
    """(latest checkpoint, its training state) to resume from, or (None, None) to start from step 0.

    Without `resume` the folder must be new or empty. With it, a folder without a whole checkpoint
    (a run killed before its first one was written) starts from step 0 too, once the main process
    has called `clear_leftovers`; a folder holding anything but such leftovers is refused."""
    out_dir = Path(out)
    if resume and run_checkpoints(out_dir):
        return _newest_intact(out_dir)
    found = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    if not resume and found:
        raise InputError(f"{out_dir} is not empty; pass --resume to continue that run, or choose a new --out")
    others = [name for name in found if name not in RUN_LEFTOVERS and not name.startswith(".")]
    if others:
        raise InputError(
            f"--resume: {out_dir} has no checkpoint to resume from, and it holds files a run did not leave "
            f"({', '.join(others[:5])}); choose another --out"
        )
    return None, None


def _newest_intact(out: Path) -> tuple[Path, dict]:
    """The newest checkpoint whose files all read (trainer state, config.json, the weights' header)
    and its state, saying which one when a newer one is damaged (a disk fault, a copy cut short)."""
    from safetensors import SafetensorError, safe_open

    found = run_checkpoints(out)[::-1]
    for checkpoint in found:
        try:
            state = load_state(checkpoint)
            json.loads((checkpoint / CONFIG_FILE).read_text())
            with safe_open(str(checkpoint / WEIGHTS_FILE), "pt") as weights:
                weights.keys()
        except (OSError, ValueError, SafetensorError) as error:
            print(f"{checkpoint} is damaged ({type(error).__name__}: {error}); trying the one before", flush=True)
            continue
        if checkpoint != found[0]:
            print(f"--resume: continuing from {checkpoint.name}, the newest intact checkpoint", flush=True)
        return checkpoint, state
    raise InputError(f"--resume: every checkpoint in {out / CHECKPOINT_DIR} is damaged; start a new --out")


def run_config(config, state: dict | None, steps: int | None):
    """The config a run trains with: the one saved with the checkpoint it resumes from (else `config`),
    its `steps` extended to `steps` when given."""
    if state:
        config = type(config).from_dict(state["config"])
    config.steps = steps or config.steps
    return config


def train_state(step: int, config, optimizer, batches: SeededBatches) -> dict:
    """What resuming needs besides the weights (lingua's TrainState): the step, the config, the
    optimizer, the RNG and the data position."""
    position = dict(step=step, epoch=batches.epoch, position=batches.position)
    return dict(config=asdict(config), optimizer=optimizer.state_dict(), rng=rng_state(), **position)


def resume_from(state: dict, optimizer, batches: SeededBatches) -> int:
    """Restore what `train_state` saved into a new optimizer and batches; returns the step to go on from."""
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    batches.epoch, batches.position = state["epoch"], state["position"]
    return state["step"]


def clear_leftovers(out: str | Path) -> bool:
    """Remove what a run killed before its first checkpoint left in `out` (see RUN_LEFTOVERS, and
    temporary files); returns whether there was any. Call it on the main process only."""
    out_dir = Path(out)
    if not out_dir.is_dir():
        return False
    found = [p for p in out_dir.iterdir() if p.name in RUN_LEFTOVERS or p.name.startswith(".")]
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return bool(found)


def tidy_run(out: str | Path, state: dict | None) -> None:
    """Ready a run folder that `open_run` opened, on the main process: cut metrics.jsonl back to the
    step resumed from and set aside damaged checkpoints after it (as .damaged-step-N, so no later
    step reads or exports them), or clear what a run killed before its first checkpoint left."""
    if state:
        truncate_metrics(out, state["step"])
        for newer in run_checkpoints(out):
            if int(newer.name.removeprefix("step-")) > state["step"]:
                newer.rename(newer.with_name(f".damaged-{newer.name}"))
    elif clear_leftovers(out):
        print(f"{out}: no whole checkpoint yet; training starts again from step 0", flush=True)


def truncate_metrics(out: str | Path, step: int) -> None:
    """Keep the rows of out/metrics.jsonl up to `step` (a killed run logged steps after its last
    checkpoint; the resumed run logs them again) and drop a half-written last line."""
    path = Path(out) / METRICS_FILE
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line + "\n")
    atomic_write(path, lambda tmp: tmp.write_text("".join(kept)))


EXPORT_LINK = ".export"  # RUN/.export -> .export-step-N-xxxx/, the folder the run's model files point into


def export_latest(run: str | Path, names: tuple[str, ...] = (CONFIG_FILE, WEIGHTS_FILE)) -> None:
    """Make the run folder a checkpoint itself: each RUN/<name> of the last checkpoint's `names`.

    The files are copied into a new folder RUN/.export-step-N-xxxx/, then one symlink, RUN/.export,
    is renamed onto it, and every RUN/<name> is a symlink to .export/<name>: a crash at any moment
    leaves the run folder's model files all from one step (or, before the first export, absent),
    never mixed. `from_pretrained(RUN)` reads through the links. Where symlinks are not allowed
    (some Windows setups) the files are copied one by one instead, each atomically."""
    run = Path(run)
    latest = latest_checkpoint(run)
    if latest is None:
        raise FileNotFoundError(f"{run} has no checkpoint to export")
    present = [name for name in names if (latest / name).is_file()]
    folder = Path(tempfile.mkdtemp(prefix=f"{EXPORT_LINK}-{latest.name}-", dir=run))
    folder.chmod(0o755)
    for name in present:
        shutil.copyfile(latest / name, folder / name)
    for name in names:  # plain files (training.json written at the start, an older export): absent, not mixed
        if (run / name).exists() and not (run / name).is_symlink():
            (run / name).unlink()
    try:
        _symlink(folder.name, run / EXPORT_LINK)
    except OSError:  # no symlinks here: the old way, one file at a time
        for name in present:
            atomic_write(run / name, lambda tmp, name=name: shutil.copyfile(folder / name, tmp))
        shutil.rmtree(folder, ignore_errors=True)
        return
    for name in names:
        target, wanted = run / name, f"{EXPORT_LINK}/{name}"
        if name not in present:
            if target.is_symlink():
                target.unlink()
        elif not (target.is_symlink() and os.readlink(target) == wanted):
            _symlink(wanted, target)  # once per run folder (or over a file written before the first export)
    for old in run.glob(f"{EXPORT_LINK}-*"):
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)


def _symlink(target: str, path: Path) -> None:
    """Point `path` at `target` (relative to its folder) atomically: a new link renamed over it."""
    tmp = path.with_name(f".{path.name}.link{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, path)


def write_eval(out: str | Path, result: dict) -> dict:
    """Write a trained model's final scores to RUN/eval.json (atomically); returns them."""
    text = json.dumps(result, indent=2)
    atomic_write(Path(out) / "eval.json", lambda tmp: tmp.write_text(text))
    return result
