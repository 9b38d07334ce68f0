"""genie2: action-conditioned generative world models in the style of Genie 2."""

from genie2.helpers import (
    default,
    exists,
    guide,
    gumbel_noise,
    gumbel_sample,
    gumbel_softmax,
    l2norm,
    min_p_filter,
    pack_one,
    project,
)
from genie2.model import CausalConv3d, Genie2, MetaTokenWrapper
from genie2.session import WorldModelSession

__version__ = "0.1.0"

__all__ = [
    "CausalConv3d",
    "Genie2",
    "MetaTokenWrapper",
    "WorldModelSession",
    "default",
    "exists",
    "guide",
    "gumbel_noise",
    "gumbel_sample",
    "gumbel_softmax",
    "l2norm",
    "min_p_filter",
    "pack_one",
    "project",
]
