"""A faithful local simulator of the Devin v3 API (devin-api.md), served over real loopback TCP.

`running_simulator(...)` serves it from a background thread for tests and `apply --sim`;
`serve(...)` serves it in the foreground for the `devin-fleet sim` command. Behaviour (session
outcomes, pace, faults, tokens, seed data) comes from a `Profile`: a built-in name in `PROFILES`
or a JSON/YAML file read by `load_profile`. Time comes from a `SimClock`: real by default, a
`ManualClock` that tests advance explicitly.
"""

from launcher.sim.clock import ManualClock, RealClock, SimClock
from launcher.sim.profiles import PROFILES, Profile, load_profile
from launcher.sim.server import SimServer, running_simulator, serve

__all__ = [
    "PROFILES",
    "ManualClock",
    "Profile",
    "RealClock",
    "SimClock",
    "SimServer",
    "load_profile",
    "running_simulator",
    "serve",
]
