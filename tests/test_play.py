"""The browser player: its server protocol (FastAPI TestClient) and the page in real Chromium (Playwright)."""

import base64
import contextlib
import io
import json
import os
import shutil
import socket
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from genie2 import Genie2
from genie2.model.masking import RASTER_DECODINGS
from genie2.play.app import create_app
from genie2.play.keymap import keymap
from genie2.play.protocol import PlayerConfig
from genie2.tokenizer.model import Tokenizer, TokenizerConfig
from genie2.world import World

NAMES = ["left", "right", "forward", "pickup", "drop", "toggle", "done"]
CHROMIUM = os.environ.get("GENIE2_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def world():
    """A random 16x16 world whose frames depend strongly on the action pressed."""
    torch.manual_seed(0)
    tokenizer = Tokenizer(
        TokenizerConfig(frame_size=16, channels=(8, 16), res_blocks=1, dim_latent=8, codebook_size=16)
    )
    model = Genie2.from_tokenizer(tokenizer, dim=32, depth=1, heads=2, attn_dim_head=16, num_actions=len(NAMES))
    with torch.no_grad():
        model.action_embed.keys.weight.mul_(20)
    return World(model)


@pytest.fixture(scope="module")
def parallel_world():
    """A random 16x16 world that decodes each frame in passes (MaskGIT), 8 by default."""
    torch.manual_seed(0)
    tokenizer = Tokenizer(
        TokenizerConfig(frame_size=16, channels=(8, 16), res_blocks=1, dim_latent=8, codebook_size=16)
    )
    kwargs = dict(dim=32, depth=1, heads=2, attn_dim_head=16, num_actions=len(NAMES), decoding="parallel")
    return World(Genie2.from_tokenizer(tokenizer, **kwargs))


@pytest.fixture(scope="module")
def starts():
    return np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)


def client_for(world, starts, **config):
    from fastapi.testclient import TestClient

    return TestClient(create_app(world, starts, NAMES, PlayerConfig(**config)))


def frame_of(message) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(message["image"]))))


def test_keymap_uses_arrows_for_named_directions_then_digits():
    keys = keymap(NAMES)
    assert keys["ArrowLeft"] == 0 and keys["ArrowRight"] == 1 and keys["ArrowUp"] == 2
    assert set(keys.values()) == set(range(len(NAMES)))  # every action has a key
    assert all(
        keys[letter] == keys[arrow] for letter, arrow in (("a", "ArrowLeft"), ("d", "ArrowRight"), ("w", "ArrowUp"))
    )
    assert keymap(["a", "b"]) == {"1": 0, "2": 1}


def test_info_start_frames_and_steps_over_the_websocket(world, starts):
    client = client_for(world, starts)
    info = client.get("/api/info").json()
    assert info["action_names"] == NAMES and info["start_frames"] == 3 and info["frame_size"] == 16
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(client.get("/api/start/2.png").content))), starts[2])
    assert client.get("/api/start/3.png").status_code == 404
    assert "<canvas" in client.get("/").text and "WebSocket" in client.get("/player.js").text
    with client.websocket_connect("/ws") as ws:
        assert ws.receive_json()["type"] == "hello"
        ws.send_json({"type": "reset", "start": 1})
        first = ws.receive_json()
        assert first["type"] == "frame" and first["index"] == 0 and frame_of(first).shape == (16, 16, 3)
        dreamed = {}
        for action in (0, 1, 0):
            ws.send_json({"type": "reset", "start": 1})
            ws.receive_json()
            ws.send_json({"type": "step", "keys": [action], "id": 7})
            reply = ws.receive_json()
            assert reply["index"] == 1 and reply["id"] == 7 and reply["compute_ms"] > 0
            dreamed.setdefault(action, []).append(frame_of(reply))
        assert np.array_equal(*dreamed[0])  # greedy: the same action dreams the same frame
        assert not np.array_equal(dreamed[0][0], dreamed[1][0])  # another action, another frame


