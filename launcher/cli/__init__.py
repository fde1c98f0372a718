"""The `devin-fleet` command line: a thin layer over the library; the only place that prints
or exits. One module per group of commands. Exit codes are fixed
(`launcher.errors.ExitCode`, tabled in the README)."""

from __future__ import annotations

import gc
import sys
from typing import Any

# Start-up: importing the CLI allocates a great deal and frees almost nothing, so collecting
# meanwhile is wasted (~10 ms). What is alive once it is imported (modules, classes, compiled
# schemas) lives until the process ends: it is frozen out of every collection, the first
# one after the import (20-40 ms) and the one at exit (~50 ms) included.
_collecting = gc.isenabled()
gc.disable()
try:
    import click

    from launcher.cli.apply_cmd import apply
    from launcher.cli.common import err, flag_worded
    from launcher.cli.follow_cmds import cancel, status, unlock
    from launcher.cli.ledger_cmds import ledger
    from launcher.cli.plan_cmds import plan, schema, validate
    from launcher.cli.pr_cmds import ci, pr_comment
    from launcher.cli.report_cmds import message, report, results
    from launcher.cli.sim_cmd import sim
    from launcher.errors import ExitCode, FleetError, fleet_errors
finally:
    if _collecting:
        gc.freeze()
        gc.enable()

EXIT_CODES = {int(code): code.meaning for code in ExitCode}


class _Group(click.Group):
    """Renders FleetErrors as located messages, however deep they were raised (tracebacks
    only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (FleetError, BaseExceptionGroup) as exc:
            errors = fleet_errors(exc)
            if not errors or (ctx.obj and ctx.obj.get("debug")):
                raise
            for text in dict.fromkeys(flag_worded(e).render() for e in errors):
                err.print(text, markup=False)
            sys.exit(errors[0].exit_code)
        except click.UsageError as exc:
            exc.exit_code = ExitCode.usage  # type: ignore[misc]  # EX_USAGE: 2 means "changes" for plan
            raise


@click.group(
    cls=_Group,
    invoke_without_command=True,
    no_args_is_help=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="devin-fleet")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Declarative batch launcher for Devin sessions: validate, plan, apply, status, results."""
    ctx.obj = {"debug": debug}
    if ctx.invoked_subcommand is None:  # bare `devin-fleet`: help, and success (2 means changes)
        click.echo(ctx.get_help())
        ctx.exit(ExitCode.ok)


def main() -> None:
    cli(prog_name="devin-fleet")


for _command in (
    *(validate, plan, schema, apply, status, results, report, message, cancel, unlock, ledger),
    *(sim, pr_comment, ci),
):
    cli.add_command(_command)
