"""The browser player's FastAPI app: the page, the start frames, the WebSocket and the recordings.

Routes:
    GET /, /player.js                   the page (plain HTML and JS in play/static, no build step)
    GET /favicon.svg, /favicon.ico      the tab's icon (inline SVG)
    GET /api/info                       action names, keymap, start frames, frame size, sampling, decoding, limits
    GET /api/start/{i}.png              a start frame
    WS  /ws                             one play session per connection (messages in protocol.py)
    WS  /ws?frames=raw                  the same, frames as raw pixels (what the page uses)
    GET /api/recording/{token}.gif|mp4  the frames the session recorded (while it is connected)

Only the page's own origin (or `allow_origins`) may open /ws, and a loopback server answers only
loopback Host names: see origins.py. Decoding runs off the event loop, so the server keeps answering
while a frame is dreamed: under `serve` on the main thread (uvicorn runs in another), in tests on a
one-thread pool.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, Response

from genie2.errors import InputError
from genie2.play.media import encode_video, png_bytes, raw_frame
from genie2.play.origins import OriginCheck
from genie2.play.protocol import WARMING, PlayerConfig, PlayServer
from genie2.world import World

STATIC = Path(__file__).parent / "static"
logger = logging.getLogger("genie2.play")
# the tab's icon: a green play triangle on a dark tile
FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect width="16" height="16" rx="3" fill="#222"/><path d="M5 3.5v9l7-4.5z" fill="#2a5"/></svg>'
)


class Tabs:
    """The WebSocket side of a PlayServer: admits tabs, reads their messages, sends the replies."""

    def __init__(self, state: PlayServer):
        self.state = state
        self.origins = OriginCheck(state.config.allow_origins)

    async def admit(self, socket: WebSocket, frames: str) -> str | None:
        """Accept a tab's connection and give it a token, or refuse it (and return None)."""
        state = self.state
        if not self.origins.allows(socket):
            await socket.close(code=1008)  # before accepting: the handshake gets an HTTP 403
            return None
        await socket.accept()
        if frames not in ("png", "raw"):
            await socket.send_json(dict(type="error", message=f"frames must be png or raw, got {frames!r}"))
            await socket.close(code=1008)
            return None
        if len(state.players) >= state.config.max_sessions:
            full = f"the server is full ({state.config.max_sessions} sessions); try again later"
            await socket.send_json(dict(type="error", message=full, full=True))
            await socket.close(code=1013)
            return None
        token = secrets.token_urlsafe(16)
        state.players[token] = None  # holds the place, so the limit counts this tab
        await socket.send_json(dict(type="hello", token=token))
        return token

    async def serve_tab(self, socket: WebSocket, frames: str = "png") -> None:
        """One tab's connection: hello, then a reply (frame or error) to each message until it
        closes or goes idle. Frames go as base64 PNG in JSON (`frames=png`) or as raw binary (`frames=raw`)."""
        state = self.state
        token = await self.admit(socket, frames)
        if token is None:
            return
        try:
            while True:
                try:
                    received = await asyncio.wait_for(socket.receive(), state.config.idle_timeout)
                except asyncio.TimeoutError:
                    state.players.pop(token, None)  # the slot is free before the tab hears of it
                    idle = f"closed after {state.config.idle_timeout:g} s without a message: reconnect to play"
                    await socket.send_json(dict(type="error", message=idle, idle=True))
                    await socket.close(code=1000)
                    break
                if received["type"] == "websocket.disconnect":
                    break
                await self.answer(socket, token, received, frames)
        except WebSocketDisconnect:
            pass
        finally:
            state.players.pop(token, None)

    async def answer(self, socket: WebSocket, token: str, received: dict, frames: str) -> None:
        """Apply one received message and send its reply: a frame, a pong, an error, or nothing."""
        state, message, start = self.state, {}, time.perf_counter()
        try:
            message = state.parse(received)
            if message.get("type") == "ping":  # on the event loop: a ping never queues for the model
                await socket.send_json(dict(type="pong", id=message.get("id")))
                return
            if state.waits_to_compile(token, message):  # the page shows it until the reply comes
                await socket.send_json(dict(type="status", warming=True, message=WARMING, id=message.get("id")))
            loop = asyncio.get_running_loop()
            frame = await loop.run_in_executor(state.executor, state.handle, token, message)
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
        await self.send_frame(socket, state.frame_reply(state.players[token], frame, message, start), frame, frames)

    @staticmethod
    async def send_frame(socket: WebSocket, reply: dict, frame: np.ndarray, frames: str) -> None:
        """Send a frame message: raw binary, or JSON with the frame as base64 PNG."""
        if frames == "raw":
            await socket.send_bytes(raw_frame(reply, frame))
        else:
            reply["image"] = base64.b64encode(png_bytes(frame)).decode("ascii")
            await socket.send_json(reply)

    def recording(self, token: str, kind: str) -> Response:
        """A tab's recording as GIF or MP4."""
        player = self.state.players.get(token)
        if player is None:
            raise HTTPException(404, "no such session: recordings live as long as their tab's connection")
        if kind not in ("gif", "mp4"):
            raise HTTPException(404, "recordings are .gif or .mp4")
        if not player.frames:
            raise HTTPException(409, "nothing recorded yet: press record, play, then download")
        media = "image/gif" if kind == "gif" else "video/mp4"
        return Response(encode_video(list(player.frames), kind), media_type=media)


def create_app(
    world: World,
    start_frames: np.ndarray,
    action_names: list[str] | None = None,
    config: PlayerConfig | None = None,
    hosts: list[str] | None = None,
) -> FastAPI:
    """The FastAPI app playing `world` from `start_frames` (uint8 n h w 3); with `hosts`, requests
    whose Host header names another host get HTTP 400 (see `origins.loopback_hosts`)."""
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    state = PlayServer(world, start_frames, action_names, config or PlayerConfig())
    tabs = Tabs(state)
    app = FastAPI(title="genie2 player")
    if hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    app.state.play = state
    app.get("/")(lambda: FileResponse(STATIC / "index.html"))
    app.get("/player.js")(lambda: FileResponse(STATIC / "player.js", media_type="text/javascript"))
    app.get("/api/info")(state.info)
    app.get("/api/recording/{token}.{kind}")(tabs.recording)
    app.websocket("/ws")(tabs.serve_tab)

    @app.get("/favicon.svg")
    @app.get("/favicon.ico")  # what browsers ask for when a page names no icon
    def favicon() -> Response:
        return Response(FAVICON, media_type="image/svg+xml")

    @app.get("/api/start/{index}.png")
    def start_png(index: int) -> Response:
        if not 0 <= index < len(state.start_frames):
            raise HTTPException(404, f"start frame {index} does not exist (there are {len(state.start_frames)})")
        return Response(png_bytes(state.start_frames[index]), media_type="image/png")

    return app
