"""Genie2: an action-conditioned autoregressive world model over VQ frame codes.

Sequence layout: [meta tokens], then for each frame t one action token (actions[:, t], or a
learned null token when actions are unknown or dropped for classifier-free guidance)
followed by the frame's h*w codes. Because the action token comes first, every code of
frame t, the first included, is predicted knowing actions[:, t] (compare MineWorld's
interleaved action tokens). Each token has a position (frame index, slot in frame), slot 0
being the action token and slot k + 1 code k; both axes enter through rotary embeddings,
so training and generation use the same positions by construction.

Dimension legend: b batch, c channels, t time (frames), h w latent height and width,
s codes per frame (h * w), k slots per frame (s + 1), n flattened sequence, d feature,
l logits (codebook entries), a keys pressed at once.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn
from vector_quantize_pytorch import VectorQuantize

from genie2.errors import InputError
from genie2.helpers import default, exists, guide
from genie2.model.actions import ActionEmbed, MultiActionHead, check_actions, masked_cross_entropy, sort_keys
from genie2.model.decoding import DEFAULT_CONTEXT_FRAMES, _last_frame
from genie2.model.decoding import generate as _generate
from genie2.model.transformer import KVCache, Transformer, check_transformer_kwargs

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


class MetaTokenWrapper(nn.Module):
    """Prepend learned meta tokens (Hymba, arXiv 2411.13676) and strip them from the output."""

    def __init__(self, fn: nn.Module, num_meta_tokens: int):
        super().__init__()
        if not isinstance(num_meta_tokens, int) or num_meta_tokens < 1:
            raise InputError(f"num_meta_tokens must be a positive int, got {num_meta_tokens!r}")
        self.fn = fn
        self.dim = fn.dim
        self.meta_tokens = nn.Parameter(torch.randn(num_meta_tokens, fn.dim) * 0.02)

    def forward(self, x: Tensor, *args, pos: Tensor | None = None, cache: KVCache | None = None, **kwargs):
        """Run `fn` on [meta tokens, x]; once a cache holds the meta tokens, run it on x alone."""
        if exists(cache) and cache.length > 0:
            return self.fn(x, *args, pos=pos, cache=cache, **kwargs)
        num_meta = self.meta_tokens.shape[0]
        meta = repeat(self.meta_tokens, "m d -> b m d", b=x.shape[0]).to(x.dtype)
        if exists(pos):  # meta tokens sit at position -1 on every axis
            pos = torch.cat((pos.new_full((num_meta, pos.shape[-1]), -1.0), pos), dim=0)
        extra = dict(pos=pos, cache=cache) if exists(pos) or exists(cache) else {}
        out = self.fn(torch.cat((meta, x), dim=1), *args, **extra, **kwargs)
        return out[:, num_meta:]


class CausalConv3d(nn.Module):
    """3d convolution over (t, h, w) with a kernel that spans time only, causal along time."""

    def __init__(self, dim: int, dim_out: int, kernel_size: int, bias: bool = False):
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 1:
            raise InputError(f"kernel_size must be a positive int, got {kernel_size!r}")
        self.time_pad = kernel_size - 1
        self.conv = nn.Conv3d(dim, dim_out, (kernel_size, 1, 1), bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: b c t h w -> b c_out t h w, frame t seeing frames <= t only."""
        return self.conv(F.pad(x, (0, 0, 0, 0, self.time_pad, 0)))