def test_raw_frames_carry_the_same_pixels_as_png_frames(world, starts):
    client = client_for(world, starts)
    frames = {}
    for kind in ("png", "raw"):
        with client.websocket_connect(f"/ws?frames={kind}") as ws:
            ws.receive_json()  # hello
            ws.send_json({"type": "reset", "start": 2})
            ws.receive_json() if kind == "png" else ws.receive_bytes()
            ws.send_json({"type": "step", "keys": [1], "id": 3})
            if kind == "png":
                frames[kind] = frame_of(ws.receive_json())
                continue
            data = ws.receive_bytes()
            length = int.from_bytes(data[:4], "little")
            header = json.loads(data[4 : 4 + length])
            assert header["type"] == "frame" and header["id"] == 3 and header["index"] == 1 and header["size"] == 16
            frames[kind] = np.frombuffer(data[4 + length :], dtype=np.uint8).reshape(16, 16, 3)
    assert np.array_equal(frames["png"], frames["raw"])
    with client.websocket_connect("/ws?frames=jpeg") as ws:
        assert "frames must be png or raw" in ws.receive_json()["message"]


@pytest.mark.parametrize(
    "message, error",
    [
        ("not json", "JSON"),
        ("[1, 2]", "JSON objects"),
        ('{"type": "jump"}', "unknown message type"),
        ('{"type": "step", "keys": [99]}', "action ids must be in"),
        ('{"type": "step", "keys": "left"}', "keys must be a list"),
        ('{"type": "reset", "start": 5}', "start must be an int"),
        ('{"type": "reset", "image": "%%%"}', "could not read the image"),
        ('{"type": "settings", "temperature": -1}', "temperature must be a number"),
        ('{"type": "settings", "decode_steps": 0}', "decode_steps must be a whole number in [1, 64]"),
        ('{"type": "record", "on": "yes"}', "record needs on"),
    ],
)
def test_malformed_messages_get_an_error_and_the_session_goes_on(world, starts, message, error):
    client = client_for(world, starts)
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_json({"type": "reset", "start": 0})
        ws.receive_json()
        ws.send_text(message)
        reply = ws.receive_json()
        assert reply["type"] == "error" and error in reply["message"], reply
        ws.send_json({"type": "step", "keys": [2]})
        assert ws.receive_json()["type"] == "frame"


def test_binary_messages_get_an_error_and_the_session_goes_on(world, starts):
    with client_for(world, starts).websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_bytes(b"\x00\x01")
        assert "not binary" in ws.receive_json()["message"]
        ws.send_json({"type": "reset", "start": 0, "id": 3})
        assert ws.receive_json()["id"] == 3


def test_tabs_have_their_own_sessions_and_keep_their_settings(world, starts):
    """Two tabs stepping in turn dream what each dreams alone; a reset keeps the tab's settings."""
    client = client_for(world, starts)

    def play(ws, start, keys):
        ws.send_json({"type": "reset", "start": start})
        ws.receive_json()
        frames = []
        for key in keys:
            ws.send_json({"type": "step", "keys": [key]})
            frames.append(frame_of(ws.receive_json()))
        return frames

    with client.websocket_connect("/ws") as a, client.websocket_connect("/ws") as b:
        a.receive_json(), b.receive_json()
        alone_a, alone_b = play(a, 0, [0, 1, 2]), play(b, 2, [3, 4, 5])
        for ws, start in ((a, 0), (b, 2)):
            ws.send_json({"type": "reset", "start": start})
            ws.receive_json()
        turns = {"a": [], "b": []}
        for key_a, key_b in zip([0, 1, 2], [3, 4, 5], strict=True):
            for name, ws, key in (("a", a, key_a), ("b", b, key_b)):
                ws.send_json({"type": "step", "keys": [key]})
                turns[name].append(frame_of(ws.receive_json()))
        assert all(np.array_equal(x, y) for x, y in zip(alone_a + alone_b, turns["a"] + turns["b"], strict=True))
        a.send_json({"type": "settings", "temperature": 0.7})
        a.send_json({"type": "reset", "start": 1})
        a.receive_json()
        players = client.app.state.play.players
        assert [p.session.sampling.temperature for p in players.values()] == [0.7, 0.0]


