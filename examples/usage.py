"""The README's usage example: train one step of a world model and dream 16 frames."""

import time

import torch

from genie2 import Genie2


def main() -> None:
    """Build the reference-sized model, take one loss step, then generate a rollout."""
    torch.manual_seed(0)
    genie = Genie2(dim=512, depth=12, dim_latent=768, num_actions=256, latent_channel_first=True, is_video_enc_dec=True)
    print(f"Genie2 with {sum(p.numel() for p in genie.parameters()) / 1e6:.1f}M parameters")

    video = torch.randn(2, 768, 3, 2, 2)
    actions = torch.randint(0, 256, (2, 3))
    loss, (state_loss, commit_loss, action_loss) = genie(video, actions=actions)
    loss.backward()
    print(
        f"loss {loss.item():.3f} (codes {state_loss.item():.3f}, commit {commit_loss.item():.3f}, "
        f"actions {action_loss.item():.3f})"
    )

    start = time.perf_counter()
    generated_video = genie.generate(video[:, :, 0], num_frames=16)
    seconds = time.perf_counter() - start
    assert generated_video.shape == (2, 768, 16 + 1, 2, 2)
    print(f"generated {tuple(generated_video.shape)} in {seconds:.2f}s ({2 * 16 / seconds:.1f} frames/s)")


if __name__ == "__main__":
    main()
