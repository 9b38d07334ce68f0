"""The frame tokenizer: a VQ autoencoder (model.py) and its training (train.py)."""

from genie2.tokenizer.model import Tokenizer, TokenizerConfig

__all__ = ["Tokenizer", "TokenizerConfig"]