def test_step_before_reset_is_refused(world, starts):
    with client_for(world, starts).websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_json({"type": "step", "keys": [0]})
        assert "reset" in ws.receive_json()["message"]


def test_uploads_oversized_and_valid(world, starts):
    client = client_for(world, starts, max_upload_bytes=2000)
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(buffer, format="PNG")
    small = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    big = base64.b64encode(os.urandom(4000)).decode()
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_json({"type": "reset", "image": big})
        assert "upload limit" in ws.receive_json()["message"]
        ws.send_json({"type": "reset", "image": small})
        reply = ws.receive_json()
        assert reply["type"] == "frame" and frame_of(reply).shape == (16, 16, 3)


def test_session_limit_and_per_tab_sessions(world, starts):
    client = client_for(world, starts, max_sessions=1)
    with client.websocket_connect("/ws") as first:
        first.receive_json()
        with client.websocket_connect("/ws") as second:
            reply = second.receive_json()
            assert reply["type"] == "error" and "full" in reply["message"]
        first.send_json({"type": "reset", "start": 0})
        assert first.receive_json()["type"] == "frame"
    with client.websocket_connect("/ws") as again:  # the slot is free once the first tab leaves
        assert again.receive_json()["type"] == "hello"


def test_settings_change_sampling_and_recording_downloads(world, starts):
    client = client_for(world, starts)
    with client.websocket_connect("/ws") as ws:
        token = ws.receive_json()["token"]
        ws.send_json({"type": "reset", "start": 0})
        ws.receive_json()
        assert client.get(f"/api/recording/{token}.gif").status_code == 409
        ws.send_json({"type": "record", "on": True})
        ws.send_json({"type": "settings", "temperature": 1.0, "cond_scale": 2.0})  # guidance on: a new cache
        for _ in range(3):
            ws.send_json({"type": "step", "keys": [1]})
            assert ws.receive_json()["recorded"] >= 1
        player = client.app.state.play.players[token]
        assert player.session.sampling.cond_scale == 2.0 and player.session.guided
        gif = client.get(f"/api/recording/{token}.gif")
        assert gif.status_code == 200 and gif.content[:3] == b"GIF"
        mp4 = client.get(f"/api/recording/{token}.mp4")
        assert mp4.status_code == 200 and b"ftyp" in mp4.content[:16]
    assert client.get(f"/api/recording/{token}.gif").status_code == 404  # gone with its tab


def test_a_parallel_world_tells_the_page_its_decode_passes_and_the_settings_change_them(
    world, parallel_world, starts, monkeypatch
):
    import genie2.model.decoding as decoding

    info = client_for(world, starts).get("/api/info").json()
    assert (info["decoding"], info["decode_steps"]) == ("raster", None)  # the page offers no passes
    client = client_for(parallel_world, starts, decode_steps=4)
    info = client.get("/api/info").json()
    assert (info["decoding"], info["decode_steps"]) == ("parallel", 4)
    passes, real = [], decoding.frame_pass
    monkeypatch.setattr(decoding, "frame_pass", lambda *args, **kw: passes.append(1) or real(*args, **kw))
    with client.websocket_connect("/ws") as ws:
        token = ws.receive_json()["token"]
        ws.send_json({"type": "reset", "start": 0})
        ws.receive_json()
        player = client.app.state.play.players[token]
        ws.send_json({"type": "step", "keys": [1]})
        assert ws.receive_json()["type"] == "frame"
        at_4 = len(passes)
        for bad in (0, 65, 2.5, True, "4"):
            ws.send_json({"type": "settings", "decode_steps": bad, "id": 5})
            reply = ws.receive_json()
            assert reply["type"] == "error" and "decode_steps must be a whole number in [1, 64]" in reply["message"]
        assert player.session.sampling.decode_steps == 4
        ws.send_json({"type": "settings", "decode_steps": 2})
        ws.send_json({"type": "step", "keys": [1]})
        assert ws.receive_json()["type"] == "frame"
        assert player.session.sampling.decode_steps == 2 and len(passes) - at_4 == at_4 - 2  # 2 passes fewer
        ws.send_json({"type": "reset", "start": 1})  # a reset keeps the tab's settings
        ws.receive_json()
        assert player.session.sampling.decode_steps == 2


