"""`pr-comment` and `ci`: the pull-request loop. One comment per pull request and identity,
edited in place; the GitHub Action's steps (validate, plan, apply, results) with its outputs,
step summary and annotations."""

from __future__ import annotations

import glob
import os
import shlex
import sys
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

import click

from launcher.cli.common import err, load_plan
from launcher.errors import ConfigError, ExitCode, FleetError, GitHubError, ManifestError, Problem
from launcher.views.ghactions import append_summary, cap_annotations, event_pr, write_outputs
from launcher.views.markdown import COMMENT_LIMIT, SUMMARY_LIMIT, digest_in, fit_markdown, size

if TYPE_CHECKING:
    from launcher.api.github import GitHubClient
    from launcher.spec.plan import Plan
    from launcher.views.markdown import PlanView

_COMMENT_HINT = "the full text is in the workflow log"


@dataclass(frozen=True)
class _Target:
    """Where a comment goes, from the flags and the workflow's environment."""

    pr: int | None
    repo: str | None
    author: str | None
    strict: bool


def _target(pr: int | None, repo: str | None, author: str | None, strict: bool) -> _Target:
    return _Target(pr or event_pr(os.environ.get("GITHUB_EVENT_PATH")), repo, author, strict)


def _post(target: _Target, ident: str, body: str, *, fallback: bool = True) -> str | None:
    """Post or edit the comment; its URL, or None when a read-only token made it degrade to a
    warning and (`fallback`) the markdown in the step summary; an error instead with --strict."""
    from launcher.api.github import GitHubClient, GitHubConfig, marker

    room = COMMENT_LIMIT - size(marker(ident)) - 1
    body = fit_markdown(body, room, more=_COMMENT_HINT)
    config = GitHubConfig.from_env(os.environ, repo=target.repo)
    try:
        with GitHubClient(config) as gh:
            pr = target.pr or _commit_prs(gh)[0]
            posted = gh.upsert(pr, ident, body, author=target.author)
    except GitHubError as exc:
        if not exc.read_only or target.strict:
            raise
        click.echo(f"::warning title=devin-fleet pr-comment::{_data(exc.message)}")
        if not fallback:  # the caller writes the step summary itself
            err.print(f"warning: {exc.message}; see the step summary", markup=False)
        elif append_summary(os.environ.get("GITHUB_STEP_SUMMARY"), body):
            err.print(f"warning: {exc.message}; the markdown went to the step summary", markup=False)
        else:  # not in a workflow: the text is not lost
            err.print(f"warning: {exc.message}; the markdown follows", markup=False)
            click.echo(body, nl=False)
        return None
    extra = f" (and deleted {posted.removed} duplicate(s))" if posted.removed else ""
    err.print(f"{posted.outcome.value} {posted.comment.url}{extra}", markup=False)
    return posted.comment.url


