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
from pathlib import Path

import torch
from einops import rearrange, repeat
from torch import Tensor, nn
from vector_quantize_pytorch import VectorQuantize

from genie2.checkpoint import Pretrained, config_from_dict
from genie2.errors import InputError
from genie2.helpers import default, exists, frozen
from genie2.model.actions import (
    ActionEmbed,
    MultiActionHead,
    action_loss_of,
    check_actions,
    masked_cross_entropy,
    order_actions,
)
from genie2.model.config import Genie2Config, constructor_signature
from genie2.model.generate import GenerationMixin
from genie2.model.layers import CausalConv3d, MetaTokenWrapper, apply_temporal
from genie2.model.masking import frame_mask, hidden_codes
from genie2.model.outcomes import OutcomeHeads, with_outcomes
from genie2.model.transformer import Transformer


class Genie2(GenerationMixin, Pretrained, nn.Module):
    """The world model: VQ latents, a causal transformer over action and code tokens, and an
    optional behavioural-cloning action head. Same keywords as the reference genie2-pytorch:
    `Genie2(dim, dim_latent, num_actions=..., ...)` (the fields of Genie2Config), or
    `Genie2(config=Genie2Config(...))`; modules (encoder, decoder, tokenizer) come beside it."""

    KIND, NAME = "genie2-world-model", "world-model"

    def __init__(
        self,
        *args,
        config: Genie2Config | None = None,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
        tokenizer: nn.Module | None = None,
        **kwargs,
    ):
        super().__init__()
        if exists(config) and (args or kwargs):
            raise InputError("pass either config or Genie2Config's arguments, not both")
        config = config if exists(config) else Genie2Config(*args, **kwargs)
        self._check_modules(config, encoder, decoder, tokenizer)
        self.config = config
        self.has_custom_modules = exists(encoder) or exists(decoder)
        self.num_actions = config.num_actions
        self.allow_multiple_actions = config.allow_multiple_actions
        self.max_num_actions = config.max_num_actions if config.allow_multiple_actions else 1
        self.cfg_train_action_dropout = config.cfg_train_action_dropout
        self.add_action_to_codes = config.add_action_to_codes
        self.max_context_frames = config.max_context_frames
        self.latent_channel_first, self.is_video_enc_dec = config.latent_channel_first, config.is_video_enc_dec
        self.dim_latent = config.dim_latent
        self.encoder, self.decoder = default(encoder, nn.Identity()), default(decoder, nn.Identity())
        self._build_quantizer(config, tokenizer)
        self._build_dynamics(config)

    def _build_quantizer(self, config: Genie2Config, tokenizer: nn.Module | None) -> None:
        """Quantize latents; temporal convs let the codes see earlier frames (causally). A trained
        frame tokenizer (genie2.Tokenizer) replaces encoder, quantizer and decoder, and stays frozen."""
        self.need_recon_loss = config.add_temporal_convs
        self.pre_vq_transform = self.post_vq_transform = nn.Identity()
        if config.add_temporal_convs:
            dim, kernel = config.dim_latent, config.temporal_conv_kernel_size
            self.pre_vq_transform, self.post_vq_transform = (
                CausalConv3d(dim, dim, kernel),
                CausalConv3d(dim, dim, kernel),
            )
        self.tokenizer = tokenizer.requires_grad_(False).eval() if exists(tokenizer) else None
        vq = (
            None
            if exists(tokenizer)
            else VectorQuantize(config.dim_latent, config.vq_codebook_size, **config.vq_kwargs)
        )
        self.vq = vq
        self.vq_commit_loss_weight = config.vq_commit_loss_weight
        self.vq_recon_loss_weight = config.temporal_autoencoder_recon_loss_weight

    def _build_dynamics(self, config: Genie2Config) -> None:
        """The transformer over (action token, codes) per frame, and the behavioural-cloning head
        that predicts actions[:, t + 1] from the state after frame t."""
        dim, num_actions = config.dim, config.num_actions
        self.latent_to_model = nn.Linear(config.dim_latent, dim)
        self.to_logits = nn.Linear(dim, config.vq_codebook_size)  # a classifier over code ids
        self.action_embed = ActionEmbed(dim, num_actions)
        transformer = Transformer(
            dim, config.depth, config.heads, config.attn_dim_head, rotary_axes=2, **config.transformer_kwargs
        )
        self.num_meta_tokens = config.num_meta_tokens
        self.decoding, self.decode_steps, self.raster = config.decoding, config.decode_steps, config.raster
        self.mask_token = nn.Parameter(torch.randn(dim) * 0.02) if config.decoding == "parallel" else None
        self.transformer = MetaTokenWrapper(transformer, self.num_meta_tokens) if self.num_meta_tokens else transformer
        self.has_action_loss = exists(num_actions) and config.action_autoregressive_loss_weight > 0
        self.action_autoregressive_loss_weight = config.action_autoregressive_loss_weight
        self.to_action_pred = None
        if self.has_action_loss and config.allow_multiple_actions:
            kwargs = config.action_transformer_kwargs
            self.to_action_pred = MultiActionHead(dim, num_actions, config.max_num_actions, kwargs)
        elif self.has_action_loss:
            self.to_action_pred = nn.Linear(dim, num_actions, bias=False)
        self.outcomes = OutcomeHeads(dim) if config.learn_rewards else None  # rewards and episode ends
        self.outcome_loss_weight = config.outcome_loss_weight
        self.register_buffer("zero", torch.tensor(0.0), persistent=False)

    @staticmethod
    def _check_modules(config: Genie2Config, encoder, decoder, tokenizer) -> None:
        """A tokenizer replaces encoder, decoder and temporal convs, and must match the config."""
        if not exists(tokenizer):
            return
        if exists(encoder) or exists(decoder) or config.add_temporal_convs:
            raise InputError("a tokenizer brings its own encoder, decoder and quantizer; do not pass them too")
        if tokenizer.config.dim_latent != config.dim_latent or tokenizer.num_codes != config.vq_codebook_size:
            raise InputError(
                f"the tokenizer has dim_latent {tokenizer.config.dim_latent} and {tokenizer.num_codes} codes; "
                "pass the same dim_latent and vq_codebook_size, or use Genie2.from_tokenizer"
            )

    @classmethod
    def from_tokenizer(cls, tokenizer: nn.Module, dim: int, **kwargs) -> Genie2:
        """A world model over a trained tokenizer's codes: frames in, frames out."""
        return cls(
            dim, tokenizer.config.dim_latent, vq_codebook_size=tokenizer.num_codes, tokenizer=tokenizer, **kwargs
        )

    def checkpoint_config(self) -> dict:
        """config.json: the Genie2Config, and the tokenizer's config (null without one)."""
        if self.has_custom_modules:
            raise InputError("a Genie2 with custom encoder/decoder modules cannot be saved as config; use a tokenizer")
        return dict(asdict(self.config), tokenizer=asdict(self.tokenizer.config) if exists(self.tokenizer) else None)

    @classmethod
    def from_checkpoint_config(cls, config: dict, folder: Path) -> Genie2:
        """A world model (with its tokenizer) for a saved config."""
        from genie2.tokenizer.model import Tokenizer, TokenizerConfig

        tokenizer_config = config.pop("tokenizer", None)
        tokenizer = Tokenizer(config_from_dict(TokenizerConfig, tokenizer_config)) if tokenizer_config else None
        if "max_context_frames" not in config and (folder / "training.json").is_file():  # saved before it was config
            config["max_context_frames"] = json.loads((folder / "training.json").read_text())["clip_frames"] - 1
        return cls(config=config_from_dict(Genie2Config, config), tokenizer=tokenizer)

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

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the transformer computes in: its float parameters' (int8 linear layers hold none)."""
        return next(self.transformer.parameters()).dtype

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
        latents = rearrange(latents, pattern, b=b).to(self.dtype)
        if latents.shape[-1] != self.dim_latent:
            raise InputError(
                f"encoder latents have {latents.shape[-1]} features, dim_latent is {self.dim_latent}; "
                "if your encoder returns channels first, set latent_channel_first=True"
            )
        return latents

    def encode_state(self, state: Tensor, mask: Tensor | None = None, return_recon_loss: bool = False):
        """Quantize a video (b c t h w): (latents b t h w d, codes b t h w, commit loss)[, recon loss].
        `mask` (b t) marks real frames; padded ones do not touch the losses. With a tokenizer,
        `state` holds RGB frames (b 3 t H W, uint8 or float in [0, 1]) and the losses are zero (it is frozen)."""
        if exists(self.tokenizer):
            quantized, codes = self._tokenize(state)
            return (quantized, codes, self.zero, self.zero) if return_recon_loss else (quantized, codes, self.zero)
        latents = self._to_latents(state)
        b, t, h, w, _ = latents.shape
        orig_latents = latents
        latents = apply_temporal(self.pre_vq_transform, latents)
        token_mask = repeat(mask, "b t -> b (t s)", s=h * w) if exists(mask) else None
        quantized, codes, commit_loss = self.vq(rearrange(latents, "b t h w d -> b (t h w) d"), mask=token_mask)
        quantized = rearrange(quantized, "b (t h w) d -> b t h w d", t=t, h=h)
        codes = rearrange(codes, "b (t h w) -> b t h w", t=t, h=h)
        if not return_recon_loss:
            return quantized, codes, commit_loss
        recon_loss = self.zero
        if self.need_recon_loss:
            error = (apply_temporal(self.post_vq_transform, quantized) - orig_latents) ** 2
            weight = (
                rearrange(mask, "b t -> b t 1 1 1").float() if exists(mask) else torch.ones_like(error[..., :1, :1, :1])
            )
            recon_loss = (error * weight).sum() / (weight.sum() * h * w * self.dim_latent).clamp(min=1.0)
        return quantized, codes, commit_loss, recon_loss

    @torch.no_grad()
    def _tokenize(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """RGB frames (b 3 t H W, uint8 or float in [0, 1]) through the frozen tokenizer: quantized
        latents (b t h w d) and codes (b t h w)."""
        size = self.tokenizer.config.frame_size
        if (
            not isinstance(frames, Tensor)
            or frames.ndim != 5
            or frames.shape[1] != 3
            or frames.shape[-2:] != (size, size)
        ):
            shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
            raise InputError(
                f"state must be RGB frames (b, 3, t, {size}, {size}), uint8 or float in [0, 1], got {shape}"
            )
        with frozen(self.tokenizer.quantizer):  # uint8 or float: the tokenizer checks which
            latents = self.tokenizer.encode_latents(rearrange(frames, "b c t h w -> b t h w c"))
            quantized, codes, _ = self.tokenizer.quantize(latents)
        return quantized.to(self.dtype), codes

    def codes_to_latents(self, codes: Tensor) -> Tensor:
        """Codebook latents (... d) for codes (...)."""
        if exists(self.tokenizer):
            return self.tokenizer.codes_to_latents(codes).to(self.dtype)
        return self.vq.get_output_from_indices(codes)

    def decode_codes(self, codes: Tensor) -> Tensor:
        """Decode codes (b t h w) to a video through the temporal transform and the decoder
        (with a tokenizer: RGB frames in [0, 1], b 3 t H W)."""
        if exists(self.tokenizer):
            return rearrange(self.tokenizer.decode(codes), "b t h w c -> b c t h w")
        latents = apply_temporal(self.post_vq_transform, self.codes_to_latents(codes))
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

    def frame_positions(self, num_frames: int, num_codes: int, start: int = 0) -> Tensor:
        """Positions of whole frames start..start + num_frames - 1, each action token then codes."""
        k = num_codes + 1
        frames = repeat(torch.arange(start, start + num_frames, device=self.device), "t -> (t k)", k=k)
        slots = repeat(torch.arange(k, device=self.device), "k -> (t k)", t=num_frames)
        return torch.stack((frames, slots), dim=-1).float()  # n 2: (frame, slot) per token

    def frame_tokens(self, latents: Tensor, action_tokens: Tensor, hidden: Tensor | None = None) -> Tensor:
        """Interleave action tokens (b t d) before code latents (b t h w d_latent): b (t k) d.
        With add_action_to_codes each code token also gets its frame's action token added; the
        codes `hidden` marks (b t s, parallel mode) enter as the mask token."""
        codes = self.latent_to_model(rearrange(latents, "b t h w d -> b t (h w) d"))
        if exists(hidden):
            codes = torch.where(rearrange(hidden, "b t s -> b t s 1"), self.mask_token.to(codes.dtype), codes)
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
        return order_actions(actions, ascending=sort_actions)

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
        hidden: Tensor | None = None,
        rewards: Tensor | None = None,
        terminated: Tensor | None = None,
    ):
        """Loss `(total, (state_autoregressive, commit, action))`, or with return_loss=False the
        logits `b (t h w) l` where logits[:, i] is the distribution of code i given all before it
        (raster) or given the frames before and the codes of its frame not `hidden` (b t h w bool;
        parallel mode, where training hides a random share of each frame's codes by default). With
        `rewards` and `terminated` (b t; learn_rewards) the parts end with the outcome heads' loss."""
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
        hidden, mask = hidden_codes(self.decoding, hidden, (b, t, h * w), return_loss, self.device), None
        if self.decoding == "parallel":
            mask = frame_mask(t, h * w + 1, self.num_meta_tokens, self.device)
        tokens = self.frame_tokens(latents, self.action_embed(actions, drop_actions, shape=(b, t)), hidden)
        features = self.transformer(tokens, pos=self.frame_positions(t, h * w), mask=mask)
        features = rearrange(features, "b (t k) d -> b t k d", t=t)
        # raster: slot k (the action token, then codes) predicts code k; parallel: each code slot its own code
        logits = self.code_logits(features[:, :, :-1] if self.decoding == "raster" else features[:, :, 1:])

        if not return_loss:
            return rearrange(logits, "b t s l -> b (t s) l")

        labels = rearrange(codes, "b t h w -> b t (h w)")
        if exists(hidden):  # parallel mode learns the hidden codes only
            labels = labels.masked_fill(~hidden, -1)
        if exists(time_mask):
            labels = labels.masked_fill(~rearrange(time_mask, "b t -> b t 1"), -1)
        state_loss = masked_cross_entropy(logits, labels)
        action_loss = action_loss_of(self.to_action_pred, features[:, :, -1], actions, time_mask)
        total_loss = state_loss + commit_loss * self.vq_commit_loss_weight + recon_loss * self.vq_recon_loss_weight
        total_loss = total_loss + action_loss * self.action_autoregressive_loss_weight
        parts = (state_loss, commit_loss, action_loss)
        return with_outcomes(self, total_loss, parts, features[:, :, -1], rewards, terminated, time_mask)


Genie2.__init__.__signature__ = constructor_signature(("config", "encoder", "decoder", "tokenizer"))