def test_a_raster_world_tells_the_page_its_decoding_and_the_settings_change_it(world, parallel_world, starts):
    assert client_for(parallel_world, starts).get("/api/info").json()["raster"] is None  # passes, not this
    client = client_for(world, starts, raster="speculative")
    assert client.get("/api/info").json()["raster"] == "speculative"
    with client.websocket_connect("/ws") as ws:
        token = ws.receive_json()["token"]
        ws.send_json({"type": "reset", "start": 0})
        ws.receive_json()
        player = client.app.state.play.players[token]
        ws.send_json({"type": "settings", "raster": "jacobi", "id": 3})
        reply = ws.receive_json()
        assert reply["type"] == "error" and "raster must be one of sequential, speculative" in reply["message"]
        ws.send_json({"type": "settings", "raster": "diagonal"})
        ws.send_json({"type": "step", "keys": [1]})
        assert ws.receive_json()["type"] == "frame" and player.session.sampling.raster == "diagonal"


def refused(client, url="/ws", **headers) -> int:
    """The close code of a WebSocket the server refuses before accepting it."""
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as refusal:
        with client.websocket_connect(url, headers=headers):
            pass
    return refusal.value.code


def test_websockets_from_other_origins_are_refused_before_taking_a_slot(world, starts):
    """Only the page's own origin (scheme, host and port of the Host header) plays; scripts send no Origin."""
    client = client_for(world, starts, max_sessions=1)
    for origin in ("http://evil.example", "http://testserver:8000", "https://testserver", "null", "garbage"):
        assert refused(client, origin=origin) == 1008, origin
        assert client.app.state.play.players == {}  # refused before it took the one slot
    for headers in ({"origin": "http://testserver"}, {"origin": "http://TestServer:80"}, {}):
        with client.websocket_connect("/ws", headers=headers) as ws:
            assert ws.receive_json()["type"] == "hello"
    # served from 127.0.0.1, the page's origin is 127.0.0.1: localhost is another origin (and vice versa)
    assert refused(client, "ws://127.0.0.1:8000/ws", origin="http://localhost:8000") == 1008
    with client.websocket_connect("ws://127.0.0.1:8000/ws", headers={"origin": "http://127.0.0.1:8000"}) as ws:
        assert ws.receive_json()["type"] == "hello"
    with client.websocket_connect("ws://localhost:8000/ws", headers={"origin": "http://localhost:8000"}) as ws:
        assert ws.receive_json()["type"] == "hello"


def test_allowed_origins_play_and_others_stay_refused(world, starts):
    client = client_for(world, starts, allow_origins=["https://example.com", "http://localhost:3000/"])
    for origin in ("https://example.com", "https://example.com:443", "http://localhost:3000", "http://testserver"):
        with client.websocket_connect("/ws", headers={"origin": origin}) as ws:
            assert ws.receive_json()["type"] == "hello", origin
    for origin in ("http://example.com", "https://example.com:8443", "https://sub.example.com"):
        assert refused(client, origin=origin) == 1008, origin
    with client_for(world, starts, allow_origins=["*"]).websocket_connect("/ws", headers={"origin": "null"}) as ws:
        assert ws.receive_json()["type"] == "hello"


