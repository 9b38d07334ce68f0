"""Pre-encoded datasets: every episode's frames turned into tokenizer codes, once, on disk, so
world-model training never re-runs the encoder.

    DATA/codes/NAME/codes.json                   the tokenizer (path, weights hash), latent shape, codes
    DATA/codes/NAME/episode-000000.safetensors   codes (t h w int32), actions (t a int64)

NAME defaults to the first 12 hex digits of the tokenizer weights' SHA-256, so codes from
two tokenizers never mix. Files are written atomically; running `genie2 tokenize` again
encodes only the episodes that are missing.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from tqdm.auto import tqdm

from genie2.data.clips import episode_files
from genie2.data.episode import Episode, atomic_write
from genie2.errors import InputError

CODES_DIR = "codes"
CODES_FORMAT = 1


def weights_hash(tokenizer_path: str | Path) -> str:
    """SHA-256 of a tokenizer's weights file."""
    from genie2.checkpoint import WEIGHTS_FILE

    digest = hashlib.sha256()
    with open(Path(tokenizer_path) / WEIGHTS_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def written_whole(path: Path, episode: Path, array: str = "codes") -> bool:
    """Whether `path`, a file written beside an episode (its codes, its latent actions), holds `array` for
    every frame of the episode (else it is written again)."""
    from safetensors import SafetensorError, safe_open

    from genie2.data.episode import episode_length

    if not path.is_file():
        return False
    try:
        with safe_open(str(path), "np") as f:
            return f.get_slice(array).get_shape()[0] == episode_length(episode)
    except (SafetensorError, OSError, KeyError):
        return False


def encode_frames(tokenizer, frames: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Codes (t h w) of an episode's frames (t H W 3), `batch_size` frames at a time. A temporal
    tokenizer's causal convolution sees earlier frames, so each chunk is encoded after the frames
    that convolution reaches back to (then dropped): the codes equal those of the whole episode."""
    reach = tokenizer.config.temporal_conv_kernel_size - 1 if tokenizer.config.temporal else 0
    codes = []
    for start in range(0, len(frames), batch_size):
        first = max(0, start - reach)
        chunk = frames[first : start + batch_size]
        codes.append(tokenizer.encode(chunk[None])[0, start - first :].cpu())
    return torch.cat(codes)


def default_codes_dir(data: str | Path, tokenizer_path: str | Path) -> Path:
    """DATA/codes/<first 12 hex digits of the tokenizer weights' hash>."""
    return Path(data) / CODES_DIR / weights_hash(tokenizer_path)[:12]


@torch.no_grad()
def encode_dataset(
    data: str | Path,
    tokenizer_path: str | Path,
    out: str | Path | None = None,
    batch_size: int = 64,
    skip_corrupt: bool = False,
    progress: bool = True,
    device: str | None = None,
) -> Path:
    """Encode every episode of `data` with the tokenizer at `tokenizer_path`; returns the codes folder."""
    from genie2.helpers import resolve_device
    from genie2.tokenizer.model import Tokenizer

    tokenizer = Tokenizer.from_pretrained(tokenizer_path, resolve_device(device))
    digest = weights_hash(tokenizer_path)
    out = Path(out) if out else default_codes_dir(data, tokenizer_path)
    meta = dict(
        format_version=CODES_FORMAT,
        tokenizer=str(Path(tokenizer_path).resolve()),
        tokenizer_sha256=digest,
        latent_shape=list(tokenizer.latent_shape),
        num_codes=tokenizer.num_codes,
        data=str(Path(data).resolve()),
    )
    if (out / "codes.json").exists():
        old = json.loads((out / "codes.json").read_text())
        if old.get("tokenizer_sha256") != digest:
            raise InputError(f"{out} holds codes of another tokenizer ({old.get('tokenizer')}); choose another --out")
    atomic_write(out / "codes.json", lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))
    episodes = episode_files(data, skip_corrupt)
    todo = [(index, path) for index, path in episodes if not written_whole(out / path.name, path)]
    frames_done, start = 0, time.perf_counter()
    bar = tqdm(
        total=len(episodes), initial=len(episodes) - len(todo), desc="tokenize", unit="episode", disable=not progress
    )
    with bar:
        for _, path in todo:
            episode = Episode.load(path)
            frames = torch.from_numpy(episode.frames)
            codes = encode_frames(tokenizer, frames, batch_size)
            arrays = dict(codes=codes.numpy().astype(np.int32), actions=episode.actions)
            atomic_write(out / path.name, lambda tmp, arrays=arrays: save_file(arrays, str(tmp)))
            frames_done += len(frames)
            bar.update(1)
            bar.set_postfix(frames_per_s=f"{frames_done / max(time.perf_counter() - start, 1e-6):.0f}")
    return out
