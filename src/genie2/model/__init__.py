"""The world model as pure nn.Modules: Genie2 and its config, the transformer, actions, layers,
cached decoding and the play session. Nothing here writes files, prints or prompts, except the
reference's generate(interactive=True), which imports genie2.play.interactive when asked; saving
and loading is genie2.checkpoint's (Genie2.from_pretrained reads an old run's training.json)."""

from genie2.model.config import Genie2Config
from genie2.model.genie2 import Genie2
from genie2.model.layers import CausalConv3d, MetaTokenWrapper
from genie2.model.session import WorldModelSession

__all__ = ["CausalConv3d", "Genie2", "Genie2Config", "MetaTokenWrapper", "WorldModelSession"]
