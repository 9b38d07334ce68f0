"""Genie2Config: every constructor argument of Genie2 that is not a module, checked once, saved as
config.json. Field names and defaults are the reference genie2-pytorch's keyword arguments."""

from __future__ import annotations

import inspect
from dataclasses import KW_ONLY, MISSING, dataclass, fields

from genie2.errors import InputError
from genie2.helpers import default
from genie2.model.masking import DECODINGS, check_raster
from genie2.model.transformer import check_transformer_kwargs

DEFAULT_CONTEXT_FRAMES = 16

REFERENCE_TRANSFORMER_KWARGS = dict(
    add_value_residual=True,
    learned_value_residual_mix=True,
    ff_glu=True,
    use_rmsnorm=True,
    num_residual_streams=4,
)
REFERENCE_ACTION_TRANSFORMER_KWARGS = dict(
    add_value_residual=True,
    learned_value_residual_mix=True,
    ff_glu=True,
    use_rmsnorm=True,
    depth=2,
    heads=4,
    attn_dim_head=64,
)
RESERVED_VQ_KWARGS = ("dim", "codebook_size", "channel_last", "accept_image_fmap", "accept_3d_fmap")


def check_positive_int(name: str, value, allow_none: bool = False, minimum: int = 1) -> None:
    """Raise InputError unless `value` is an int >= minimum (or None when allowed)."""
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        wanted = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise InputError(f"{name} must be {wanted}{' or None' if allow_none else ''}, got {value!r}")


@dataclass
class Genie2Config:
    """What defines a Genie2 (besides custom encoder/decoder modules or a tokenizer). The first 13
    fields may be given by position, in the reference's order; the rest by keyword."""

    dim: int
    dim_latent: int
    num_actions: int | None = None
    depth: int = 12
    attn_dim_head: int = 64
    heads: int = 8
    latent_channel_first: bool = False
    cfg_train_action_dropout: float = 0.5
    transformer_kwargs: dict | None = None  # None: the reference's x-transformers options
    action_transformer_kwargs: dict | None = None
    num_meta_tokens: int = 16
    vq_codebook_size: int = 4096
    vq_kwargs: dict | None = None
    # the reference's next positional parameters were the encoder and decoder modules, so what
    # follows is keyword-only: a 14th positional argument raises instead of landing elsewhere
    _: KW_ONLY
    vq_commit_loss_weight: float = 1.0
    allow_multiple_actions: bool = False
    max_num_actions: int = 10
    action_autoregressive_loss_weight: float = 0.1
    add_temporal_convs: bool = False
    temporal_conv_kernel_size: int = 5
    temporal_autoencoder_recon_loss_weight: float = 0.2
    is_video_enc_dec: bool = False
    add_action_to_codes: bool = False  # each code token also carries its frame's action token
    # how many past frames generation attends to (`genie2 train` sets clip_frames - 1); None: all of them
    max_context_frames: int | None = DEFAULT_CONTEXT_FRAMES
    # "raster": one code per decoding step, in order (the reference's); "parallel": a frame's codes see each
    # other and are decoded together in `decode_steps` passes, most confident first (genie2.model.masking)
    decoding: str = "raster"
    decode_steps: int = 8  # the parallel mode's passes per frame unless a rollout asks for others
    raster: str = "sequential"  # how the raster mode fills a frame unless a rollout asks (masking.RASTER_DECODINGS)
    # heads that learn each frame's reward sign and whether its episode ends there (genie2.model.outcomes)
    learn_rewards: bool = False
    outcome_loss_weight: float = 1.0

    def __post_init__(self):
        self.transformer_kwargs = dict(default(self.transformer_kwargs, REFERENCE_TRANSFORMER_KWARGS))
        self.action_transformer_kwargs = dict(
            default(self.action_transformer_kwargs, REFERENCE_ACTION_TRANSFORMER_KWARGS)
        )
        self.vq_kwargs = {"rotation_trick": True, **default(self.vq_kwargs, {})}  # rotation trick: arXiv 2410.06424
        self._check_sizes()
        self._check_flags()
        self._check_kwargs()

    def _check_sizes(self) -> None:
        """Sizes are positive ints, the dropout a probability."""
        for name in ("dim", "dim_latent", "depth", "attn_dim_head", "heads", "vq_codebook_size", "max_num_actions"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("num_actions", self.num_actions, allow_none=True)
        check_positive_int("num_meta_tokens", self.num_meta_tokens, minimum=0)
        check_positive_int("max_context_frames (None: all frames)", self.max_context_frames, allow_none=True)
        check_positive_int("temporal_conv_kernel_size", self.temporal_conv_kernel_size)
        check_positive_int("decode_steps", self.decode_steps)
        weight = self.outcome_loss_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < float("inf"):
            raise InputError(f"outcome_loss_weight must be a number >= 0, got {weight!r}")
        if not 0.0 <= self.cfg_train_action_dropout <= 1.0:
            raise InputError(f"cfg_train_action_dropout must be in [0, 1], got {self.cfg_train_action_dropout!r}")

    def _check_flags(self) -> None:
        """Switches are bools, and compatible."""
        switches = ("latent_channel_first", "allow_multiple_actions", "add_temporal_convs", "is_video_enc_dec")
        for name in (*switches, "add_action_to_codes", "learn_rewards"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.decoding not in DECODINGS:
            raise InputError(f"decoding must be one of {DECODINGS}, got {self.decoding!r}")
        check_raster(self.raster)
        if self.add_temporal_convs and self.is_video_enc_dec:
            raise InputError("add_temporal_convs is for image encoders; a video encoder/decoder already sees time")

    def _check_kwargs(self) -> None:
        """Options passed through to the transformers and the quantizer are ones they take."""
        check_transformer_kwargs(self.transformer_kwargs)
        check_transformer_kwargs(self.action_transformer_kwargs, "action_transformer_kwargs")
        clash = sorted({"depth", "heads", "attn_dim_head"} & set(self.transformer_kwargs))
        if clash:
            raise InputError(f"pass {clash} as Genie2 arguments, not inside transformer_kwargs")
        reserved = sorted(set(RESERVED_VQ_KWARGS) & set(self.vq_kwargs))
        if reserved:
            raise InputError(f"vq_kwargs may not set {reserved}: Genie2 sets them (dim_latent, vq_codebook_size)")
        if self.vq_kwargs.get("heads", 1) != 1:
            raise InputError("vq_kwargs heads > 1 is not supported: the world model predicts one code per token")


def constructor_signature(modules: tuple[str, ...]) -> inspect.Signature:
    """A constructor's signature as help() should show it: Genie2Config's fields, then `modules`."""
    positional, keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("self", positional)]
    for f in fields(Genie2Config):
        value = inspect.Parameter.empty if f.default is MISSING else f.default
        params.append(inspect.Parameter(f.name, keyword if f.kw_only else positional, default=value))
    params += [inspect.Parameter(name, keyword, default=None) for name in modules]
    return inspect.Signature(params)
