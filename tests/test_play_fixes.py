"""Issue 17's player fixes: the start-up warm-up of both compiled steps and the "warming up" status, terminal
play's checks and Ctrl-C, the keymap's order and names, upload errors in words, and the favicon."""

import base64
import io
import socket
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

import genie2.cli as cli
import genie2.model.decoding
import genie2.world
from conftest import tiny_world
from genie2.data.episode import DatasetInfo
from genie2.errors import InputError
from genie2.play import serve
from genie2.play.app import create_app
from genie2.play.keymap import keymap
from genie2.play.protocol import PlayerConfig
from genie2.play.terminal import play_terminal
from genie2.world import World
from test_play import NAMES, chromium_page, client_for, needs_chromium, served

CRAFTER = ["noop", "move_left", "move_right", "move_up", "move_down", "do", "sleep", "place_stone", "pick_up"]


@pytest.fixture(scope="module")
def world():
    return tiny_world(len(NAMES))


@pytest.fixture(scope="module")
def starts():
    return np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)


@pytest.fixture
def eager_compile(monkeypatch):
    """compile=True without the minutes of compiling: the "compiled" step is the eager one."""
    monkeypatch.setattr(genie2.model.decoding, "compiled", lambda model, step, *shape: step)


def replies_to(ws, message: dict) -> list[dict]:
    """Send a message and read its replies up to its frame or error (a status may come first)."""
    ws.send_json(message)
    replies = [ws.receive_json()]
    while replies[-1]["type"] == "status":
        replies.append(ws.receive_json())
    return replies


def test_the_warm_up_compiles_the_guided_step_too_so_moving_the_cfg_slider_never_compiles(starts):
    app = create_app(tiny_world(len(NAMES)), starts, NAMES, PlayerConfig(compile=True))
    state = app.state.play
    state.warm_up()
    assert state.warm == {False, True} and not state.warming
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    with client_for_app(app).websocket_connect("/ws") as ws:
        ws.receive_json()
        kinds = [r["type"] for r in replies_to(ws, {"type": "reset", "start": 0}) + replies_to(ws, step(0))]
        ws.send_json({"type": "settings", "cond_scale": 2.5})  # the slider off 1: guided from the next frame
        kinds += [r["type"] for r in replies_to(ws, step(1)) + replies_to(ws, step(2))]
        ws.send_json({"type": "settings", "cond_scale": 1.0})
        kinds += [r["type"] for r in replies_to(ws, step(0))]
    assert kinds == ["frame"] * 5  # no "warming up": nothing waited for a compile
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # and nothing compiled


def client_for_app(app):
    from fastapi.testclient import TestClient

    return TestClient(app)


def step(action: int) -> dict:
    return {"type": "step", "keys": [action], "id": action + 10}


def test_a_step_that_compiles_is_told_first_and_once_per_mode(world, starts, eager_compile):
    client = client_for(world, starts, compile=True)
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        assert [r["type"] for r in replies_to(ws, {"type": "reset", "start": 0})] == ["frame"]
        status, frame = replies_to(ws, step(0))  # the plain step compiles on first use: the page hears it
        assert status["type"] == "status" and status["warming"] and "warming up" in status["message"]
        assert status["id"] == frame["id"] == 10 and frame["type"] == "frame"
        assert [r["type"] for r in replies_to(ws, step(1))] == ["frame"]  # compiled now
        ws.send_json({"type": "settings", "cond_scale": 2.0})
        assert [r["type"] for r in replies_to(ws, step(1))] == ["status", "frame"]  # the guided step: its own
        assert [r["type"] for r in replies_to(ws, step(2))] == ["frame"]
        ws.send_json({"type": "settings", "cond_scale": 1.0})
        assert [r["type"] for r in replies_to(ws, step(0))] == ["frame"]
    assert client.app.state.play.warm == {False, True}


@pytest.mark.parametrize(("flag", "warm"), [([], True), (["--no-compile"], False)])
def test_genie2_play_warms_up_when_it_compiles(world, starts, flag, warm, monkeypatch):
    served_with = {}
    playable = World(world.model, action_names=NAMES, start_frames=starts)
    monkeypatch.setattr(genie2.world, "load", lambda checkpoint=None, **kwargs: playable)
    monkeypatch.setattr(serve, "serve", lambda app, host, port, **kwargs: served_with.update(kwargs, app=app))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli.main(["play", "--port", str(port), *flag])
    assert served_with["warm"] is warm and served_with["app"].state.play.config.compile is warm


