"""Play a world model in the browser: a local FastAPI server streams dreamed frames over a WebSocket.

Routes:
    GET /                               the page (plain HTML and JS in play/static, no build step)
    GET /api/info                       action names, keymap, start frames, frame size, limits
    GET /api/start/{i}.png              a start frame
    WS  /ws                             one play session per connection (messages below)
    GET /api/recording/{token}.gif|mp4  the frames the session recorded

Messages, JSON text. The client sends:
    {"type": "reset", "start": i}               start over from start frame i
    {"type": "reset", "image": "<base64>"}      ... or from an uploaded PNG/JPEG, resized to the model's frames
    {"type": "step", "keys": [ids], "id": n}    dream the next frame; [] means no action (the model decides)
    {"type": "settings", "temperature": t, "cond_scale": s}
    {"type": "record", "on": true|false}        start (clearing the old recording) or stop recording
The server answers:
    {"type": "hello", "token": ...}             the session's token, for the recording's URL
    {"type": "frame", "image": "<base64 PNG>", "index": n, "id": n, "compute_ms": ms, "recorded": n}
    {"type": "error", "message": ...}           the message was refused; the session goes on

Each connection gets its own WorldModelSession (its own cache); the model is shared, and one
lock lets one session decode at a time. Decoding runs in a worker thread, so the server keeps
answering while a frame is dreamed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, Response
from PIL import Image, UnidentifiedImageError

from genie2.evaluate import World

STATIC = Path(__file__).parent / "static"
MAX_RECORDED_FRAMES = 3000  # 5 minutes at 10 frames/s

# KeyboardEvent.key values tried first for actions whose names say where they go
NAMED_KEYS = {
    "left": "ArrowLeft",
    "right": "ArrowRight",
    "forward": "ArrowUp",
    "up": "ArrowUp",
    "down": "ArrowDown",
    "backward": "ArrowDown",
    "fire": " ",
    "attack": " ",
}
SPARE_KEYS = list("1234567890qwertyuiopasdfghjklzxcvbnm")


def keymap(action_names: list[str]) -> dict[str, int]:
    """Keyboard keys (KeyboardEvent.key) for each action: arrows and space for actions named like
    them (left, right, forward/up, down, fire), then digits and letters in order."""
    keys: dict[str, int] = {}
    spare = iter(SPARE_KEYS)
    for action, name in enumerate(action_names):
        key = NAMED_KEYS.get(name.strip().lower())
        if key is None or key in keys:
            key = next((k for k in spare if k not in keys), None)
            if key is None:
                break  # more actions than keys: the rest are left out of the keymap
        keys[key] = action
    return keys


def png_bytes(frame: np.ndarray) -> bytes:
    """A uint8 frame (h w 3) as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def to_uint8(frame: torch.Tensor) -> np.ndarray:
    """A session frame (c h w in [0, 1]) as uint8 h w 3."""
    return (frame.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


@dataclass
class PlayerConfig:
    """How the server plays: sampling defaults and limits."""

    temperature: float = 0.0
    cond_scale: float = 1.0
    max_sessions: int = 4
    max_upload_bytes: int = 2_000_000
    max_message_bytes: int = 4_000_000
    compile: bool = False

    def __post_init__(self):
        for name in ("max_sessions", "max_upload_bytes", "max_message_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclass
class Player:
    """One browser tab: its session, its frame count and its recording."""

    session: object
    token: str
    index: int = 0
    recording: bool = False
    frames: list = field(default_factory=list)


class BadMessage(ValueError):
    """A client message the server refuses (the text goes back to the client)."""


def _number(message: dict, name: str, low: float, high: float) -> float | None:
    """An optional number field within [low, high]."""
    value = message.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise BadMessage(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def create_app(
    world: World,
    start_frames: np.ndarray,
    action_names: list[str] | None = None,
    config: PlayerConfig | None = None,
):
    """The FastAPI app playing `world` from `start_frames` (uint8 n h w 3)."""
    config = config or PlayerConfig()
    model = world.model
    size = model.tokenizer.config.frame_size
    start_frames = np.asarray(start_frames)
    if start_frames.dtype != np.uint8 or start_frames.ndim != 4 or start_frames.shape[1:] != (size, size, 3):
        raise ValueError(f"start frames must be uint8 (n, {size}, {size}, 3), got {start_frames.shape}")
    if model.num_actions is None:
        raise ValueError("the browser player needs a world model with actions (num_actions is None)")
    names = list(action_names or [str(i) for i in range(model.num_actions)])
    if len(names) != model.num_actions:
        raise ValueError(f"{len(names)} action names for a model with {model.num_actions} actions")
    players: dict[str, Player] = {}
    lock = threading.Lock()  # one decode at a time: sessions share the model (and the cores)
    app = FastAPI(title="genie2 player")

    @app.get("/")
    def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/player.js")
    def script():
        return FileResponse(STATIC / "player.js", media_type="text/javascript")

    @app.get("/api/info")
    def info():
        return dict(
            action_names=names,
            keymap=keymap(names),
            multiple_actions=bool(model.allow_multiple_actions),
            max_num_actions=int(model.max_num_actions),
            start_frames=len(start_frames),
            frame_size=size,
            temperature=config.temperature,
            cond_scale=config.cond_scale,
            max_upload_bytes=config.max_upload_bytes,
            sessions=len(players),
            max_sessions=config.max_sessions,
        )

    @app.get("/api/start/{index}.png")
    def start_png(index: int):
        if not 0 <= index < len(start_frames):
            raise HTTPException(404, f"start frame {index} does not exist (there are {len(start_frames)})")
        return Response(png_bytes(start_frames[index]), media_type="image/png")

    @app.get("/api/recording/{token}.{kind}")
    def recording(token: str, kind: str):
        player = players.get(token)
        if player is None:
            raise HTTPException(404, "no such session: recordings live as long as their tab's connection")
        if kind not in ("gif", "mp4"):
            raise HTTPException(404, "recordings are .gif or .mp4")
        if not player.frames:
            raise HTTPException(409, "nothing recorded yet: press record, play, then download")
        return Response(encode_video(player.frames, kind), media_type=f"image/{kind}" if kind == "gif" else "video/mp4")

    def decode_upload(text: str) -> np.ndarray:
        """An uploaded image (base64, optionally a data: URL) as a model-sized uint8 frame."""
        if not isinstance(text, str):
            raise BadMessage("image must be a base64 string")
        text = text.split(",", 1)[1] if text.startswith("data:") else text
        if len(text) * 3 // 4 > config.max_upload_bytes:
            raise BadMessage(f"the image is over the {config.max_upload_bytes:,}-byte upload limit")
        try:
            image = Image.open(io.BytesIO(base64.b64decode(text, validate=True)))
            image = image.convert("RGB").resize((size, size), Image.Resampling.BOX)
        except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as error:
            raise BadMessage(f"could not read the image: send a PNG or JPEG ({error})") from error
        return np.array(image, dtype=np.uint8)  # a writable copy

    def handle(player: Player | None, message: dict, token: str) -> tuple[Player, np.ndarray | None, float]:
        """Apply one message under the model lock; returns the player, a new frame or None, and ms."""
        kind = message.get("type")
        start = time.perf_counter()
        if kind == "reset":
            if "image" in message:
                frame = decode_upload(message["image"])
            else:
                index = message.get("start", 0)
                if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(start_frames):
                    raise BadMessage(f"start must be an int in [0, {len(start_frames)}), got {index!r}")
                frame = start_frames[index]
            settings = player.session.sampling if player else config
            with lock:
                session = world.session(
                    frame,
                    temperature=settings.temperature,
                    cond_scale=settings.cond_scale,
                    compile=config.compile,
                )
                shown = to_uint8(session.current_frame())
            if player is None:
                player = Player(session, token)
            player.session, player.index = session, 0
            return player, shown, (time.perf_counter() - start) * 1000
        if player is None:
            raise BadMessage("send a reset message first")
        if kind == "step":
            keys = message.get("keys", [])
            if not isinstance(keys, list) or not all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
                raise BadMessage(f"keys must be a list of action ids, got {keys!r}")
            bad = [k for k in keys if not 0 <= k < model.num_actions]
            if bad:
                raise BadMessage(f"action ids must be in [0, {model.num_actions}), got {bad}")
            keys = sorted(set(keys))
            if len(keys) > 1 and not model.allow_multiple_actions:
                keys = keys[-1:]  # one action per step: keep one of the keys held
            keys = keys[: model.max_num_actions]
            with lock:
                frame = to_uint8(player.session.step(keys or None))
            player.index += 1
            return player, frame, (time.perf_counter() - start) * 1000
        if kind == "settings":
            temperature = _number(message, "temperature", 0.0, 5.0)
            cond_scale = _number(message, "cond_scale", 0.0, 10.0)
            with lock:
                player.session.configure(temperature=temperature, cond_scale=cond_scale)
            return player, None, 0.0
        if kind == "record":
            on = message.get("on")
            if not isinstance(on, bool):
                raise BadMessage(f"record needs on: true or false, got {on!r}")
            if on:
                player.frames = []
            player.recording = on
            return player, None, 0.0
        raise BadMessage(f"unknown message type {kind!r}: use reset, step, settings or record")

    @app.websocket("/ws")
    async def play(socket: WebSocket):
        await socket.accept()
        if len(players) >= config.max_sessions:
            await socket.send_json(
                dict(type="error", message=f"the server is full ({config.max_sessions} sessions); try again later")
            )
            await socket.close(code=1013)
            return
        token, player = secrets.token_urlsafe(16), None
        players[token] = None  # holds the place, so the limit counts this tab
        await socket.send_json(dict(type="hello", token=token))
        try:
            while True:
                text = await socket.receive_text()
                try:
                    if len(text) > config.max_message_bytes:
                        raise BadMessage(f"message over the {config.max_message_bytes:,}-byte limit")
                    try:
                        message = json.loads(text)
                    except json.JSONDecodeError as error:
                        raise BadMessage(f"messages are JSON objects: {error}") from error
                    if not isinstance(message, dict):
                        raise BadMessage("messages are JSON objects with a 'type'")
                    player, frame, ms = await asyncio.to_thread(handle, player, message, token)
                    players[token] = player
                except BadMessage as error:
                    await socket.send_json(dict(type="error", message=str(error)))
                    continue
                if frame is None:
                    continue
                if player.recording and len(player.frames) < MAX_RECORDED_FRAMES:
                    player.frames.append(frame)
                reply = dict(type="frame", index=player.index, compute_ms=round(ms, 2), recorded=len(player.frames))
                reply.update(id=message.get("id"), image=base64.b64encode(png_bytes(frame)).decode("ascii"))
                await socket.send_json(reply)
        except WebSocketDisconnect:
            pass
        finally:
            players.pop(token, None)

    app.state.players = players
    return app


def encode_video(frames: list[np.ndarray], kind: str, fps: int = 10) -> bytes:
    """Frames (uint8 h w 3) as GIF or MP4 bytes, upscaled 4x with nearest pixels so they stay sharp."""
    import imageio.v3 as iio

    scale = max(1, 256 // frames[0].shape[0])
    big = [frame.repeat(scale, 0).repeat(scale, 1) for frame in frames]
    if kind == "gif":
        return iio.imwrite("<bytes>", big, extension=".gif", duration=1000 / fps, loop=0)
    return iio.imwrite("<bytes>", big, extension=".mp4", plugin="pyav", codec="libx264", fps=fps)


def serve(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, ws_max_size=PlayerConfig.max_message_bytes)


def warm_up(world: World, frame: np.ndarray, config: PlayerConfig, steps: int = 2) -> None:
    """Run a few frames first, so the first player does not wait for compilation."""
    session = world.session(frame, temperature=config.temperature, cond_scale=1.0, compile=config.compile)
    for _ in range(steps):
        session.step(0)