def _commit_prs(gh: GitHubClient) -> list[int]:
    """No --pr and no pull request in the event (a push to main): the PRs `$GITHUB_SHA` merged."""
    sha = os.environ.get("GITHUB_SHA", "")
    prs = gh.pulls_of_commit(sha) if sha else []
    if not prs:
        raise ConfigError(
            "which pull request? no --pr, $GITHUB_EVENT_PATH names none"
            + (f", and commit {sha[:12]} belongs to none" if sha else ""),
            hint="pass --pr N, or run in a pull_request workflow or on a merged commit",
        )
    return prs


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _target_options(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option(
        "--pr", type=click.IntRange(min=1), help="Pull request (default: $GITHUB_EVENT_PATH's)."
    )(f)
    f = click.option("--repo", help="owner/name (default: $GITHUB_REPOSITORY).")(f)
    f = click.option(
        "--author",
        help="Whose comments are this tool's (default: the token's user; github-actions[bot] "
        "when the token may not read /user, as a workflow's GITHUB_TOKEN).",
    )(f)
    return click.option(
        "--strict", is_flag=True, help="Fail (exit 1) when the token may not comment, as on a fork's PR."
    )(f)


@click.command("pr-comment")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option(
    "--id",
    "ident",
    default="devin-fleet",
    show_default=True,
    help="The comment's identity (a hidden marker): one comment per id, e.g. one per manifest.",
)
@_target_options
def pr_comment(
    file: IO[str], ident: str, pr: int | None, repo: str | None, author: str | None, strict: bool
) -> None:
    """Post FILE (`-`: stdin) as a comment on a pull request of $GITHUB_REPOSITORY, or edit this
    tool's comment with the same --id in place; cut to GitHub's 65,536 characters."""
    url = _post(_target(pr, repo, author, strict), ident, file.read())
    if url:
        click.echo(url)


# =========================================================================== ci

COMMANDS = ("validate", "plan", "apply", "results")


def _manifests(spec: str) -> list[str]:
    """Whitespace- or newline-separated paths and globs, expanded, in order, once each."""
    out: list[str] = []
    for word in shlex.split(spec):
        found = sorted(glob.glob(word, recursive=True)) if glob.has_magic(word) else [word]
        if not found:
            raise ConfigError(f"manifests: {word!r} matches no file", hint="check the action's input")
        out += [f for f in found if f not in out]
    if not out:
        raise ConfigError("no manifests given", hint="set the action's `manifests` input")
    return out


@click.command("ci")
@click.argument("command", type=click.Choice(COMMANDS), envvar="FLEET_CI_COMMAND")
@click.option("--manifests", envvar="FLEET_CI_MANIFESTS", required=True, help="Paths or globs.")
@click.option(
    "--comment/--no-comment",
    envvar="FLEET_CI_COMMENT",
    default=False,
    help="Post the plan (or results) on the pull request, one comment per manifest.",
)
@click.option("--ledger", envvar="FLEET_CI_LEDGER", default="", help="Ledger file (one manifest).")
@click.option("--args", "extra", envvar="FLEET_CI_ARGS", default="", help="More arguments for apply.")
@click.option(
    "--plan-digest",
    envvar="FLEET_CI_PLAN_DIGEST",
    default="",
    help="apply: the reviewed digest (default: read from the plan comment on the pull request).",
)
@click.option("--out-dir", envvar="FLEET_CI_OUT_DIR", default="devin-fleet-out", show_default=True)
@_target_options
def ci(
    command: str,
    manifests: str,
    comment: bool,
    ledger: str,
    extra: str,
    plan_digest: str,
    out_dir: str,
    pr: int | None,
    repo: str | None,
    author: str | None,
    strict: bool,
) -> None:
    """What the GitHub Action runs: COMMAND over the manifests, with the step summary,
    annotations (at most 10) and the outputs has-changes, plan-digest, comment-url."""
    paths = _manifests(manifests)
    if ledger and len(paths) > 1:
        raise click.BadParameter("one ledger for several manifests", param_hint="--ledger")
    target = _target(pr, repo, author, strict)
    if command == "validate":
        _ci_validate(paths)
    elif command == "plan":
        _ci_plan(paths, ledger or None, out_dir, target if comment else None)
    elif command == "results":
        _ci_results(paths, ledger or None, target if comment else None)
    else:
        _ci_apply(paths, ledger or None, extra, plan_digest, target)


def _problems(path: str, exc: FleetError) -> list[Problem]:
    if isinstance(exc, ManifestError) and exc.problems:
        return exc.problems
    return [Problem(path, None, None, "", exc.message, exc.hint)]


def _fail_with_annotations(failed: list[tuple[str, FleetError]]) -> None:
    """Every problem in the log; at most 10 annotations; the summary; exit 1."""
    from launcher.cli.plan_cmds import _annotation

    lines = []
    for path, exc in failed:
        err.print(exc.render(), markup=False)
        lines += [_annotation("error", p) for p in _problems(path, exc)]
    for line in cap_annotations(lines):
        click.echo(line)
    text = "### devin-fleet: invalid manifests\n\n" + "\n".join(
        f"- `{path}`: {len(_problems(path, exc))} problem(s)" for path, exc in failed
    )
    append_summary(os.environ.get("GITHUB_STEP_SUMMARY"), text + "\n")
    write_outputs(os.environ.get("GITHUB_OUTPUT"), {"has-changes": "false"})
    sys.exit(ExitCode.error)


def _load_all(paths: list[str]) -> list[Plan]:
    """Every manifest's plan, its warnings annotated; or every problem annotated and exit 1."""
    from launcher.cli.plan_cmds import _annotation

    failed: list[tuple[str, FleetError]] = []
    plans = []
    for path in paths:
        try:
            plans.append((path, load_plan(path)))
        except FleetError as exc:
            failed.append((path, exc))
    if failed:
        _fail_with_annotations(failed)
    for path, p in plans:
        for w in p.warnings:
            click.echo(_annotation("warning", Problem(path, None, None, "", w)))
    return [p for _, p in plans]


def _ci_validate(paths: list[str]) -> None:
    plans = _load_all(paths)
    append_summary(
        os.environ.get("GITHUB_STEP_SUMMARY"),
        "### devin-fleet: manifests valid\n\n"
        + "\n".join(f"- `{p.manifest.label}`: {len(p):,} sessions" for p in plans)
        + "\n",
    )
    write_outputs(os.environ.get("GITHUB_OUTPUT"), {"has-changes": "false"})


def _plan_view(p: Plan, ledger: str | None, online: bool) -> PlanView:
    """The plan's diff (against the API in memory when online, else the ledger), with the
    changed fields of `~` sessions and the waves: what `plan -o markdown` shows."""
    from launcher.cli.plan_cmds import markdown_view, plan_preview

    return markdown_view(p, plan_preview(p, ledger, online), online)


def _ci_plan(paths: list[str], ledger: str | None, out_dir: str, target: _Target | None) -> None:
    from launcher.views.markdown import render_plan_markdown

    plans = _load_all(paths)
    online = bool(os.environ.get("DEVIN_API_KEY"))
    digests, urls, pending = [], [], False
    os.makedirs(out_dir, exist_ok=True)
    for p in plans:
        view = _plan_view(p, ledger, online)
        pending |= any(r.change != "=" for r in view.rows)
        md = render_plan_markdown(view, more=_COMMENT_HINT)
        with open(os.path.join(out_dir, f"{p.campaign}.plan.json"), "wb") as f:
            f.writelines(p.json_chunks())
        with open(os.path.join(out_dir, f"{p.campaign}.plan.md"), "w", encoding="utf-8") as f:
            f.write(md)
        room = SUMMARY_LIMIT // len(plans) - 4096
        summary = render_plan_markdown(view, budget=room, unit="bytes", more="the plan artifact")
        append_summary(os.environ.get("GITHUB_STEP_SUMMARY"), summary)
        err.print(f"{p.campaign}: {len(p)} sessions, plan digest {p.digest}", markup=False)
        digests.append((p.campaign, p.digest))
        if target is not None and (url := _post(target, f"plan-{p.campaign}", md, fallback=False)):
            urls.append(url)
    single = len(digests) == 1
    write_outputs(
        os.environ.get("GITHUB_OUTPUT"),
        {
            "has-changes": "true" if pending else "false",
            "plan-digest": digests[0][1] if single else "\n".join(f"{c} {d}" for c, d in digests),
            "comment-url": "\n".join(urls),
        },
    )


def _reviewed_digest(p: Plan, target: _Target) -> str:
    """The digest in this tool's plan comment on the pull request that was merged: the event's,
    or the one `$GITHUB_SHA` came from."""
    from launcher.api.github import GitHubClient, GitHubConfig

    with GitHubClient(GitHubConfig.from_env(os.environ, repo=target.repo)) as gh:
        prs = [target.pr] if target.pr else _commit_prs(gh)
        for pr in prs:
            found = gh.find(pr, f"plan-{p.campaign}", author=target.author)
            if found is not None and (digest := digest_in(found.body)):
                err.print(f"reviewed plan: {found.url} ({digest})", markup=False)
                return digest
    where = ", ".join(f"#{n}" for n in prs) or "no pull request found for this commit"
    raise ConfigError(
        f"no reviewed plan of campaign {p.campaign!r} to check against ({where}); nothing was sent",
        hint="run the plan job on the pull request first (comment: true), or pass plan-digest",
    )


def _ci_apply(
    paths: list[str], ledger: str | None, extra: str, plan_digest: str, target: _Target
) -> None:
    """Apply one manifest, exactly the reviewed plan: the digest given, or the PR comment's."""
    from launcher.cli.apply_cmd import apply

    if len(paths) != 1:
        raise ConfigError(
            f"apply takes one manifest a step, got {len(paths)}",
            hint="a matrix over campaigns, a concurrency group each (docs/github-actions.md)",
        )
    p = load_plan(paths[0], "send")
    digest = plan_digest.strip() or _reviewed_digest(p, target)
    write_outputs(os.environ.get("GITHUB_OUTPUT"), {"plan-digest": digest, "has-changes": "false"})
    args = [paths[0], "--yes", "--plan-digest", digest, *shlex.split(extra)]
    argv = args + (["--ledger", ledger] if ledger else [])
    apply.main(args=argv, prog_name="devin-fleet apply", standalone_mode=False)


def _ci_results(paths: list[str], ledger: str | None, target: _Target | None) -> None:
    from launcher.cli.report_cmds import _view
    from launcher.views.results import build_results, to_markdown

    offline = not os.environ.get("DEVIN_API_KEY")
    urls = []
    for path in paths:
        p = load_plan(path, "read")
        view = _view(p, ledger, offline, None, None)
        md = to_markdown(build_results(view, p.schemas))
        append_summary(os.environ.get("GITHUB_STEP_SUMMARY"), md)
        if target is not None and (url := _post(target, f"results-{p.campaign}", md, fallback=False)):
            urls.append(url)
    write_outputs(os.environ.get("GITHUB_OUTPUT"), {"comment-url": "\n".join(urls)})
