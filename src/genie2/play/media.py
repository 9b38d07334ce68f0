"""Frames as bytes for the browser: PNG, the raw binary frame message, GIF and MP4 recordings."""

from __future__ import annotations

import io
import json

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from genie2.helpers import to_uint8


def frame_pixels(frame: torch.Tensor) -> np.ndarray:
    """A session frame (c h w in [0, 1]) as uint8 h w 3."""
    return rearrange(to_uint8(frame), "c h w -> h w c").cpu().numpy()


def png_bytes(frame: np.ndarray) -> bytes:
    """A uint8 frame (h w 3) as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def raw_frame(header: dict, frame: np.ndarray) -> bytes:
    """A binary frame message: header length (uint32 little-endian), JSON header, RGB bytes."""
    text = json.dumps(dict(header, size=frame.shape[0])).encode()
    return len(text).to_bytes(4, "little") + text + np.ascontiguousarray(frame).tobytes()


def encode_video(frames: list[np.ndarray], kind: str, fps: int = 10) -> bytes:
    """Frames (uint8 h w 3) as GIF or MP4 bytes, upscaled to about 256 px with nearest pixels so
    they stay sharp."""
    import imageio.v3 as iio

    scale = max(1, 256 // frames[0].shape[0])
    big = [frame.repeat(scale, 0).repeat(scale, 1) for frame in frames]
    if kind == "gif":
        return iio.imwrite("<bytes>", big, extension=".gif", duration=1000 / fps, loop=0)
    return iio.imwrite("<bytes>", big, extension=".mp4", plugin="pyav", codec="libx264", fps=fps)
