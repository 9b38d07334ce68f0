"""Training state on disk without pickle: tensors in safetensors, everything else in JSON.

A training run folder holds the model's own checkpoint (config.json + model.safetensors,
what `from_pretrained` reads) and `trainer/` with what resuming needs: the optimizer and
scheduler state, the RNG, the step and the data position.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from genie2.data.episode import atomic_write

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


def has_state(folder: str | Path) -> bool:
    """Whether a run folder has training state."""
    return (Path(folder) / TRAINER_DIR / "state.json").is_file()


CHECKPOINT_DIR = "checkpoints"


def save_checkpoint(run: str | Path, step: int, model, state: dict, keep: int = 2) -> Path:
    """Write run/checkpoints/step-N (the model's own files plus trainer state) into a temporary
    folder and rename it, so a checkpoint folder exists only when whole; keep the newest `keep`."""
    import os
    import shutil

    root = Path(run) / CHECKPOINT_DIR
    final, tmp = root / f"step-{step:08d}", root / f".tmp-step-{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    save_state(tmp, state)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run: str | Path) -> Path | None:
    """The newest whole checkpoint folder of a run, or None."""
    found = sorted((Path(run) / CHECKPOINT_DIR).glob("step-*"))
    return found[-1] if found else None
