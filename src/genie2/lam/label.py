"""Latent actions written beside a dataset's episodes: `genie2 label`.

    DATA/latent-actions/NAME/   labels.json and one safetensors file per episode (`genie2.data.latent`)

NAME defaults to the first 12 hex digits of the LAM weights' SHA-256, so labels of two LAMs never mix.
Files are written atomically; labelling again labels only the episodes that are missing. `genie2 train
--actions latent` reads its actions from here instead of the episodes' own (`ClipDataset(actions=...)`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from tqdm.auto import tqdm

from genie2.data.clips import episode_files
from genie2.data.codes import weights_hash, written_whole
from genie2.data.episode import Episode, atomic_write
from genie2.data.latent import LABELS_DIR, LABELS_FILE, LABELS_FORMAT, read_labels_info
from genie2.errors import InputError


def default_labels_dir(data: str | Path, lam_path: str | Path) -> Path:
    """DATA/latent-actions/<first 12 hex digits of the LAM weights' hash>."""
    return Path(data) / LABELS_DIR / weights_hash(lam_path)[:12]


@torch.no_grad()
def label_dataset(
    data: str | Path,
    lam_path: str | Path,
    out: str | Path | None = None,
    batch_size: int = 256,
    skip_corrupt: bool = False,
    progress: bool = True,
    device: str | None = None,
) -> Path:
    """Label every episode of `data` with the latent actions of the LAM at `lam_path`; returns the folder."""
    from genie2.helpers import resolve_device
    from genie2.lam.model import LatentActionModel

    lam = LatentActionModel.from_pretrained(lam_path, resolve_device(device)).eval()
    digest = weights_hash(lam_path)
    out = Path(out) if out else default_labels_dir(data, lam_path)
    if (out / LABELS_FILE).is_file() and read_labels_info(out).get("lam_sha256") != digest:
        raise InputError(f"{out} holds latent actions of another LAM; choose another --out")
    meta = dict(
        format_version=LABELS_FORMAT,
        lam=str(Path(lam_path).resolve()),
        lam_sha256=digest,
        num_latent_actions=lam.num_actions,
        data=str(Path(data).resolve()),
    )
    atomic_write(out / LABELS_FILE, lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))
    episodes = episode_files(data, skip_corrupt)
    todo = [path for _, path in episodes if not written_whole(out / path.name, path, "actions")]
    bar = tqdm(
        total=len(episodes), initial=len(episodes) - len(todo), desc="label", unit="episode", disable=not progress
    )
    with bar:
        for path in todo:
            frames = torch.from_numpy(Episode.load(path).frames)
            latents = lam.infer(frames, batch_size).numpy() if len(frames) > 1 else np.zeros(0, np.int64)
            actions = np.concatenate(([-1], latents)).astype(np.int64)[:, None]
            atomic_write(out / path.name, lambda tmp, actions=actions: save_file({"actions": actions}, str(tmp)))
            bar.update(1)
    return out


def check_same_actions(out: Path, lam: str | None) -> None:
    """Refuse to resume a run on other actions than it began with: the episodes' own, or one LAM's latent
    actions (the run's dataset.json records which)."""
    saved = out / "dataset.json"
    if not saved.is_file():
        return
    began = json.loads(saved.read_text()).get("source", {}).get("latent_actions", {}).get("lam_sha256")
    now = weights_hash(lam) if lam else None
    if began != now:
        what = {None: "the episodes' own actions"}
        raise InputError(
            f"{out} began training on {what.get(began, 'latent actions of LAM ' + str(began)[:12])} and would go on "
            f"with {what.get(now, 'latent actions of LAM ' + str(now)[:12])}: resume with the same --actions and --lam"
        )
