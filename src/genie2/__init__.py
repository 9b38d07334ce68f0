"""genie2: action-conditioned generative world models in the style of Genie 2.

Names are imported on first use, so the data stage (and its worker processes) start without
loading torch. Importing genie2 registers the Gymnasium env "genie2/World-v0" (genie2.env).
"""

from importlib import import_module

import gymnasium

__version__ = "0.1.0"

_EXPORTS = {
    "CausalConv3d": "genie2.model",
    "Genie2": "genie2.model",
    "Genie2Config": "genie2.model",
    "InputError": "genie2.errors",
    "MetaTokenWrapper": "genie2.model",
    "WorldModelSession": "genie2.model",
    "World": "genie2.world",
    "WorldEnv": "genie2.env",
    "WorldVectorEnv": "genie2.env",
    "load": "genie2.world",
    "load_lam": "genie2.lam.model",
    "LatentActionModel": "genie2.lam.model",
    "LAMConfig": "genie2.lam.model",
    "Tokenizer": "genie2.tokenizer",
    "TokenizerConfig": "genie2.tokenizer",
    "default": "genie2.helpers",
    "exists": "genie2.helpers",
    "guide": "genie2.helpers",
    "gumbel_noise": "genie2.helpers",
    "gumbel_sample": "genie2.helpers",
    "gumbel_softmax": "genie2.helpers",
    "l2norm": "genie2.helpers",
    "min_p_filter": "genie2.helpers",
    "pack_one": "genie2.helpers",
    "project": "genie2.helpers",
}

__all__ = sorted(_EXPORTS)

if "genie2/World-v0" not in gymnasium.registry:  # gymnasium.make("genie2/World-v0", world="minigrid")
    gymnasium.register(
        "genie2/World-v0", entry_point="genie2.env:WorldEnv", vector_entry_point="genie2.env:WorldVectorEnv"
    )


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'genie2' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
