"""Play a world model in the browser: a local FastAPI server streams dreamed frames over a WebSocket.

Routes:
    GET /, /player.js                   the page (plain HTML and JS in play/static, no build step)
    GET /api/info                       action names, keymap, start frames, frame size, limits
    GET /api/start/{i}.png              a start frame
    WS  /ws                             one play session per connection (messages below)
    WS  /ws?frames=raw                  the same, frames as raw pixels (what the page uses)
    GET /api/recording/{token}.gif|mp4  the frames the session recorded (while it is connected)

Messages, JSON text; any message may carry an "id", echoed in its reply. The client sends:
    {"type": "reset", "start": i}               start over from start frame i (settings are kept)
    {"type": "reset", "image": "<base64>"}      ... or from an uploaded PNG/JPEG, resized to the model's frames
    {"type": "step", "keys": [ids]}             dream the next frame; [] presses no key (like -1 in training data)
    {"type": "settings", "temperature": t, "cond_scale": s}     either or both
    {"type": "record", "on": true|false}        start (clearing the old recording) or stop recording
    {"type": "ping"}                            keep a quiet session alive (answered without queueing for the model)
The server answers:
    {"type": "hello", "token": ...}             first: the session's token, for the recording's URL
    {"type": "frame", "image": "<base64 PNG>", "index": n, "id": n, "compute_ms": ms, "recorded": n}
                                                to each reset and step
    {"type": "error", "message": ..., "id": n}  the message was refused or failed; the session goes on
    {"type": "pong", "id": n}                   to each ping
With frames=raw a frame comes as one binary message instead: 4 bytes (little-endian uint32) giving
the header's length, the header (the frame message as JSON, without "image", with "size"), then the
frame's pixels (size x size x 3 bytes, RGB, row by row). No PNG to encode, no base64 to decode.
A tab over the session limit gets an error with "full": true, then the socket closes (code 1013).
A connection that sends nothing for `idle_timeout` seconds (default 300; time spent dreaming its own
frames does not count) gets an error with "idle": true, then the socket closes (code 1000), its slot
already free. The page pings while it is visible, so a paused tab keeps its session; a hidden tab sends
nothing, is closed once idle, and reconnects (a new session from its start frame) when shown again.

Only pages of this server's own origin may open /ws: a handshake whose Origin header is not the scheme,
host and port of its Host header, nor one of `allow_origins`, is refused before it takes a slot (closed
with code 1008: an HTTP 403). Otherwise any web page the user visits could play on their CPU. Browsers
always send Origin; a request without one (a Python script) is let in, as it could set any Origin anyway.
A server listening on loopback also answers only requests whose Host is a loopback name (`loopback_hosts`):
otherwise a page whose domain is re-pointed at 127.0.0.1 (DNS rebinding) would be of "its own" origin.

Each connection gets its own WorldModelSession (its own cache); the model is shared, and one
lock lets one session decode at a time. Decoding runs off the event loop, so the server keeps
answering while a frame is dreamed: under `serve` on the main thread (uvicorn runs in another),
in tests on a one-thread pool.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
import math
import queue
import secrets
import threading
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, Response
from PIL import Image, UnidentifiedImageError

from genie2.errors import InputError
from genie2.helpers import to_uint8
from genie2.model.session import WorldModelSession
from genie2.world import World

STATIC = Path(__file__).parent / "static"
MAX_RECORDED_FRAMES = 1200  # 2 minutes at 10 frames/s
MAX_UPLOAD_PIXELS = 4096 * 4096
DEFAULT_PORTS = {"http": 80, "https": 443}
logger = logging.getLogger("genie2.play")

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


def raw_frame(header: dict, frame: np.ndarray) -> bytes:
    """A binary frame message: header length (uint32 little-endian), JSON header, RGB bytes."""
    text = json.dumps(dict(header, size=frame.shape[0])).encode()
    return len(text).to_bytes(4, "little") + text + np.ascontiguousarray(frame).tobytes()


def origin_key(origin: str) -> tuple[str, str, int] | None:
    """An origin (http[s]://host[:port]) as (scheme, host, port), or None if it is not one."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:  # a port that is not a number in [0, 65535], a bad IPv6 address
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.username is not None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def frame_pixels(frame: torch.Tensor) -> np.ndarray:
    """A session frame (c h w in [0, 1]) as uint8 h w 3."""
    return to_uint8(frame).permute(1, 2, 0).cpu().numpy()


@dataclass
class PlayerConfig:
    """How the server plays: sampling defaults and limits."""

    temperature: float = 0.0
    cond_scale: float = 1.0
    max_sessions: int = 4
    max_upload_bytes: int = 2_000_000
    max_message_bytes: int = 4_000_000
    compile: bool = False
    idle_timeout: float = 300.0  # seconds without a message before a connection is closed
    allow_origins: list[str] = field(default_factory=list)  # other origins whose pages may play; "*": any

    def __post_init__(self):
        for name in ("max_sessions", "max_upload_bytes", "max_message_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive int, got {value!r}")
        timeout = self.idle_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise InputError(f"idle_timeout must be a positive number of seconds, got {timeout!r}")
        if isinstance(self.allow_origins, str) or not isinstance(self.allow_origins, (list, tuple)):
            raise InputError(f"allow_origins must be a list of origins, got {self.allow_origins!r}: pass a list")
        for origin in self.allow_origins:
            if origin != "*" and (not isinstance(origin, str) or origin_key(origin) is None):
                raise InputError(
                    "allow_origins entries are origins like https://example.com (http or https, a host, an optional "
                    f"port, no path) or * for any, got {origin!r}"
                )


@dataclass
class Player:
    """One browser tab: its session, its frame count and its recording."""

    session: WorldModelSession
    token: str
    index: int = 0
    recording: bool = False
    frames: list[np.ndarray] = field(default_factory=list)


class BadMessage(InputError):
    """A client message the server refuses (the text goes back to the client)."""


def _number(message: dict, name: str, low: float, high: float) -> float | None:
    """An optional number field within [low, high]."""
    value = message.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise BadMessage(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


class PlayServer:
    """The state behind the routes: the world, its start frames, and one Player per open tab.
    Messages are applied by `handle` (on `executor`, off the event loop); `lock` lets one session decode at a
    time, since sessions share the model and the cores."""

    def __init__(self, world: World, start_frames: np.ndarray, action_names: list[str] | None, config: PlayerConfig):
        model = world.model
        self.size = model.tokenizer.config.frame_size
        start_frames = np.asarray(start_frames)
        if (
            start_frames.dtype != np.uint8
            or start_frames.ndim != 4
            or start_frames.shape[1:] != (self.size,) * 2 + (3,)
        ):
            raise InputError(f"start frames must be uint8 (n, {self.size}, {self.size}, 3), got {start_frames.shape}")
        if model.num_actions is None:
            raise InputError("the browser player needs a world model with actions (num_actions is None)")
        names = list(action_names or [str(i) for i in range(model.num_actions)])
        if len(names) != model.num_actions:
            raise InputError(f"{len(names)} action names for a model with {model.num_actions} actions")
        self.world, self.model, self.start_frames, self.names, self.config = world, model, start_frames, names, config
        self.players: dict[str, Player | None] = {}  # None: a tab that has not reset yet
        self.lock = threading.Lock()
        self.allowed = {origin_key(origin) for origin in config.allow_origins if origin != "*"}
        self.refused_origins: set[str] = set()  # logged once each
        # model calls run one at a time, off the event loop; `serve` moves them to the main thread
        self.executor: Executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genie2-model")

    def info(self) -> dict:
        """What the page needs to set itself up."""
        return dict(
            action_names=self.names,
            keymap=keymap(self.names),
            multiple_actions=bool(self.model.allow_multiple_actions),
            max_num_actions=int(self.model.max_num_actions),
            start_frames=len(self.start_frames),
            frame_size=self.size,
            temperature=self.config.temperature,
            cond_scale=self.config.cond_scale,
            max_upload_bytes=self.config.max_upload_bytes,
            max_recorded_frames=MAX_RECORDED_FRAMES,
            sessions=len(self.players),
            max_sessions=self.config.max_sessions,
            idle_timeout=self.config.idle_timeout,
        )

    def decode_upload(self, text) -> np.ndarray:
        """An uploaded image (base64, optionally a data: URL) as a model-sized uint8 frame."""
        if not isinstance(text, str):
            raise BadMessage("image must be a base64 string")
        text = text.split(",", 1)[1] if text.startswith("data:") else text
        if len(text) * 3 // 4 > self.config.max_upload_bytes:
            raise BadMessage(f"the image is over the {self.config.max_upload_bytes:,}-byte upload limit")
        try:
            image = Image.open(io.BytesIO(base64.b64decode(text, validate=True)))
            if image.width * image.height > MAX_UPLOAD_PIXELS:
                raise BadMessage(f"the image is {image.width}x{image.height}; send one of at most 4096x4096 pixels")
            image = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BOX)
        except (binascii.Error, UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as error:
            if isinstance(error, BadMessage):
                raise
            raise BadMessage(f"could not read the image: send a PNG or JPEG ({error})") from error
        return np.array(image, dtype=np.uint8)  # a writable copy

    def handle(self, token: str, message: dict) -> np.ndarray | None:
        """Apply one message of tab `token`; returns the new frame, if the message made one."""
        kind, player = message.get("type"), self.players.get(token)
        if kind == "reset":
            return self.reset(token, player, message)
        if player is None:
            raise BadMessage("send a reset message first")
        if kind == "step":
            keys = self.keys(message.get("keys", []))
            with self.lock:
                frame = frame_pixels(player.session.step(keys or None))
            player.index += 1
            return frame
        if kind == "settings":
            temperature = _number(message, "temperature", 0.0, 5.0)
            cond_scale = _number(message, "cond_scale", 0.0, 10.0)
            with self.lock:
                player.session.configure(temperature=temperature, cond_scale=cond_scale)
            return None
        if kind == "record":
            on = message.get("on")
            if not isinstance(on, bool):
                raise BadMessage(f"record needs on: true or false, got {on!r}")
            if on:
                player.frames = []
            player.recording = on
            return None
        raise BadMessage(f"unknown message type {kind!r}: use reset, step, settings, record or ping")

    def reset(self, token: str, player: Player | None, message: dict) -> np.ndarray:
        """Start the tab's session over from a start frame or an upload, keeping its settings."""
        if "image" in message:
            frame = self.decode_upload(message["image"])
        else:
            index = message.get("start", 0)
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self.start_frames):
                raise BadMessage(f"start must be an int in [0, {len(self.start_frames)}), got {index!r}")
            frame = self.start_frames[index]
        settings = player.session.sampling if player else self.config
        with self.lock:
            session = self.world.session(
                frame, temperature=settings.temperature, cond_scale=settings.cond_scale, compile=self.config.compile
            )
            shown = frame_pixels(session.current_frame())
        if player is None:
            self.players[token] = player = Player(session, token)
        player.session, player.index = session, 0
        return shown

    def keys(self, keys) -> list[int]:
        """Checked action ids of a step: sorted, at most what the model takes at once."""
        if not isinstance(keys, list) or not all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
            raise BadMessage(f"keys must be a list of action ids, got {keys!r}")
        bad = [k for k in keys if not 0 <= k < self.model.num_actions]
        if bad:
            raise BadMessage(f"action ids must be in [0, {self.model.num_actions}), got {bad}")
        keys = sorted(set(keys))
        if len(keys) > 1 and not self.model.allow_multiple_actions:
            keys = keys[-1:]  # one action per step: keep one of the keys held
        return keys[: self.model.max_num_actions]

    def parse(self, received: dict) -> dict:
        """A received WebSocket message as a JSON object, or BadMessage saying why not."""
        text = received.get("text")
        if text is None:
            raise BadMessage("messages are JSON text, not binary")
        if len(text) > self.config.max_message_bytes:
            raise BadMessage(f"message over the {self.config.max_message_bytes:,}-byte limit")
        try:
            message = json.loads(text)
        except json.JSONDecodeError as error:
            raise BadMessage(f"messages are JSON objects: {error}") from error
        if not isinstance(message, dict):
            raise BadMessage("messages are JSON objects with a 'type'")
        return message

    def origin_allowed(self, socket: WebSocket) -> bool:
        """Whether the handshake comes from this server's own page, an allowed origin, or no browser."""
        origin = socket.headers.get("origin")
        if origin is None or "*" in self.config.allow_origins:
            return True  # browsers always send Origin: without one it is a script, which could send any
        key = origin_key(origin)
        own = origin_key(f"{'https' if socket.url.scheme == 'wss' else 'http'}://{socket.headers.get('host', '')}")
        return key is not None and (key == own or key in self.allowed)

    async def admit(self, socket: WebSocket, frames: str) -> str | None:
        """Accept a tab's connection and give it a token, or refuse it (and return None)."""
        if not self.origin_allowed(socket):
            origin = socket.headers["origin"]
            if origin not in self.refused_origins:
                self.refused_origins.add(origin)
                logger.warning("refused a WebSocket from origin %r: to let it play, pass --allow-origin", origin)
            await socket.close(code=1008)  # before accepting: the handshake gets an HTTP 403
            return None
        await socket.accept()
        if frames not in ("png", "raw"):
            await socket.send_json(dict(type="error", message=f"frames must be png or raw, got {frames!r}"))
            await socket.close(code=1008)
            return None
        if len(self.players) >= self.config.max_sessions:
            full = f"the server is full ({self.config.max_sessions} sessions); try again later"
            await socket.send_json(dict(type="error", message=full, full=True))
            await socket.close(code=1013)
            return None
        token = secrets.token_urlsafe(16)
        self.players[token] = None  # holds the place, so the limit counts this tab
        await socket.send_json(dict(type="hello", token=token))
        return token

    async def serve_tab(self, socket: WebSocket, frames: str = "png") -> None:
        """One tab's connection: hello, then a reply (frame or error) to each message until it
        closes or goes idle. Frames go as base64 PNG in JSON (`frames=png`) or as raw binary (`frames=raw`)."""
        token = await self.admit(socket, frames)
        if token is None:
            return
        try:
            while True:
                try:
                    received = await asyncio.wait_for(socket.receive(), self.config.idle_timeout)
                except asyncio.TimeoutError:
                    self.players.pop(token, None)  # the slot is free before the tab hears of it
                    idle = f"closed after {self.config.idle_timeout:g} s without a message: reconnect to play"
                    await socket.send_json(dict(type="error", message=idle, idle=True))
                    await socket.close(code=1000)
                    break
                if received["type"] == "websocket.disconnect":
                    break
                await self.answer(socket, token, received, frames)
        except WebSocketDisconnect:
            pass
        finally:
            self.players.pop(token, None)

    async def answer(self, socket: WebSocket, token: str, received: dict, frames: str) -> None:
        """Apply one received message and send its reply: a frame, a pong, an error, or nothing."""
        message, start = {}, time.perf_counter()
        try:
            message = self.parse(received)
            if message.get("type") == "ping":  # on the event loop: a ping never queues for the model
                await socket.send_json(dict(type="pong", id=message.get("id")))
                return
            loop = asyncio.get_running_loop()
            frame = await loop.run_in_executor(self.executor, self.handle, token, message)
        except InputError as error:  # a refused message, or input the session refused: the client can fix it
            await socket.send_json(dict(type="error", message=str(error), id=message.get("id")))
            return
        except Exception as error:  # a failure inside the model: report it, keep the server up
            logger.exception("play message failed")
            text = f"the server could not do that ({type(error).__name__}: {error})"
            await socket.send_json(dict(type="error", message=text, id=message.get("id")))
            return
        if frame is None:
            return
        reply = self.frame_reply(self.players[token], frame, message, start)
        if frames == "raw":
            await socket.send_bytes(raw_frame(reply, frame))
        else:
            reply["image"] = base64.b64encode(png_bytes(frame)).decode("ascii")
            await socket.send_json(reply)

    def frame_reply(self, player: Player, frame: np.ndarray, message: dict, start: float) -> dict:
        """The frame message for a new frame, without its image (recorded first, if recording)."""
        if player.recording and len(player.frames) < MAX_RECORDED_FRAMES:
            player.frames.append(frame)
        return dict(
            type="frame",
            id=message.get("id"),
            index=player.index,
            compute_ms=round((time.perf_counter() - start) * 1000, 2),
            recorded=len(player.frames),
        )

    def recording(self, token: str, kind: str) -> Response:
        """A tab's recording as GIF or MP4."""
        player = self.players.get(token)
        if player is None:
            raise HTTPException(404, "no such session: recordings live as long as their tab's connection")
        if kind not in ("gif", "mp4"):
            raise HTTPException(404, "recordings are .gif or .mp4")
        if not player.frames:
            raise HTTPException(409, "nothing recorded yet: press record, play, then download")
        media = "image/gif" if kind == "gif" else "video/mp4"
        return Response(encode_video(list(player.frames), kind), media_type=media)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def loopback_hosts(host: str) -> list[str] | None:
    """The Host names a server bound to `host` answers: the loopback names when it listens on
    loopback only (refusing DNS-rebound names), else None (any)."""
    return list(LOOPBACK) if host in LOOPBACK or host.startswith("127.") else None


def create_app(
    world: World,
    start_frames: np.ndarray,
    action_names: list[str] | None = None,
    config: PlayerConfig | None = None,
    hosts: list[str] | None = None,
) -> FastAPI:
    """The FastAPI app playing `world` from `start_frames` (uint8 n h w 3); with `hosts`, requests
    whose Host header names another host get HTTP 400 (see `loopback_hosts`)."""
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    state = PlayServer(world, start_frames, action_names, config or PlayerConfig())
    app = FastAPI(title="genie2 player")
    if hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    app.state.play = state
    app.get("/")(lambda: FileResponse(STATIC / "index.html"))
    app.get("/player.js")(lambda: FileResponse(STATIC / "player.js", media_type="text/javascript"))
    app.get("/api/info")(state.info)
    app.get("/api/recording/{token}.{kind}")(state.recording)
    app.websocket("/ws")(state.serve_tab)

    @app.get("/api/start/{index}.png")
    def start_png(index: int) -> Response:
        if not 0 <= index < len(state.start_frames):
            raise HTTPException(404, f"start frame {index} does not exist (there are {len(state.start_frames)})")
        return Response(png_bytes(state.start_frames[index]), media_type="image/png")

    return app


def encode_video(frames: list[np.ndarray], kind: str, fps: int = 10) -> bytes:
    """Frames (uint8 h w 3) as GIF or MP4 bytes, upscaled to about 256 px with nearest pixels so
    they stay sharp."""
    import imageio.v3 as iio

    scale = max(1, 256 // frames[0].shape[0])
    big = [frame.repeat(scale, 0).repeat(scale, 1) for frame in frames]
    if kind == "gif":
        return iio.imwrite("<bytes>", big, extension=".gif", duration=1000 / fps, loop=0)
    return iio.imwrite("<bytes>", big, extension=".mp4", plugin="pyav", codec="libx264", fps=fps)


class MainThreadExecutor(Executor):
    """Runs submitted calls on the thread that calls `run_until`, so the model runs on the thread
    that loaded it. Each thread that runs torch ops gets its own OpenMP team, and once the teams
    hold more threads than there are cores, libgomp stops spin-waiting between parallel regions
    (its throttled spin count), so every small kernel pays a sleep and wake-up: on 2 cores a
    frame took 2.7x longer from a worker thread (OMP_WAIT_POLICY=PASSIVE made the main thread
    as slow; a worker was as fast when the main thread had never run torch)."""

    def __init__(self):
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        self.jobs.put((future, fn, args, kwargs))
        return future

    def run_until(self, done: threading.Event) -> None:
        """Run the submitted calls, in order, until `done` is set."""
        while not done.is_set():
            try:
                future, fn, args, kwargs = self.jobs.get(timeout=0.1)
            except queue.Empty:
                continue
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as error:  # handed to the awaiting handler, which answers it
                    future.set_exception(error)


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Run the app with uvicorn (in a thread) until interrupted; the model runs on this thread."""
    import uvicorn

    limit = app.state.play.config.max_message_bytes
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, ws_max_size=limit))
    executor, done = MainThreadExecutor(), threading.Event()
    app.state.play.executor = executor

    def run_server() -> None:
        try:
            server.run()
        finally:
            done.set()

    thread = threading.Thread(target=run_server, name="genie2-http", daemon=True)
    thread.start()
    try:
        executor.run_until(done)
    except KeyboardInterrupt:
        server.should_exit = True
        thread.join(timeout=5)


def warm_up(world: World, frame: np.ndarray, config: PlayerConfig, steps: int = 2) -> None:
    """Run a few frames first, so the first player does not wait for compilation."""
    settings = dict(temperature=config.temperature, cond_scale=config.cond_scale, compile=config.compile)
    session = world.session(frame, **settings)
    for _ in range(steps):
        session.step(0)
