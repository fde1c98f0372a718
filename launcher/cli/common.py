"""What every command shares: the two consoles, common options, loading a plan, the API
configuration (or the embedded simulator), the follow commands' ledger (rebuilt from the API on a
fresh clone) and one refresh of the campaign, confirmation and JSON output."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click
from rich.console import Console

from launcher.errors import (
    ConfigError,
    ConfirmationError,
    FleetError,
    LedgerError,
    ManifestError,
    SelectorError,
)
from launcher.ledger.location import describe, ledger_exists, ledger_location, open_ledger
from launcher.ledger.store import Ledger
from launcher.spec.build import plan_manifest, secrets_warning
from launcher.spec.plan import Plan

if TYPE_CHECKING:
    from launcher.api.client import ApiConfig
    from launcher.run.status import CampaignView

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


class FiniteRange(click.FloatRange):
    """A number of seconds or a rate: click's FloatRange lets `inf` and `nan` through (a usage
    error here, exit 64, instead of an OverflowError deep in pacing)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def ledger_option(f: F) -> F:
    return click.option(
        "--ledger",
        metavar="PATH|URL",
        envvar="DEVIN_FLEET_LEDGER",
        help="Ledger: a file path, sqlite:///path or postgresql://user@host/db (default: "
        ".devin-fleet/<campaign>.db by the manifest; env DEVIN_FLEET_LEDGER).",
    )(f)


def lock_timeout_option(f: F) -> F:
    return click.option(
        "--lock-timeout",
        metavar="DURATION",
        envvar="DEVIN_FLEET_LOCK_TIMEOUT",
        help="While another run holds the campaign's lock, wait this long for it (seconds, or "
        "90s, 5m; default 10s), then exit 10 naming the holder.",
    )(f)


def lock_wait(text: str | None) -> float:
    """--lock-timeout: 0 (do not wait), or a duration (seconds, or 90s, 5m, 2h)."""
    from launcher.run.options import LOCK_TIMEOUT
    from launcher.spec.model import parse_duration

    if text is None:
        return LOCK_TIMEOUT
    try:
        return 0.0 if text.strip() in ("0", "0s", "0.0") else parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--lock-timeout") from None


def api_options(f: F) -> F:
    f = click.option("--base-url", help="API base URL (env DEVIN_API_BASE_URL).")(f)
    return click.option("--org", "org_id", help="Organization id (env DEVIN_ORG_ID).")(f)


def outcome_option(f: F) -> F:
    from launcher.run.outcome import Outcome  # not run.status: no HTTP client at start-up

    return click.option(
        "--outcome",
        "outcomes",
        multiple=True,
        type=click.Choice([o.value for o in Outcome]),
        help="Only sessions with this outcome (repeatable).",
    )(f)


def sim_options(f: F) -> F:
    f = click.option(
        "--sim", is_flag=True, help="Rehearse against the embedded simulator (in-process, loopback)."
    )(f)
    f = click.option(
        "--sim-profile",
        default="clean",
        show_default=True,
        help="Simulator profile name or file, with --sim.",
    )(f)
    return click.option(
        "--sim-time-scale",
        default=60.0,
        show_default=True,
        help="Simulated seconds per real second, with --sim.",
    )(f)


# The library names an invalid option by its field; the command line by its flag, which is
# the field with dashes unless listed here.
FLAG_OF = {"run_timeout": "--timeout"}


def flag_worded(error: FleetError) -> FleetError:
    """`error`, worded for the command line: "rate must be positive (got 0.0)" from the library
    reads "--rate must be positive" (the flag, as the user typed it)."""
    if isinstance(error, ConfigError | SelectorError) and error.option and error.problem:
        flag = FLAG_OF.get(error.option, "--" + error.option.replace("_", "-"))
        error.message = f"{flag} {error.problem}"
    return error