def test_genie2_play_decode_steps_reach_the_browser_and_the_terminal_sessions(world, starts, monkeypatch):
    import genie2.play.terminal

    served_with, played = {}, {}
    playable = World(world.model, action_names=NAMES, start_frames=starts)
    monkeypatch.setattr(genie2.world, "load", lambda checkpoint=None, **kwargs: playable)
    monkeypatch.setattr(serve, "serve", lambda app, host, port, **kwargs: served_with.update(app=app))
    monkeypatch.setattr(genie2.play.terminal, "play_terminal", lambda *args, **kwargs: played.update(kwargs))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli.main(["play", "--port", str(port), "--no-compile", "--decode-steps", "4"])
    assert served_with["app"].state.play.config.decode_steps == 4  # each tab's session starts with it
    cli.main(["play", "--terminal", "--decode-steps", "2"])
    assert played["decode_steps"] == 2  # world.session's keyword: WorldModelSession(decode_steps=2)


class HeldWorld:
    """A world whose sessions start once `go` is set: a warm-up that takes as long as the test wants."""

    def __init__(self, world: World, go: threading.Event):
        self.world, self.go = world, go

    def session(self, *args, **kwargs):
        assert self.go.wait(10)
        return self.world.session(*args, **kwargs)


def test_tabs_hear_warming_up_while_the_start_up_warm_up_runs(world, starts, eager_compile, capsys):
    client, go = client_for(world, starts, compile=True), threading.Event()
    state = client.app.state.play
    state.world = HeldWorld(world, go)
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        warming = state.executor.submit(serve.warm_up, state)  # as serve() does first, on the model thread
        while not state.warming:
            time.sleep(0.01)
        ws.send_json({"type": "reset", "start": 1, "id": 3})
        status = ws.receive_json()  # before the reset waits its turn behind the warm-up
        assert status["type"] == "status" and "warming up" in status["message"] and status["id"] == 3
        go.set()
        assert ws.receive_json()["type"] == "frame"
        warming.result(timeout=30)
        assert state.warm == {False, True} and not state.warming
        assert [r["type"] for r in replies_to(ws, step(0))] == ["frame"]
    printed = capsys.readouterr().out
    assert "warming up" in printed and "warmed up" in printed


def dataset(root, names: list[str]):
    DatasetInfo(env="test", env_id="test", frame_size=16, num_actions=len(names), action_names=names).save(root)
    return str(root)


