"""The play protocol: the messages a browser tab sends, and the state that answers them.

Messages, JSON text; any message may carry an "id", echoed in its reply. The client sends:
    {"type": "reset", "start": i}               start over from start frame i (settings are kept)
    {"type": "reset", "image": "<base64>"}      ... or from an uploaded PNG/JPEG, resized to the model's frames
    {"type": "step", "keys": [ids]}             dream the next frame; [] presses no key (like -1 in training data)
    {"type": "settings", "temperature": t, "cond_scale": s, "decode_steps": k, "raster": r}
                                                any of them; decode_steps (1..64): passes per frame of a
                                                parallel model (/api/info's "decoding" and "decode_steps");
                                                raster: how a raster one fills a frame (Sampling.raster)
    {"type": "record", "on": true|false}        start (clearing the old recording) or stop recording
    {"type": "ping"}                            keep a quiet session alive (answered without queueing for the model)
The server answers:
    {"type": "hello", "token": ...}             first: the session's token, for the recording's URL
    {"type": "frame", "image": "<base64 PNG>", "index": n, "id": n, "compute_ms": ms, "recorded": n}
                                                to each reset and step
    {"type": "error", "message": ..., "id": n}  the message was refused or failed; the session goes on
    {"type": "pong", "id": n}                   to each ping
    {"type": "status", "warming": true, "message": ..., "id": n}
                                                before the reply to a message that waits for a compile (the
                                                start-up warm-up, or a decode step compiled on first use)
With frames=raw a frame comes as one binary message instead: 4 bytes (little-endian uint32) giving
the header's length, the header (the frame message as JSON, without "image", with "size"), then the
frame's pixels (size x size x 3 bytes, RGB, row by row). No PNG to encode, no base64 to decode.
A tab over the session limit gets an error with "full": true, then the socket closes (code 1013).
A connection that sends nothing for `idle_timeout` seconds (default 300; time spent dreaming its own
frames does not count) gets an error with "idle": true, then the socket closes (code 1000), its slot
already free. The page pings while it is visible, so a paused tab keeps its session; a hidden tab sends
nothing, is closed once idle, and reconnects (a new session from its start frame) when shown again.

Each tab gets its own WorldModelSession (its own cache); the model is shared, and `PlayServer.executor`
has one worker, so one session decodes at a time. app.py serves the connections; serve.py runs the
model calls on the main thread.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

from genie2.errors import InputError
from genie2.model.config import check_positive_int
from genie2.model.masking import check_raster, decode_passes, raster_fill
from genie2.model.session import WorldModelSession
from genie2.play.keymap import keymap, listed
from genie2.play.media import frame_pixels
from genie2.play.origins import origin_key
from genie2.world import World

MAX_RECORDED_FRAMES = 1200  # 2 minutes at 10 frames/s
MAX_UPLOAD_PIXELS = 4096 * 4096
MAX_DECODE_STEPS = 64  # a settings message's passes per frame: more than any frame of codes needs
WARMING = "warming up: the server is compiling the decode step (once; frames are fast after)"
# why an upload could not be read, in words: the errors' own text names objects like <_io.BytesIO object at 0x...>
UNREADABLE = {
    binascii.Error: "it is not valid base64",
    UnidentifiedImageError: "the file is not an image (or not one PIL reads)",
    Image.DecompressionBombError: "it has too many pixels",
    OSError: "the file is damaged or cut short",
}


@dataclass
class PlayerConfig:
    """How the server plays: sampling defaults and limits."""

    temperature: float = 0.0
    cond_scale: float = 1.0
    decode_steps: int | None = None  # passes per frame of a parallel model (None: the model's)
    raster: str | None = None  # how a raster model fills a frame (Sampling.raster; None: the model's)
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
        check_positive_int("decode_steps", self.decode_steps, allow_none=True)  # None: the model's
        check_raster(self.raster, allow_none=True)
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


def _whole(message: dict, name: str, low: int, high: int) -> int | None:
    """An optional whole-number field within [low, high]."""
    value = message.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
        raise BadMessage(f"{name} must be a whole number in [{low}, {high}], got {value!r}")
    return value


class PlayServer:
    """The state behind the routes: the world, its start frames, and one Player per open tab.
    Messages are applied by `handle` on `executor`, off the event loop; its one worker lets one session
    decode at a time, since sessions share the model and the cores."""

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
        names = list(action_names or [str(i) for i in range(world.num_actions)])
        if len(names) != world.num_actions:
            raise InputError(f"{len(names)} action names for a world with {world.num_actions} actions")
        self.world, self.model, self.start_frames, self.names, self.config = world, model, start_frames, names, config
        self.players: dict[str, Player | None] = {}  # None: a tab that has not reset yet
        self.warm: set[bool] = set()  # with compile on: the modes (guided or not) whose decode step has compiled
        self.warming = False  # a compile is under way: messages answered meanwhile wait for it
        # model calls run one at a time, off the event loop; `serve` moves them to the main thread
        self.executor: Executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genie2-model")

    def info(self) -> dict:
        """What the page needs to set itself up."""
        return dict(
            action_names=self.names,
            keymap=(keys := keymap(self.names)),
            keys=listed(keys),  # the same, in the order the page lists them
            multiple_actions=bool(self.model.allow_multiple_actions),
            max_num_actions=int(self.model.max_num_actions),
            start_frames=len(self.start_frames),
            frame_size=self.size,
            temperature=self.config.temperature,
            cond_scale=self.config.cond_scale,
            decoding=self.model.decoding,  # "parallel": the page offers decode_steps
            decode_steps=decode_passes(self.model, self.config.decode_steps),
            raster=raster_fill(self.model, self.config.raster),  # a raster world's; the page offers the others
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
        except BadMessage:
            raise
        except (binascii.Error, UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as error:
            reason = next((why for kind, why in UNREADABLE.items() if isinstance(error, kind)), "it did not decode")
            raise BadMessage(f"could not read the image: {reason}; send a PNG or JPEG") from error
        return np.array(image, dtype=np.uint8)  # a writable copy

    def handle(self, token: str, message: dict) -> np.ndarray | None:
        """Apply one message of tab `token`; returns the new frame, if the message made one."""
        kind, player = message.get("type"), self.players.get(token)
        if kind == "reset":
            return self.reset(token, player, message)
        if player is None:
            raise BadMessage("send a reset message first")
        if kind == "step":
            frame = self.dream(player.session, self.actions(message.get("keys", [])))
            player.index += 1
            return frame
        if kind == "settings":
            temperature = _number(message, "temperature", 0.0, 5.0)
            cond_scale = _number(message, "cond_scale", 0.0, 10.0)
            steps = _whole(message, "decode_steps", 1, MAX_DECODE_STEPS)
            raster = message.get("raster")  # the session refuses an unknown one (Sampling)
            player.session.configure(temperature=temperature, cond_scale=cond_scale, decode_steps=steps, raster=raster)
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

    def warm_up(self, steps: int = 2) -> None:
        """With compile on, compile the decode step for plain and for guided play (CFG) before any tab waits
        for it: each mode is its own compiled graph, seconds each, and the guided one would otherwise compile
        when a player first moves the CFG slider off 1."""
        if not self.config.compile:
            return
        self.warming = True
        try:
            first = self.start_frames[0]
            session = self.world.session(first, temperature=self.config.temperature, cond_scale=1.0, compile=True)
            for cond_scale in (1.0, self.config.cond_scale if self.config.cond_scale != 1 else 2.0):
                session.configure(cond_scale=cond_scale)  # switched on mid-session, as the slider does
                for _ in range(steps):
                    session.step(0)
                self.warm.add(session.guided)
        finally:
            self.warming = False

    def waits_to_compile(self, token: str, message: dict) -> bool:
        """Whether the reply to `message` waits for a compile: the warm-up is under way, or it is a step in
        a mode (guided or not) whose decode step has not compiled yet."""
        if message.get("type") not in ("reset", "step"):
            return False
        player = self.players.get(token)
        cold = player is not None and message["type"] == "step" and self.cold(player.session)
        return self.warming or cold

    def cold(self, session: WorldModelSession) -> bool:
        """Whether the session's next step compiles the decode step first (compile on, its mode not warm)."""
        return self.config.compile and session.guided not in self.warm

    def dream(self, session: WorldModelSession, actions: list[int]) -> np.ndarray:
        """The session's next frame (uint8 h w 3); a step that compiles counts as warming up."""
        compiles = self.cold(session)
        self.warming = self.warming or compiles
        try:
            frame = frame_pixels(session.step(actions or None))
        finally:
            self.warming = self.warming and not compiles
        if self.config.compile:
            self.warm.add(session.guided)
        return frame

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
        session = self.world.session(
            frame,
            temperature=settings.temperature,
            cond_scale=settings.cond_scale,
            decode_steps=settings.decode_steps,
            raster=settings.raster,
            compile=self.config.compile,
        )
        shown = frame_pixels(session.current_frame())
        if player is None:
            self.players[token] = player = Player(session, token)
        player.session, player.index = session, 0
        return shown

    def actions(self, keys) -> list[int]:
        """Checked action ids of a step (its "keys" field): sorted, at most what the model takes at once."""
        if not isinstance(keys, list) or not all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
            raise BadMessage(f"keys must be a list of action ids, got {keys!r}")
        bad = [k for k in keys if not 0 <= k < len(self.names)]
        if bad:
            raise BadMessage(f"action ids must be in [0, {len(self.names)}), got {bad}")
        actions = sorted(set(keys))
        if len(actions) > 1 and not self.model.allow_multiple_actions:
            actions = actions[-1:]  # one action per step: keep one of the keys held
        return actions[: self.model.max_num_actions]

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