def test_a_loopback_server_answers_only_loopback_host_names(world, starts):
    """DNS rebinding: a page whose domain now points at 127.0.0.1 sends its own name as Host (and
    as Origin, so the origin check alone would let it in); a loopback server refuses that name."""
    from fastapi.testclient import TestClient

    from genie2.play.origins import loopback_hosts

    assert loopback_hosts("0.0.0.0") is None and "localhost" in loopback_hosts("127.0.0.1")
    app = create_app(world, starts, NAMES, PlayerConfig(), hosts=loopback_hosts("127.0.0.1"))
    client = TestClient(app, base_url="http://127.0.0.1:8000")
    assert client.get("/api/info").status_code == 200
    assert client.get("/api/info", headers={"host": "localhost:8000"}).status_code == 200
    assert client.get("/api/info", headers={"host": "rebound.example:8000"}).status_code == 400
    from starlette.testclient import WebSocketDenialResponse

    rebound = {"host": "rebound.example:8000", "origin": "http://rebound.example:8000"}
    with pytest.raises(WebSocketDenialResponse):  # an HTTP 400 instead of the handshake
        with client.websocket_connect("ws://rebound.example:8000/ws", headers=rebound):
            pass
    assert app.state.play.players == {}


@pytest.mark.parametrize(
    "config, error",
    [
        (dict(allow_origins=["example.com"]), "allow_origins entries are origins like https://example.com"),
        (dict(allow_origins=["https://example.com/play"]), "no path"),
        (dict(allow_origins=["ftp://example.com"]), "http or https"),
        (dict(allow_origins=["https://example.com:99999"]), "allow_origins entries are origins"),
        (dict(allow_origins="https://example.com"), "allow_origins must be a list"),
        (dict(decode_steps=0), "decode_steps must be a positive int"),
        (dict(raster="fast"), "raster must be one of sequential, speculative, diagonal"),
        (dict(idle_timeout=0), "idle_timeout must be a positive number"),
        (dict(idle_timeout=True), "idle_timeout must be a positive number"),
        (dict(idle_timeout=float("inf")), "idle_timeout must be a positive number"),
    ],
)
def test_bad_player_configs_say_what_to_pass(config, error):
    with pytest.raises((ValueError, TypeError), match=error):
        PlayerConfig(**config)


def test_play_flags_parse_origins_and_idle_timeout():
    from genie2.cli import build_parser

    args = build_parser().parse_args(["play", "--allow-origin", "https://a.com, https://b.com", "--allow-origin", "*"])
    assert args.allow_origin == ["https://a.com", "https://b.com", "*"] and args.idle_timeout == 300
    args = build_parser().parse_args(["play", "--idle-timeout", "0.5"])
    assert args.allow_origin == [] and args.idle_timeout == 0.5