def test_terminal_play_refuses_a_dataset_with_other_actions(world, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(genie2.world, "load", lambda checkpoint=None, **kwargs: world)
    data = dataset(tmp_path, ["noop", "left", "right", "fire"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["play", "--terminal", "--data", data])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and f"the model has {len(NAMES)} actions but {data} has 4" in line, line
    frame = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(InputError, match="4 action names for a world with 7 actions"):
        play_terminal(world, frame, tmp_path / "f.png", False, ["a", "b", "c", "d"], input_fn=lambda p: "q")


def test_terminal_play_stops_on_ctrl_c_saying_how_far_it_got(world, tmp_path, capsys, monkeypatch):
    answers, printed = iter(["0", "2"]), []

    def typed(prompt: str) -> str:
        if (answer := next(answers, None)) is None:
            raise KeyboardInterrupt
        return answer

    frame = np.zeros((16, 16, 3), np.uint8)
    try:
        played = play_terminal(world, frame, tmp_path / "f.png", False, NAMES, typed, printed.append)
    except KeyboardInterrupt:  # caught here, or it would stop the whole test run
        pytest.fail("Ctrl-C escaped play_terminal")
    assert played == 2 and printed[-1].strip() == "stopped after 2 dreamed frames"

    def interrupted(checkpoint=None, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while the world loads

    monkeypatch.setattr(genie2.world, "load", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["play", "--terminal"])
    err = capsys.readouterr().err
    assert (
        exit_info.value.code == 130 and "genie2 play: stopped" in err and "again" not in err and "continue" not in err
    )


def test_keymap_lists_arrows_first_and_reads_move_left_as_an_arrow():
    keys = keymap(CRAFTER)
    assert list(keys)[:4] == ["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown"]
    assert [keys[k] for k in ("ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown")] == [1, 2, 3, 4]
    assert keys["1"] == 0 and "pick_up" not in [CRAFTER[a] for k, a in keys.items() if k.startswith("Arrow")]
    assert keys[" "] == CRAFTER.index("do")  # Crafter's verb on space
    assert [keys[k] for k in "adws"] == [1, 2, 3, 4]  # w a s d press what the arrows press
    unique = {k: a for k, a in keys.items() if k not in "adws"}
    assert sorted(unique.values()) == list(range(len(CRAFTER)))  # else every action has exactly one key
    doom = keymap(["ATTACK", "MOVE_LEFT", "TURN_LEFT", "MoveForward", "move-backward"])
    assert list(doom.items()) == [
        (" ", 0),
        ("ArrowLeft", 1),
        ("ArrowUp", 3),
        ("ArrowDown", 4),
        ("1", 2),
        ("a", 1),
        ("w", 3),
        ("s", 4),
    ]
    info = client_for_app(create_app(tiny_world(len(CRAFTER)), np.zeros((1, 16, 16, 3), np.uint8), CRAFTER))
    listed = info.get("/api/info").json()["keys"]
    assert [key for key, _ in listed][:6] == ["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", " ", "1"]
    assert dict(listed) == keys


def test_actions_named_by_digits_sit_on_their_own_digit_keys():
    keys = keymap([str(i) for i in range(12)])
    assert all(keys[str(i)] == i for i in range(10))  # "0" is on 0, not on 1
    assert sorted(keys.values()) == list(range(12)) and keys["q"] == 10 and keys["e"] == 11
    mixed = keymap(["noop", "3", "left"])  # "3" keeps its key; the spare keys skip it
    assert mixed == {"ArrowLeft": 2, "1": 0, "3": 1, "a": 2}  # a: the left arrow's twin


def png(size: int = 20) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), 90, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("upload", "words"),
    [
        (base64.b64encode(b"this is a text file, not an image").decode(), "not an image"),
        (base64.b64encode(png()[:60]).decode(), "damaged or cut short"),
        ("data:image/png;base64,@@not base64@@", "not valid base64"),
    ],
)
def test_a_bad_upload_says_what_is_wrong_in_words(world, starts, upload, words):
    with client_for(world, starts).websocket_connect("/ws") as ws:
        ws.receive_json()
        [error] = replies_to(ws, {"type": "reset", "image": upload, "id": 1})
        assert error["type"] == "error" and words in error["message"] and "PNG or JPEG" in error["message"]
        assert not any(leak in error["message"] for leak in ("BytesIO", "object at", "<", "0x")), error["message"]
        good = "data:image/png;base64," + base64.b64encode(png()).decode()
        assert replies_to(ws, {"type": "reset", "image": good})[0]["type"] == "frame"  # and the tab goes on


def test_the_page_has_a_favicon(world, starts):
    client = client_for(world, starts)
    for path in ("/favicon.ico", "/favicon.svg"):
        response = client.get(path)
        assert response.status_code == 200 and response.headers["content-type"].startswith("image/svg+xml")
        assert response.text.startswith("<svg")
    assert 'rel="icon" href="/favicon.svg"' in client.get("/").text


@needs_chromium
def test_page_lists_arrows_first_shows_warming_up_and_clears_an_upload_error(world, starts, eager_compile, tmp_path):
    app, go = create_app(world, starts, NAMES, PlayerConfig(compile=True)), threading.Event()
    state = app.state.play
    state.world = HeldWorld(world, go)
    bad, good = tmp_path / "bad.png", tmp_path / "good.png"
    bad.write_bytes(b"not a picture at all, but named like one: " + b"x" * 300)
    good.write_bytes(png())
    with served(app) as port, chromium_page() as page:
        warming = state.executor.submit(serve.warm_up, state)
        while not state.warming:
            time.sleep(0.01)
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("document.getElementById('status').textContent.includes('warming up')")
        go.set()
        page.wait_for_function("window.genie2.frames > 2")
        warming.result(timeout=30)
        assert page.inner_text("#status") == ""  # cleared once the reply it waited for came
        assert page.inner_text("#keymap tr:first-child kbd") == "←"  # arrows before digits
        page.set_input_files("#upload", str(bad))
        page.wait_for_function("document.getElementById('error').textContent.includes('could not read')")
        text = page.inner_text("#error")
        assert "BytesIO" not in text and "object at" not in text
        assert page.evaluate("document.getElementById('error').getBoundingClientRect().width") <= 512
        page.set_input_files("#upload", str(good))
        page.wait_for_function("document.getElementById('error').textContent === ''")  # a good upload clears it
