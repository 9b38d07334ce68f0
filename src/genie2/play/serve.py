"""Running the browser player: the port checked first, uvicorn in a thread, the model on the main thread, and a
warm-up (compiling the plain and the guided decode step) as the model thread's first job, while the page already
answers and says it is warming up."""

from __future__ import annotations

import errno
import queue
import socket
import threading
from concurrent.futures import Executor, Future

from fastapi import FastAPI

from genie2.errors import InputError
from genie2.play.protocol import PlayServer


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
                except Exception as error:  # handed to the awaiting handler, which answers it
                    future.set_exception(error)
                except BaseException:  # Ctrl-C: the server stops (the handler hears that, not the interrupt)
                    future.set_exception(RuntimeError("the server is stopping"))
                    raise


def check_port(host: str, port: int) -> None:
    """Raise InputError unless `port` is in range and can be bound on `host` (checked before the world loads)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InputError(f"--port must be in 1..65535, got {port!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn chooses
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a closing port is free
            s.bind((host, port))
    except OSError as error:
        message = f"cannot serve on {host}:{port}: {error.strerror or error} (check --host and --port)"
        if error.errno == errno.EADDRINUSE:
            message = f"port {port} is already in use on {host}: stop what holds it or pass another --port"
        raise InputError(message) from None


WS_PING_TIMEOUT = 120.0  # seconds: longer than a cold compile of both decode steps on 2 cores


def serve(
    app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning", warm: bool = False
) -> None:
    """Run the app with uvicorn (in a thread) until interrupted; the model runs on this thread, with `warm`
    compiling its decode steps first (while the page already answers). Raises InputError when the server
    could not start (its port taken since `check_port`, say)."""
    import uvicorn

    state: PlayServer = app.state.play
    limit = state.config.max_message_bytes
    # a compile holds the interpreter for seconds at a time, so the server's pongs can come late: allow
    # WS_PING_TIMEOUT before calling a tab dead (the protocol closes silent tabs itself, --idle-timeout)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, ws_max_size=limit,
                            ws_ping_timeout=WS_PING_TIMEOUT)  # fmt: skip
    server = uvicorn.Server(config)
    executor, done = MainThreadExecutor(), threading.Event()
    state.executor = executor
    if warm:
        executor.submit(warm_up, state)

    def run_server() -> None:
        try:
            server.run()
        except SystemExit:  # uvicorn's way to say it could not start (it logged why); serve raises below
            pass
        finally:
            done.set()

    thread = threading.Thread(target=run_server, name="genie2-http", daemon=True)
    thread.start()
    try:
        executor.run_until(done)
    except KeyboardInterrupt:
        server.should_exit = True
        thread.join(timeout=5)
        return
    if not server.started:
        raise InputError(f"the server could not start on {host}:{port} (see the message above)")


def warm_up(state: PlayServer) -> None:
    """Compile the plain and the guided decode step, saying so on the terminal (tabs meanwhile hear "warming up")."""
    print("warming up: compiling the decode step, plain and guided (cached on disk after the first time)", flush=True)
    try:
        state.warm_up()
    except Exception as error:  # said here: on the model thread nobody awaits the warm-up's result
        print(f"the warm-up failed ({type(error).__name__}: {error}); players will see the error", flush=True)
        return
    print("warmed up: frames are fast from now on", flush=True)
