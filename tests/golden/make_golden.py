"""Write the golden outputs tests/test_golden.py compares against: `python tests/golden/make_golden.py`.

Run once, on the code the golden files pin (2026-12-01, before issue 16 reshaped the house), with
`--checkpoints` to also write the small checkpoints that code saved. Regenerating the outputs
later would make the test pass by definition: do it only when a change is meant to alter them,
and say so in the commit. `--shipped` rewrites only the shipped world's entries (when a new world
ships), keeping those of the pinned checkpoints as they are.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import genie2
from genie2 import Genie2, Tokenizer

HERE = Path(__file__).parent
WORLD, REFERENCE = HERE / "world-2026-12-01", HERE / "reference-2026-12-01"


def write_checkpoints() -> None:
    """A tiny world over a tiny tokenizer (several keys at once) and a reference-style Genie2 (its
    own VQ, temporal convs), each freshly initialised from a fixed seed and saved."""
    torch.manual_seed(0)
    tokenizer = Tokenizer(frame_size=16, channels=(8, 16), res_blocks=1, dim_latent=8, codebook_size=32)
    world = Genie2.from_tokenizer(
        tokenizer,
        32,
        num_actions=5,
        depth=2,
        heads=2,
        attn_dim_head=16,
        num_meta_tokens=2,
        allow_multiple_actions=True,
        max_num_actions=3,
        max_context_frames=3,
    )
    world.save_pretrained(WORLD)
    reference = Genie2(
        dim=32,
        dim_latent=8,
        num_actions=4,
        depth=2,
        heads=2,
        attn_dim_head=16,
        vq_codebook_size=16,
        num_meta_tokens=2,
        latent_channel_first=True,
        add_temporal_convs=True,
        temporal_conv_kernel_size=3,
        max_context_frames=4,
    )
    reference.save_pretrained(REFERENCE)


def outputs(model: Genie2, frames: torch.Tensor, actions: torch.Tensor) -> dict:
    """What a world model computes on fixed inputs: codes, logits, a greedy and a sampled rollout."""
    out = {}
    with torch.no_grad():
        _, codes, _ = model.encode_state(frames)
        out["codes"] = codes
        out["logits"] = model(state_codes=codes, actions=actions, return_loss=False)
        out["decoded"] = model.decode_codes(codes)
        out["greedy"] = model.generate(frames[:, :, 0], 4, actions=actions[:, :5], temperature=0.0)
        generator = torch.Generator().manual_seed(0)
        out["sampled"] = model.generate(frames[:, :, 0], 4, actions=actions[:, :5], generator=generator)
        generator = torch.Generator().manual_seed(1)
        out["guided"] = model.generate(frames[:, :, 0], 3, actions=actions[:, :4], cond_scale=2.0, generator=generator)
    return out


def inputs(model: Genie2, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames (1 c 5 H W) and actions (1 5 a) for a model, from a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    if model.tokenizer is not None:
        size = model.tokenizer.config.frame_size
        frames = torch.rand(1, 3, 5, size, size, generator=generator)
    else:
        frames = torch.randn(1, model.dim_latent, 5, 2, 2, generator=generator)
    keys = model.max_num_actions
    actions = torch.randint(-1, model.num_actions, (1, 5, keys), generator=generator)
    return frames, actions


def shipped_inputs(world) -> tuple[torch.Tensor, torch.Tensor]:
    """The shipped world's first start frame repeated (1 3 5 H W) and a fixed key sequence."""
    frame = torch.from_numpy(world.start_frames[0]).float() / 255
    frames = frame.permute(2, 0, 1)[None, :, None].expand(-1, -1, 5, -1, -1).contiguous()
    return frames, torch.tensor([[[-1], [0], [2], [2], [1]]])


def main() -> None:
    if "--checkpoints" in sys.argv:
        write_checkpoints()
    path = HERE / "outputs.safetensors"
    world = genie2.load()
    tensors = {f"shipped/{name}": value for name, value in outputs(world.model, *shipped_inputs(world)).items()}
    if "--shipped" in sys.argv:  # a new world ships: the pinned checkpoints' entries stay as they were
        tensors |= {k: v for k, v in load_file(str(path)).items() if not k.startswith("shipped/")}
    else:
        for tag, folder, seed in (("world", WORLD, 1), ("reference", REFERENCE, 2)):
            model = Genie2.from_pretrained(folder)
            for name, value in outputs(model, *inputs(model, seed)).items():
                tensors[f"{tag}/{name}"] = value
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


if __name__ == "__main__":
    main()