def test_idle_connections_are_closed_and_free_their_slot(world, starts):
    """A tab that sends nothing for idle_timeout seconds is closed; pings keep a quiet tab alive."""
    from starlette.websockets import WebSocketDisconnect

    client = client_for(world, starts, max_sessions=1, idle_timeout=0.3)
    players = client.app.state.play.players
    assert client.get("/api/info").json()["idle_timeout"] == 0.3
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_json({"type": "reset", "start": 0})
        ws.receive_json()
        for i in range(8):  # 1.2 s in all, longer than the timeout, but never 0.3 s quiet
            time.sleep(0.15)
            ws.send_json({"type": "ping", "id": i})
            assert ws.receive_json() == {"type": "pong", "id": i}
        assert len(players) == 1
        reply = ws.receive_json()  # then silence
        assert reply["type"] == "error" and reply["idle"] and "0.3 s" in reply["message"]
        assert players == {}  # the slot is free before the socket closes
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1000
    with client.websocket_connect("/ws") as again:
        assert again.receive_json()["type"] == "hello"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(app):
    """The app on a free local port, served by uvicorn in a thread; yields the port."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def chromium_page():
    """A page in headless Chromium."""
    from playwright.sync_api import sync_playwright

    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
        try:
            yield browser.new_page()
        finally:
            browser.close()


needs_chromium = pytest.mark.skipif(
    not shutil.which(CHROMIUM), reason=f"no Chromium at {CHROMIUM} (tests/install-chromium.sh)"
)


@needs_chromium
def test_page_in_headless_chromium_streams_frames_that_follow_the_keys(world, starts):
    with served(create_app(world, starts, NAMES)) as port, chromium_page() as page:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("window.genie2.frames > 5")  # it runs on its own: frames stream in
        assert "left" in page.inner_text("#keymap") and float(page.inner_text("#fps")) > 0
        assert page.inner_text("#latency").endswith("ms")
        assert page.is_hidden("#decode-steps-row")  # a raster world has no passes to choose
        assert page.is_visible("#raster-row") and page.input_value("#raster") == "sequential"  # but this
        page.click("#run")  # pause: from now on each key press dreams one frame
        page.wait_for_timeout(300)

        def after(key: str) -> str:
            # counted before acting (a fast reply may land before a later read), done once nothing is in flight
            # (a step still out when paused may answer after the reset)
            for act in (lambda: page.click("#reset"), lambda: page.keyboard.press(key)):
                count = page.evaluate("window.genie2.frames")
                act()
                page.wait_for_function("n => !window.genie2.busy && window.genie2.frames > n", arg=count)
            return page.evaluate("window.genie2.lastImage")

        left, right, left_again = after("ArrowLeft"), after("ArrowRight"), after("ArrowLeft")
        assert left == left_again and left != right
        assert page.evaluate("window.genie2.errors") == []


@needs_chromium
def test_paused_page_keeps_its_session_and_a_hidden_one_reconnects_when_shown(world, starts):
    """A visible, paused page pings past the idle timeout; a hidden one is closed, then comes back when shown."""
    app = create_app(world, starts, NAMES, PlayerConfig(idle_timeout=1.0))
    players = app.state.play.players

    def show(hidden: bool) -> None:  # headless tabs are never hidden: tell the page it is
        script = "h => { Object.defineProperty(document, 'hidden', {value: h, configurable: true}); "
        page.evaluate(script + "document.dispatchEvent(new Event('visibilitychange')); }", hidden)

    with served(app) as port, chromium_page() as page:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("window.genie2.frames > 2")
        page.click("#run")  # paused: only pings go out
        page.wait_for_timeout(2500)
        assert len(players) == 1 and page.evaluate("window.genie2.connections") == 1
        show(True)
        for _ in range(100):  # hidden: silent, so closed once idle
            if not players:
                break
            time.sleep(0.05)
        assert players == {}
        page.wait_for_timeout(300)
        assert page.evaluate("window.genie2.connections") == 1  # hidden: it stays closed
        count = page.evaluate("window.genie2.frames")
        show(False)
        page.wait_for_function("n => window.genie2.frames > n", arg=count)  # reconnected: a new session's frame
        assert page.evaluate("window.genie2.connections") == 2 and len(players) == 1
        assert page.evaluate("window.genie2.errors") == []


@needs_chromium
@pytest.mark.parametrize(
    "kind, select, shown, options, pick, setting",
    [
        ("parallel_world", "decode-steps", "8", ["1", "2", "4", "8", "16"], "2", ("decode_steps", 2)),  # the model's 8
        ("world", "raster", "sequential", list(RASTER_DECODINGS), "diagonal", ("raster", "diagonal")),
    ],
)
def test_page_offers_the_decodings_of_its_world_and_sends_the_choice(
    kind, select, shown, options, pick, setting, starts, request
):
    """A parallel world's page offers passes per frame, a raster world's its raster decodings; not the other."""
    app = create_app(request.getfixturevalue(kind), starts, NAMES)
    players, (knob, value) = app.state.play.players, setting
    with served(app) as port, chromium_page() as page:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("window.genie2.frames > 1")
        assert page.is_visible(f"#{select}-row") and page.input_value(f"#{select}") == shown
        assert page.is_hidden("#raster-row" if select == "decode-steps" else "#decode-steps-row")
        assert page.eval_on_selector_all(f"#{select} option", "options => options.map(o => o.value)") == options
        page.select_option(f"#{select}", pick)
        for _ in range(100):
            if [getattr(p.session.sampling, knob) for p in players.values() if p] == [value]:
                break
            time.sleep(0.05)
        assert [getattr(p.session.sampling, knob) for p in players.values() if p] == [value]
        assert page.evaluate("window.genie2.errors") == []
