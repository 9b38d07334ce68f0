"""Running the browser player: uvicorn in a thread, the model on the main thread, and a warm-up."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Executor, Future

import numpy as np
from fastapi import FastAPI

from genie2.play.protocol import PlayerConfig
from genie2.world import World


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
        """Queue `fn(*args, **kwargs)` for `run_until`; its Future holds the result."""
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
