"""Running the simulator: uvicorn on a socket we bind, in a background thread or blocking.

The server thread owns its own event loop (so a caller already inside an event loop can run
one); all simulator state lives in that loop, and `SimServer.sessions()`/`stats()` reach it
through the loop. uvicorn logs only warnings and up, and never configures global logging.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import uvicorn

from launcher.errors import ConfigError
from launcher.sim.app import SimApp, build_app
from launcher.sim.clock import RealClock, SimClock
from launcher.sim.faults import FaultPlan
from launcher.sim.profiles import Profile, load_profile
from launcher.sim.state import SimState

_T = TypeVar("_T")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


@dataclass
class SimServer:
    """A running simulator: where it listens and what it answers to."""

    base_url: str
    org_id: str
    token: str
    profile: Profile
    seed: int
    time_scale: float
    introspection: bool
    clock: SimClock = field(repr=False)
    _state: SimState = field(repr=False)
    _token: anyio.lowlevel.EventLoopToken | None = field(default=None, repr=False)
    _loop_thread: int | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def sessions(self) -> list[dict[str, Any]]:
        """Every session created, in creation order (what GET /_sim/sessions lists)."""
        return self._in_loop(self._state.snapshot)

    def stats(self) -> dict[str, Any]:
        """Request counts per endpoint, response codes, faults by kind (GET /_sim/stats)."""
        return self._in_loop(self._state.stats)

    def create_times(self) -> list[float]:
        """When every create request arrived (simulator clock; refused ones too), in order."""
        return self._in_loop(lambda: list(self._state.create_times))

    def _in_loop(self, fn: Callable[[], _T]) -> _T:
        # The state is only ever touched from the server's loop: hop there unless stopped.
        if self._token is None or threading.get_ident() == self._loop_thread:
            return fn()
        try:
            return anyio.from_thread.run_sync(fn, token=self._token)
        except RuntimeError:  # the loop has finished: nothing else touches the state now
            return fn()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only then,
    # and without it every response waits ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"the simulator cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="choose another port (0 picks a free one)",
        ) from exc
    return sock


def _profile(profile: Profile | str) -> Profile:
    return load_profile(profile) if isinstance(profile, str) else profile


def _quiet_server(app: SimApp) -> uvicorn.Server:
    """A uvicorn server for `app`: no logs but warnings, no lifespan, h11, quick to stop."""
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="off",
        http="h11",
        ws="none",
        server_header=False,
        timeout_graceful_shutdown=1,
    )
    return uvicorn.Server(config)


@contextmanager
def running_simulator(
    profile: Profile | str = "clean",
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    org_id: str | None = None,
    seed: int = 0,
    time_scale: float = 1.0,
    introspection: bool = False,
    clock: SimClock | None = None,
) -> Iterator[SimServer]:
    """Serve the simulator from a background thread until the block ends (port 0: a free one).

    `clock` drives all of the simulator's time (lifecycles, timestamps, list lag, the rate
    limit, fault delays): real time by default; tests pass a `ManualClock` and advance it.
    `time_scale` simulated seconds of a session's lifecycle pass per clock second.
    """
    if time_scale <= 0:
        raise ConfigError(f"time_scale must be positive, not {time_scale}")
    prof = _profile(profile)
    org_id = org_id or f"org-{secrets.token_hex(8)}"
    token = token or f"cog_{secrets.token_hex(16)}"
    clock = clock if clock is not None else RealClock()
    state = SimState(prof, org_id=org_id, seed=seed, time_scale=time_scale, clock=clock)
    plan = FaultPlan(prof.faults, seed, clock.now())
    app = build_app(state, plan, token=token, introspection=introspection)
    server = _quiet_server(app)
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    sim = SimServer(
        base_url=f"http://{shown}:{bound_port}",
        org_id=org_id,
        token=token,
        profile=prof,
        seed=seed,
        time_scale=time_scale,
        introspection=introspection,
        clock=clock,
        _state=state,
    )
    failure: list[BaseException] = []

    async def main() -> None:
        sim._token = anyio.lowlevel.current_token()
        sim._loop_thread = threading.get_ident()
        app.stopping = anyio.Event()
        await server.serve(sockets=[sock])

    def run() -> None:
        try:
            anyio.run(main, backend="asyncio")
        except BaseException as exc:  # reported to the starting thread
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"devin-sim:{bound_port}", daemon=True)
    sim._thread = thread
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if failure or not thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(
                    f"the simulator did not start on {sim.base_url}"
                    + (f": {failure[0]!r}" if failure else "")
                )
            time.sleep(0.005)
        yield sim
    finally:
        if sim._token is not None and app.stopping is not None:
            with suppress(RuntimeError):  # the loop may already be gone
                anyio.from_thread.run_sync(app.stopping.set, token=sim._token)
        server.should_exit = True
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():  # a handler ignored the graceful deadline: stop waiting for it
            server.force_exit = True
            thread.join(STOP_TIMEOUT)
        sock.close()
        sim._token = None


def serve(
    profile: Profile | str = "clean",
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    org_id: str | None = None,
    seed: int = 0,
    time_scale: float = 1.0,
    introspection: bool = False,
    on_ready: Callable[[SimServer], None] | None = None,
) -> None:
    """Serve in the foreground until KeyboardInterrupt (then stop cleanly and return)."""
    try:
        with running_simulator(
            profile,
            host=host,
            port=port,
            token=token,
            org_id=org_id,
            seed=seed,
            time_scale=time_scale,
            introspection=introspection,
        ) as sim:
            if on_ready is not None:
                on_ready(sim)
            assert sim._thread is not None
            while sim._thread.is_alive():
                sim._thread.join(0.5)
    except KeyboardInterrupt:
        return
    raise ConfigError("the simulator stopped unexpectedly")
