"""`sim`: serve the local Devin API simulator."""

from __future__ import annotations

import contextlib
from typing import Any

import click

from launcher.cli.common import err


@click.command()
@click.option("--port", default=8765, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--token", help="Token to accept (generated when not given).")
@click.option("--org", "org_id", help="Organization id (generated when not given).")
@click.option("--profile", default="clean", show_default=True, help="Profile name or file.")
@click.option("--seed", default=0, show_default=True)
@click.option("--time-scale", default=1.0, show_default=True, help="Simulated seconds per real second.")
@click.option("--introspection", is_flag=True, help="Serve /_sim/... test endpoints.")
def sim(
    port: int,
    host: str,
    token: str | None,
    org_id: str | None,
    profile: str,
    seed: int,
    time_scale: float,
    introspection: bool,
) -> None:
    """Serve the local Devin API simulator until interrupted."""
    from launcher.sim import serve

    def ready(server: Any) -> None:
        click.echo(f"export DEVIN_API_BASE_URL={server.base_url}")
        click.echo(f"export DEVIN_ORG_ID={server.org_id}")
        click.echo(f"export DEVIN_API_KEY={server.token}")
        # its list lag is known exactly: apply need not assume the worst before its first create
        click.echo(f"export DEVIN_FLEET_LIST_LAG={server.profile.faults.list_lag_seconds:g}")
        err.print(f"simulator ({server.profile.name}) serving; Ctrl-C to stop")

    with contextlib.suppress(KeyboardInterrupt):
        serve(
            profile,
            host=host,
            port=port,
            token=token,
            org_id=org_id,
            seed=seed,
            time_scale=time_scale,
            introspection=introspection,
            on_ready=ready,
        )