class Genie2(nn.Module):
    """The world model: VQ latents, a causal transformer over action and code tokens, and an
    optional behavioural-cloning action head. Same constructor as the reference genie2-pytorch."""

    def __init__(
        self,
        dim: int,
        dim_latent: int,
        num_actions: int | None = None,
        depth: int = 12,
        attn_dim_head: int = 64,
        heads: int = 8,
        latent_channel_first: bool = False,
        cfg_train_action_dropout: float = 0.5,
        transformer_kwargs: dict | None = None,
        action_transformer_kwargs: dict | None = None,
        num_meta_tokens: int = 16,
        vq_codebook_size: int = 4096,
        vq_kwargs: dict | None = None,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
        vq_commit_loss_weight: float = 1.0,
        allow_multiple_actions: bool = False,
        max_num_actions: int = 10,
        action_autoregressive_loss_weight: float = 0.1,
        add_temporal_convs: bool = False,
        temporal_conv_kernel_size: int = 5,
        temporal_autoencoder_recon_loss_weight: float = 0.2,
        is_video_enc_dec: bool = False,
        tokenizer: nn.Module | None = None,
        add_action_to_codes: bool = False,
        max_context_frames: int | None = DEFAULT_CONTEXT_FRAMES,
    ):
        super().__init__()
        transformer_kwargs = dict(default(transformer_kwargs, REFERENCE_TRANSFORMER_KWARGS))
        action_transformer_kwargs = dict(default(action_transformer_kwargs, REFERENCE_ACTION_TRANSFORMER_KWARGS))
        vq_kwargs = dict(default(vq_kwargs, {}))
        self._check_init(locals())
        self.config = {  # what save_pretrained writes; modules passed in are not serialisable
            k: v for k, v in locals().items() if k not in ("self", "encoder", "decoder", "tokenizer", "__class__")
        }
        self.has_custom_modules = exists(encoder) or exists(decoder)

        self.num_actions = num_actions
        self.allow_multiple_actions = allow_multiple_actions
        self.max_num_actions = max_num_actions if allow_multiple_actions else 1
        self.cfg_train_action_dropout = cfg_train_action_dropout
        self.add_action_to_codes = add_action_to_codes  # each code token also carries its frame's action
        # how many past frames generation attends to (training sets clip_frames - 1); None: all of them
        self.max_context_frames = max_context_frames
        self.latent_channel_first = latent_channel_first
        self.is_video_enc_dec = is_video_enc_dec
        self.dim_latent = dim_latent
        self.encoder = default(encoder, nn.Identity())
        self.decoder = default(decoder, nn.Identity())

        # quantize latents; temporal convs let the codes see earlier frames (causally)
        self.need_recon_loss = add_temporal_convs
        self.pre_vq_transform = nn.Identity()
        self.post_vq_transform = nn.Identity()
        if add_temporal_convs:
            self.pre_vq_transform = CausalConv3d(dim_latent, dim_latent, temporal_conv_kernel_size)
            self.post_vq_transform = CausalConv3d(dim_latent, dim_latent, temporal_conv_kernel_size)
        # a trained frame tokenizer (genie2.Tokenizer) replaces encoder, quantizer and decoder; it stays frozen
        self.tokenizer = tokenizer.requires_grad_(False).eval() if exists(tokenizer) else None
        vq_kwargs.setdefault("rotation_trick", True)  # arXiv 2410.06424
        self.vq = None if exists(tokenizer) else VectorQuantize(dim_latent, vq_codebook_size, **vq_kwargs)
        self.vq_commit_loss_weight = vq_commit_loss_weight
        self.vq_recon_loss_weight = temporal_autoencoder_recon_loss_weight

        # the dynamics transformer over (action token, codes) per frame
        self.latent_to_model = nn.Linear(dim_latent, dim)
        self.to_logits = nn.Linear(dim, vq_codebook_size)  # a classifier over code ids
        self.action_embed = ActionEmbed(dim, num_actions)
        transformer = Transformer(dim, depth, heads, attn_dim_head, rotary_axes=2, **transformer_kwargs)
        self.num_meta_tokens = num_meta_tokens
        self.transformer = MetaTokenWrapper(transformer, num_meta_tokens) if num_meta_tokens > 0 else transformer

        # behavioural cloning: predict actions[:, t + 1] from the state after frame t
        self.has_action_loss = exists(num_actions) and action_autoregressive_loss_weight > 0
        self.action_autoregressive_loss_weight = action_autoregressive_loss_weight
        self.to_action_pred = None
        if self.has_action_loss:
            if allow_multiple_actions:
                self.to_action_pred = MultiActionHead(dim, num_actions, max_num_actions, action_transformer_kwargs)
            else:
                self.to_action_pred = nn.Linear(dim, num_actions, bias=False)
        self.register_buffer("zero", torch.tensor(0.0), persistent=False)

    @staticmethod
    def _check_init(args: dict) -> None:
        """Raise clear errors for constructor arguments that cannot work."""
        for name in ("dim", "dim_latent", "depth", "attn_dim_head", "heads", "vq_codebook_size", "max_num_actions"):
            if not isinstance(args[name], int) or args[name] < 1:
                raise InputError(f"{name} must be a positive int, got {args[name]!r}")
        if exists(args["num_actions"]) and (not isinstance(args["num_actions"], int) or args["num_actions"] < 1):
            raise InputError(f"num_actions must be a positive int or None, got {args['num_actions']!r}")
        if not isinstance(args["num_meta_tokens"], int) or args["num_meta_tokens"] < 0:
            raise InputError(f"num_meta_tokens must be an int >= 0, got {args['num_meta_tokens']!r}")
        if not 0.0 <= args["cfg_train_action_dropout"] <= 1.0:
            raise InputError("cfg_train_action_dropout must be in [0, 1]")
        window = args["max_context_frames"]
        if exists(window) and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise InputError(f"max_context_frames must be a positive int or None (all frames), got {window!r}")
        if not isinstance(args["add_action_to_codes"], bool):
            raise InputError(f"add_action_to_codes must be True or False, got {args['add_action_to_codes']!r}")
        check_transformer_kwargs(args["transformer_kwargs"])
        check_transformer_kwargs(args["action_transformer_kwargs"], "action_transformer_kwargs")
        clash = sorted({"depth", "heads", "attn_dim_head"} & set(args["transformer_kwargs"]))
        if clash:
            raise InputError(f"pass {clash} as Genie2 arguments, not inside transformer_kwargs")
        reserved = sorted(set(RESERVED_VQ_KWARGS) & set(args["vq_kwargs"]))
        if reserved:
            raise InputError(f"vq_kwargs may not set {reserved}: Genie2 sets them (dim_latent, vq_codebook_size)")
        if args["vq_kwargs"].get("heads", 1) != 1:
            raise InputError("vq_kwargs heads > 1 is not supported: the world model predicts one code per token")
        tokenizer = args["tokenizer"]
        if exists(tokenizer):
            if exists(args["encoder"]) or exists(args["decoder"]) or args["add_temporal_convs"]:
                raise InputError("a tokenizer brings its own encoder, decoder and quantizer; do not pass them too")
            if tokenizer.config.dim_latent != args["dim_latent"] or tokenizer.num_codes != args["vq_codebook_size"]:
                raise InputError(
                    f"the tokenizer has dim_latent {tokenizer.config.dim_latent} and {tokenizer.num_codes} codes; "
                    "pass the same dim_latent and vq_codebook_size, or use Genie2.from_tokenizer"
                )
        if args["add_temporal_convs"] and args["is_video_enc_dec"]:
            raise InputError("add_temporal_convs is for image encoders; a video encoder/decoder already sees time")

    @classmethod
    def from_tokenizer(cls, tokenizer: nn.Module, dim: int, **kwargs) -> Genie2:
        """A world model over a trained tokenizer's codes: frames in, frames out."""
        return cls(
            dim, tokenizer.config.dim_latent, vq_codebook_size=tokenizer.num_codes, tokenizer=tokenizer, **kwargs
        )

    def save_pretrained(self, path: str | Path) -> None:
        """Write path/config.json (constructor arguments, the tokenizer's config) and
        path/model.safetensors (every weight, the tokenizer's included), each atomically."""
        from safetensors.torch import save_file

        from genie2.data.episode import atomic_write

        if self.has_custom_modules:
            raise InputError("a Genie2 with custom encoder/decoder modules cannot be saved as config; use a tokenizer")
        config = dict(self.config, kind="genie2-world-model")
        config["tokenizer"] = asdict(self.tokenizer.config) if exists(self.tokenizer) else None
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        path = Path(path)
        atomic_write(path / "model.safetensors", lambda tmp: save_file(state, str(tmp)))
        atomic_write(path / "config.json", lambda tmp: tmp.write_text(json.dumps(config, indent=2)))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> Genie2:
        """Rebuild a world model (and its tokenizer) from save_pretrained's folder."""
        from safetensors.torch import load_file

        from genie2.tokenizer.model import Tokenizer, TokenizerConfig

        path = Path(path)
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            raise FileNotFoundError(f"{path} is not a world-model checkpoint (needs config.json and model.safetensors)")
        config = json.loads((path / "config.json").read_text())
        if config.pop("kind", None) != "genie2-world-model":
            raise InputError(f"{path / 'config.json'} is not a genie2 world-model config")
        tokenizer_config = config.pop("tokenizer", None)
        tokenizer = Tokenizer(TokenizerConfig.from_saved(tokenizer_config)) if tokenizer_config else None
        if "max_context_frames" not in config and (path / "training.json").is_file():  # saved before it was config
            config["max_context_frames"] = json.loads((path / "training.json").read_text())["clip_frames"] - 1
        model = cls(**config, tokenizer=tokenizer)
        model.load_state_dict(load_file(str(path / "model.safetensors")))
        return model.to(device).eval()

    @property
    def num_codes(self) -> int:
        """Entries in the codebook the transformer predicts over."""
        return self.tokenizer.num_codes if exists(self.tokenizer) else self.vq.codebook_size

    def train(self, mode: bool = True) -> Genie2:
        """Switch train/eval mode; a tokenizer stays in eval mode (its codebook is fixed)."""
        super().train(mode)
        if exists(self.tokenizer):
            self.tokenizer.eval()
        return self

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters."""
        return next(self.parameters()).device

    # encoding frames to codes and back

    def _to_latents(self, state: Tensor) -> Tensor:
        """Run the encoder on `state` (b c t h w) and return latents b t h w d."""
        if not isinstance(state, Tensor) or state.ndim != 5 or 0 in state.shape:
            shape = tuple(state.shape) if isinstance(state, Tensor) else type(state).__name__
            raise InputError(f"state must be a non-empty video tensor (b, c, t, h, w), got {shape}")
        b = state.shape[0]
        if self.is_video_enc_dec:
            latents = self.encoder(state)
            pattern = "b d t h w -> b t h w d" if self.latent_channel_first else "b t h w d -> b t h w d"
        else:
            latents = self.encoder(rearrange(state, "b c t h w -> (b t) c h w"))
            pattern = "(b t) d h w -> b t h w d" if self.latent_channel_first else "(b t) h w d -> b t h w d"
        if latents.ndim != (5 if self.is_video_enc_dec else 4):
            raise InputError(
                f"the encoder returned latents of shape {tuple(latents.shape)}; expected 2d maps per frame"
            )
        latents = rearrange(latents, pattern, b=b).to(self.to_logits.weight.dtype)
        if latents.shape[-1] != self.dim_latent:
            raise InputError(
                f"encoder latents have {latents.shape[-1]} features, dim_latent is {self.dim_latent}; "
                "if your encoder returns channels first, set latent_channel_first=True"
            )
        return latents

    def _temporal(self, conv: nn.Module, latents: Tensor) -> Tensor:
        """Apply a (causal) temporal transform to latents b t h w d."""
        if isinstance(conv, nn.Identity):
            return latents
        return rearrange(conv(rearrange(latents, "b t h w d -> b d t h w")), "b d t h w -> b t h w d")

    def encode_state(self, state: Tensor, mask: Tensor | None = None, return_recon_loss: bool = False):
        """Quantize a video (b c t h w): (latents b t h w d, codes b t h w, commit loss)[, recon loss].
        `mask` (b t) marks real frames; padded ones do not touch the losses. With a tokenizer,
        `state` holds RGB frames (b 3 t H W, uint8 or float in [0, 1]) and the losses are zero (it is frozen)."""
        if exists(self.tokenizer):
            size = self.tokenizer.config.frame_size
            if (
                not isinstance(state, Tensor)
                or state.ndim != 5
                or state.shape[1] != 3
                or state.shape[-2:] != (size, size)
            ):
                shape = tuple(state.shape) if isinstance(state, Tensor) else type(state).__name__
                raise InputError(
                    f"state must be RGB frames (b, 3, t, {size}, {size}), uint8 or float in [0, 1], got {shape}"
                )
            with torch.no_grad(), self.tokenizer._frozen_codebook():  # uint8 or float: the tokenizer checks which
                latents = self.tokenizer.encode_latents(rearrange(state, "b c t h w -> b t h w c"))
                quantized, codes, _ = self.tokenizer.quantize(latents)
            quantized = quantized.to(self.to_logits.weight.dtype)
            return (quantized, codes, self.zero, self.zero) if return_recon_loss else (quantized, codes, self.zero)
        latents = self._to_latents(state)
        b, t, h, w, _ = latents.shape
        orig_latents = latents
        latents = self._temporal(self.pre_vq_transform, latents)
        token_mask = repeat(mask, "b t -> b (t s)", s=h * w) if exists(mask) else None
        quantized, codes, commit_loss = self.vq(rearrange(latents, "b t h w d -> b (t h w) d"), mask=token_mask)
        quantized = rearrange(quantized, "b (t h w) d -> b t h w d", t=t, h=h)
        codes = rearrange(codes, "b (t h w) -> b t h w", t=t, h=h)
        if not return_recon_loss:
            return quantized, codes, commit_loss
        recon_loss = self.zero
        if self.need_recon_loss:
            error = (self._temporal(self.post_vq_transform, quantized) - orig_latents) ** 2
            weight = (
                rearrange(mask, "b t -> b t 1 1 1").float() if exists(mask) else torch.ones_like(error[..., :1, :1, :1])
            )
            recon_loss = (error * weight).sum() / (weight.sum() * h * w * self.dim_latent).clamp(min=1.0)
        return quantized, codes, commit_loss, recon_loss

    def codes_to_latents(self, codes: Tensor) -> Tensor:
        """Codebook latents (... d) for codes (...)."""
        if exists(self.tokenizer):
            return self.tokenizer.codes_to_latents(codes).to(self.to_logits.weight.dtype)
        return self.vq.get_output_from_indices(codes)

    def decode_codes(self, codes: Tensor) -> Tensor:
        """Decode codes (b t h w) to a video through the temporal transform and the decoder
        (with a tokenizer: RGB frames in [0, 1], b 3 t H W)."""
        if exists(self.tokenizer):
            return rearrange(self.tokenizer.decode(codes), "b t h w c -> b c t h w")
        latents = self._temporal(self.post_vq_transform, self.codes_to_latents(codes))
        b = latents.shape[0]
        if self.is_video_enc_dec:
            return self.decoder(rearrange(latents, "b t h w d -> b d t h w") if self.latent_channel_first else latents)
        pattern = "b t h w d -> (b t) d h w" if self.latent_channel_first else "b t h w d -> (b t) h w d"
        frames = self.decoder(rearrange(latents, pattern))
        return rearrange(frames, "(b t) c ... -> b c t ...", b=b)

    # the dynamics transformer

    def _check_codes(self, state_codes: Tensor, time_seq_len: int | None) -> Tensor:
        """Accept codes as b t h w, or b n with time_seq_len (one row of n / t codes per frame)."""
        if (
            not isinstance(state_codes, Tensor)
            or state_codes.dtype.is_floating_point
            or state_codes.dtype == torch.bool
        ):
            raise InputError("state_codes must be an integer tensor of codebook indices")
        if state_codes.ndim == 2:
            if not exists(time_seq_len) or state_codes.shape[1] % time_seq_len != 0:
                raise InputError(
                    f"state_codes of shape {tuple(state_codes.shape)} need time_seq_len dividing "
                    f"{state_codes.shape[1]}; or pass them as (b, t, h, w)"
                )
            state_codes = rearrange(state_codes, "b (t h w) -> b t h w", t=time_seq_len, h=1)
        if state_codes.ndim != 4:
            raise InputError(f"state_codes must be (b, t, h, w) or (b, n), got {tuple(state_codes.shape)}")
        if exists(time_seq_len) and time_seq_len != state_codes.shape[1]:
            raise InputError(f"time_seq_len {time_seq_len} != the {state_codes.shape[1]} frames of state_codes")
        size = self.num_codes
        if state_codes.numel() and (state_codes.min() < 0 or state_codes.max() >= size):
            raise InputError(
                f"state_codes must be in [0, {size}), got [{int(state_codes.min())}, {int(state_codes.max())}]"
            )
        return state_codes.long()

    def positions(self, frames: Tensor, slots: Tensor) -> Tensor:
        """Token positions (n 2) from frame indices and in-frame slots (both n)."""
        return torch.stack((frames, slots), dim=-1).float()

    def frame_positions(self, num_frames: int, num_codes: int, start: int = 0) -> Tensor:
        """Positions of whole frames start..start + num_frames - 1, each action token then codes."""
        k = num_codes + 1
        frames = repeat(torch.arange(start, start + num_frames, device=self.device), "t -> (t k)", k=k)
        slots = repeat(torch.arange(k, device=self.device), "k -> (t k)", t=num_frames)
        return self.positions(frames, slots)

    def frame_tokens(self, latents: Tensor, action_tokens: Tensor) -> Tensor:
        """Interleave action tokens (b t d) before code latents (b t h w d_latent): b (t k) d.
        With add_action_to_codes each code token also gets its frame's action token added."""
        codes = self.latent_to_model(rearrange(latents, "b t h w d -> b t (h w) d"))
        if self.add_action_to_codes:
            codes = codes + rearrange(action_tokens, "b t d -> b t 1 d")
        tokens = torch.cat((rearrange(action_tokens, "b t d -> b t 1 d"), codes), dim=2)
        return rearrange(tokens, "b t k d -> b (t k) d")

    def code_logits(self, features: Tensor) -> Tensor:
        """Logits over the codebook (... l) from transformer features (... d)."""
        return self.to_logits(features)

    def _prepare_actions(self, actions, b, t, sort_actions):
        """Checked actions b t a with padding last (sorted keys when asked), or None."""
        if not exists(actions):
            return None
        if not isinstance(actions, Tensor):
            raise InputError(f"actions must be a torch.Tensor of ints, got {type(actions).__name__}")
        actions = check_actions(
            actions.to(self.device), b, t, self.num_actions, self.allow_multiple_actions, self.max_num_actions
        )
        return sort_keys(actions, ascending=sort_actions)

    def _time_mask(self, video_time_len: Tensor | None, b: int, t: int) -> Tensor | None:
        """Mask (b t) of real frames for variable-length clips, or None."""
        if not exists(video_time_len):
            return None
        video_time_len = torch.as_tensor(video_time_len, device=self.device)
        if video_time_len.shape != (b,) or video_time_len.dtype.is_floating_point:
            raise InputError(f"video_time_len must be {b} integer lengths, got {tuple(video_time_len.shape)}")
        if ((video_time_len < 1) | (video_time_len > t)).any():
            raise InputError(f"video_time_len must be in [1, {t}], got {video_time_len.tolist()}")
        return torch.arange(t, device=self.device) < rearrange(video_time_len, "b -> b 1")

    def forward(
        self,
        state: Tensor | None = None,
        state_codes: Tensor | None = None,
        time_seq_len: int | None = None,
        video_time_len: Tensor | None = None,
        actions: Tensor | None = None,
        sort_actions: bool = True,
        return_loss: bool = True,
        drop_actions: Tensor | None = None,
    ):
        """Loss `(total, (state_autoregressive, commit, action))`, or with return_loss=False the
        logits `b (t h w) l` where logits[:, i] is the distribution of code i given all before it."""
        if exists(state) == exists(state_codes):
            raise InputError("pass exactly one of state (a video) or state_codes (its codes)")
        commit_loss = recon_loss = self.zero
        if exists(state):
            if exists(time_seq_len) and time_seq_len != state.shape[2]:
                raise InputError(f"time_seq_len {time_seq_len} != the {state.shape[2]} frames of state")
            time_mask = self._time_mask(video_time_len, state.shape[0], state.shape[2])
            latents, codes, commit_loss, recon_loss = self.encode_state(state, time_mask, return_recon_loss=True)
        else:
            codes = self._check_codes(state_codes, time_seq_len).to(self.device)
            time_mask = self._time_mask(video_time_len, *codes.shape[:2])
            latents = self.codes_to_latents(codes)
        b, t, h, w = codes.shape

        actions = self._prepare_actions(actions, b, t, sort_actions)
        dropout = return_loss and self.training and self.cfg_train_action_dropout > 0
        if exists(actions) and not exists(drop_actions) and dropout:
            drop_actions = torch.rand(b, device=self.device) < self.cfg_train_action_dropout
        tokens = self.frame_tokens(latents, self.action_embed(actions, drop_actions, shape=(b, t)))
        features = self.transformer(tokens, pos=self.frame_positions(t, h * w))
        features = rearrange(features, "b (t k) d -> b t k d", t=t)
        logits = self.code_logits(features[:, :, :-1])  # slot k predicts code k

        if not return_loss:
            return rearrange(logits, "b t s l -> b (t s) l")

        labels = rearrange(codes, "b t h w -> b t (h w)")
        if exists(time_mask):
            labels = labels.masked_fill(~rearrange(time_mask, "b t -> b t 1"), -1)
        state_loss = masked_cross_entropy(logits, labels)
        action_loss = self._action_loss(features[:, :, -1], actions, time_mask)
        total_loss = (
            state_loss
            + commit_loss * self.vq_commit_loss_weight
            + action_loss * self.action_autoregressive_loss_weight
            + recon_loss * self.vq_recon_loss_weight
        )
        return total_loss, (state_loss, commit_loss, action_loss)

    def _action_loss(self, last_features: Tensor, actions: Tensor | None, time_mask: Tensor | None) -> Tensor:
        """Behavioural cloning: the state after frame t (b t d) predicts actions[:, t + 1]."""
        if not self.has_action_loss or not exists(actions) or actions.shape[1] < 2:
            return self.zero
        state, targets = last_features[:, :-1], actions[:, 1:]
        valid = time_mask[:, 1:] if exists(time_mask) else torch.ones_like(targets[..., 0], dtype=torch.bool)
        if not self.allow_multiple_actions:
            labels = targets[..., 0].masked_fill(~valid, -1)
            return masked_cross_entropy(self.to_action_pred(state), labels)
        flat = partial(rearrange, pattern="b t ... -> (b t) ...")
        return self.to_action_pred.loss(flat(state), flat(targets), flat(valid))

    def forward_with_cfg(self, *args, actions=None, cond_scale=1.0, parallel_keep_frac=0.0, **kwargs):
        """Logits with classifier-free guidance; conditioned and null paths run as one batch."""
        kwargs.pop("return_loss", None)
        if not exists(actions) or cond_scale == 1:
            return self.forward(*args, actions=actions, return_loss=False, **kwargs)
        doubled = {
            key: torch.cat((value, value)) if isinstance(value, Tensor) else value for key, value in kwargs.items()
        }
        args = [torch.cat((arg, arg)) if isinstance(arg, Tensor) else arg for arg in args]
        b = actions.shape[0]
        drop = torch.arange(2 * b, device=self.device) >= b
        logits = self.forward(
            *args, actions=torch.cat((actions, actions)), drop_actions=drop, return_loss=False, **doubled
        )
        cond, null = rearrange(logits, "(g b) n l -> g (b n) l", g=2)  # guidance acts per token
        return rearrange(guide(cond, null, cond_scale, parallel_keep_frac), "(b n) l -> b n l", b=b)

    generate = _generate
    _last_frame = _last_frame