def load_plan(path: str, purpose: Literal["check", "send", "read"] = "check") -> Plan:
    """The manifest's plan, its warnings printed. `check` (validate, plan) warns about unset
    session-secret variables; `send` (apply, cancel) does not (apply refuses with an error);
    `read` (status, results, unlock) neither warns nor says "nothing was sent" on an error."""
    try:
        plan = plan_manifest(path)
    except ManifestError as exc:
        if purpose == "read":
            raise ManifestError(exc.problems, nothing_sent=False) from None
        raise
    skip = secrets_warning(plan.missing_secret_env()) if purpose != "check" else None
    for w in plan.warnings:
        if w != skip:
            err.print(f"warning: {w}", markup=False)
    return plan


@contextlib.contextmanager
def api_config(
    base_url: str | None,
    org_id: str | None,
    sim: bool = False,
    profile: str = "clean",
    time_scale: float = 60.0,
    *,
    offers_sim: bool = False,
    offers_offline: bool = False,
) -> Iterator[ApiConfig]:
    from launcher.api.client import ApiConfig

    if not sim:
        try:
            cfg = ApiConfig.from_env(os.environ, base_url=base_url, org_id=org_id)
        except ConfigError as exc:
            if not os.environ.get("DEVIN_API_KEY") and not exc.message.startswith("DEVIN_API_BASE"):
                # only `apply` has --sim; the others follow a simulator served on its own
                exc.hint = (
                    (exc.hint or "")
                    + (
                        ", or rehearse with `devin-fleet apply MANIFEST --sim`"
                        if offers_sim
                        else ", or rehearse: `devin-fleet sim` prints the export lines to use"
                    )
                    + (", or pass --offline: what the ledger knows" if offers_offline else "")
                )
            raise
        yield cfg
        return
    from launcher.sim import running_simulator

    with running_simulator(profile, time_scale=time_scale) as server:
        err.print(
            f"simulator: {server.base_url} (org {server.org_id}, profile {server.profile.name})",
            markup=False,
        )
        yield ApiConfig(server.base_url, server.org_id, server.token)


def confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfirmationError("no terminal to confirm on", hint="pass --yes to proceed")
    if not click.confirm(question, default=False, err=True):
        raise click.Abort()


def emit_json(data: Any) -> None:
    # One line, C encoder: `plan -o json` of 10,000 sessions is ~30 MB; indenting costs 4x.
    click.echo(json.dumps(data, ensure_ascii=False))


async def refresh_campaign(p: Plan, cfg: ApiConfig, led: Ledger) -> CampaignView:
    """The campaign as the API sees it now, recorded in the ledger (one refresh)."""
    from launcher.api.client import DevinClient
    from launcher.run.status import refresh

    async with DevinClient(cfg) as client:
        return await refresh(p, client, led)


def warn(view: CampaignView) -> None:
    for w in view.warnings:
        err.print(f"warning: {w}", markup=False)


@contextlib.contextmanager
def follow_ledger(p: Plan, ledger: str | None, offline: bool = False) -> Iterator[tuple[Ledger, bool]]:
    """The campaign's ledger, and whether it is new: on a fresh clone (no ledger) with
    credentials, an empty one is created and the caller rebuilds it from the API (the API is
    the source of truth); offline, or without credentials, "no ledger" is an error."""
    where = describe(ledger_location(p.manifest.path, p.campaign, ledger))
    exists = ledger_exists(p.manifest.path, p.campaign, ledger)
    if exists or offline or not os.environ.get("DEVIN_API_KEY"):
        try:
            with open_ledger(p.manifest.path, p.campaign, ledger, create=False) as led:
                yield led, False
        except LedgerError as exc:
            if not exists:
                exc.hint = (
                    "run `devin-fleet apply` first, pass --ledger PATH, or set DEVIN_API_KEY "
                    "and DEVIN_ORG_ID to rebuild it from the API (sessions are found by their tags)"
                )
            raise
        return
    with open_ledger(p.manifest.path, p.campaign, ledger) as led:
        err.print(
            f"note: no ledger at {where}: rebuilding it from the API (sessions found by their "
            "identity tags)",
            markup=False,
        )
        yield led, True
