"""One way to save and load every model that has a config and weights (Genie2, Tokenizer):
a folder with config.json (the config dataclass as JSON, plus a "kind") and model.safetensors,
each written to a temporary name and renamed, so a crash never leaves half a checkpoint.
Nothing is unpickled.

Why not huggingface_hub's PyTorchModelHubMixin: its from_pretrained turns a folder that does not
exist into a Hub download (there is no network here, and the user meant a path), its
save_pretrained writes a README model card beside the weights and config.json in place, and it
feeds every config key (our "kind", the nested tokenizer) to the constructor.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from genie2.errors import InputError

if TYPE_CHECKING:  # the data stage reads its configs here and starts without torch
    import torch

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


def config_from_dict(cls, saved: dict):
    """The config dataclass `cls` from a saved dict: keys renamed since (`cls.RENAMED`, old -> new)
    are read under their new name, missing keys take `cls.LEGACY` values (what checkpoints saved
    before the key existed were trained with) or the defaults, and unknown keys raise InputError."""
    renamed, legacy = getattr(cls, "RENAMED", {}), getattr(cls, "LEGACY", {})
    saved = {renamed.get(key, key): value for key, value in saved.items()}
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(saved) - known)
    if unknown:
        raise InputError(
            f"the saved {cls.__name__} has keys this genie2 does not know: {unknown}; "
            "it was probably written by a newer genie2 (upgrade to load it)"
        )
    return cls(**{**legacy, **saved})


class Pretrained:
    """save_pretrained / from_pretrained for an nn.Module with a config: the subclass names its
    `KIND` (and `NAME`, for messages) and says how its config is written (`checkpoint_config`) and read back
    (`from_checkpoint_config`)."""

    KIND: ClassVar[str]  # config.json's "kind", e.g. "genie2-tokenizer"
    NAME: ClassVar[str]  # what the user calls it, e.g. "tokenizer"

    def checkpoint_config(self) -> dict:
        """What config.json holds (JSON values only)."""
        raise NotImplementedError

    @classmethod
    def from_checkpoint_config(cls, config: dict, folder: Path):
        """A freshly initialised model for a saved config (its weights are loaded next)."""
        raise NotImplementedError

    def save_pretrained(self, path: str | Path) -> None:
        """Write path/config.json and path/model.safetensors (every weight), each atomically."""
        from safetensors.torch import save_file

        from genie2.data.episode import atomic_write

        path = Path(path)
        config = dict(self.checkpoint_config(), kind=self.KIND)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(path / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
        atomic_write(path / CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(config, indent=2)))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu"):
        """Rebuild the model save_pretrained wrote into `path`, on `device`, in eval mode."""
        path = Path(path)
        if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a {cls.NAME} checkpoint (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
        try:
            config = json.loads((path / CONFIG_FILE).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"{path / CONFIG_FILE} is damaged (not JSON: {error}); save the model again") from error
        if not isinstance(config, dict) or config.pop("kind", None) != cls.KIND:
            raise InputError(f"{path / CONFIG_FILE} is not a genie2 {cls.NAME} config")
        model = cls.from_checkpoint_config(config, path)
        model.load_state_dict(_read_weights(path / WEIGHTS_FILE, model))
        return model.to(device).eval()


def _read_weights(file: Path, model) -> dict:
    """The tensors of a safetensors file, checked against the model its config.json builds: a
    damaged file or weights of another shape raise InputError naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        weights = load_file(str(file))
    except (SafetensorError, OSError) as error:
        raise InputError(f"{file} is damaged ({error}); save the model again") from error
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    wrong = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what}: {names[:3]}{' ...' if len(names) > 3 else ''}"
            for what, names in (("missing", missing), ("unexpected", unexpected), ("other shapes", wrong))
            if names
        )
        raise InputError(f"{file} does not hold the weights its {CONFIG_FILE} describes ({detail})")
    return weights
