"""Play speed: frames/s and latency per frame through the browser player's server.

Starts `genie2 play` in its own process (as a user would), then drives it two ways:
a WebSocket client that steps as fast as frames come back (frames as JSON with base64 PNG), and
(with --browser) the real page in headless Chromium (frames as raw pixels), whose own frames/s
and latency counters are read after it has played.
Prints a table, writes JSON.

    python benchmarks/play.py                       # the pretrained world, WebSocket client
    python benchmarks/play.py --browser             # also the page in /usr/bin/chromium
    python benchmarks/play.py --checkpoint RUN      # any world-model checkpoint
    python benchmarks/play.py --raster speculative  # a raster world's whole-frame passes
    python benchmarks/play.py --checkpoint RUN --decode-steps 1  # a parallel world in one pass a frame
    PYTHONPATH=OLD/src python benchmarks/play.py --label before --out benchmarks/results/play-cpu-before-after.jsonl
    python benchmarks/play.py --label after --out benchmarks/results/play-cpu-before-after.jsonl
                                                    # code before and after a change, back to back (.jsonl appends)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from report import write_report

from genie2.model.masking import RASTER_DECODINGS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, port: int) -> subprocess.Popen:
    """`genie2 play` on a free port; returns once it answers."""
    cmd = [sys.executable, "-m", "genie2.cli", "play", "--port", str(port), "--max-sessions", "1"]
    cmd += ["--checkpoint", args.checkpoint] if args.checkpoint else []
    cmd += ["--no-compile"] if args.no_compile else []
    cmd += ["--raster", args.raster] if args.raster else []
    cmd += ["--decode-steps", str(args.decode_steps)] if args.decode_steps else []
    log = tempfile.TemporaryFile(mode="w+")  # not a pipe: nobody reads it while the server runs
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300  # compiling the decode step the first time takes a while
    while time.time() < deadline:
        if server.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"genie2 play exited: {log.read()}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=1)
            return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("genie2 play did not start within 5 minutes")


async def drive_websocket(port: int, frames: int, warmup: int) -> dict:
    """Step as fast as frames come back, cycling through the actions; per-frame latencies."""
    import websockets

    info = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info").read())
    # no keepalive pings: the server compiles a world's decode steps on its one model thread during the
    # warm-up steps, and answers no ping until that is done (a parallel world's passes take over 20 s)
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=None, ping_interval=None) as ws:
        json.loads(await ws.recv())  # hello
        await ws.send(json.dumps({"type": "reset", "start": 0}))
        json.loads(await ws.recv())
        latencies, computes, start = [], [], None
        for i in range(warmup + frames):
            if i == warmup:
                start = time.perf_counter()
            sent = time.perf_counter()
            await ws.send(json.dumps({"type": "step", "keys": [i % len(info["action_names"])]}))
            reply = json.loads(await ws.recv())
            if reply["type"] != "frame":
                raise RuntimeError(f"the server answered {reply}")
            if i >= warmup:
                latencies.append((time.perf_counter() - sent) * 1000)
                computes.append(reply["compute_ms"])
        seconds = time.perf_counter() - start
    return summary("websocket", frames, seconds, latencies, computes)


def drive_browser(port: int, seconds: float, chromium: str) -> dict:
    """Let the page play on its own for `seconds`; read its own counters every second."""
    from playwright.sync_api import sync_playwright

    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=flags)
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("window.genie2.frames > 10", timeout=120_000)
        first = page.evaluate("window.genie2.frames")
        fps, latencies = [], []
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            page.wait_for_timeout(1000)
            fps.append(page.evaluate("window.genie2.fps"))
            latencies.append(page.evaluate("window.genie2.latencyMs"))
        frames = page.evaluate("window.genie2.frames") - first
        elapsed = time.perf_counter() - start
        browser.close()
    row = summary("browser page", frames, elapsed, latencies, [])
    row["page_fps_median"] = statistics.median(fps)
    return row


def summary(client: str, frames: int, seconds: float, latencies: list, computes: list) -> dict:
    """One table row."""
    ordered = sorted(latencies)
    return dict(
        client=client,
        frames=frames,
        frames_per_s=frames / seconds,
        latency_ms_median=statistics.median(ordered),
        latency_ms_p90=ordered[int(0.9 * (len(ordered) - 1))],
        compute_ms_median=statistics.median(computes) if computes else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="world-model checkpoint (default: the pretrained world)")
    parser.add_argument("--frames", type=int, default=100, help="frames the WebSocket client times")
    parser.add_argument("--warmup", type=int, default=10, help="frames stepped before timing")
    parser.add_argument("--browser", action="store_true", help="also time the page in headless Chromium")
    parser.add_argument("--browser-seconds", type=float, default=10.0, help="how long the page plays")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable for --browser")
    parser.add_argument("--no-compile", action="store_true", help="serve without compiling the decode step")
    parser.add_argument(
        "--raster", choices=RASTER_DECODINGS, help="how a raster world decodes a frame (default: the world's own)"
    )
    parser.add_argument(
        "--decode-steps", type=int, metavar="K", help="passes per frame of a parallel world (default: the world's own)"
    )
    parser.add_argument("--label", default="", help="a name for this run in the JSON (e.g. before, after)")
    parser.add_argument("--out", default="benchmarks/results/play-cpu.json", help="where to write the JSON")
    args = parser.parse_args()

    port = free_port()
    server = start_server(args, port)
    try:
        rows = [asyncio.run(drive_websocket(port, args.frames, args.warmup))]
        if args.browser:
            rows.append(drive_browser(port, args.browser_seconds, args.chromium))
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"{'client':>13} {'frames':>6} {'frames/s':>9} {'latency ms':>11} {'p90 ms':>7} {'model ms':>9}")
    for row in rows:
        compute = f"{row['compute_ms_median']:>9.1f}" if row["compute_ms_median"] is not None else f"{'-':>9}"
        print(
            f"{row['client']:>13} {row['frames']:>6} {row['frames_per_s']:>9.1f} "
            f"{row['latency_ms_median']:>11.1f} {row['latency_ms_p90']:>7.1f} {compute}"
        )
    write_report(args.out, args, rows)


if __name__ == "__main__":
    main()
