"""Design drift: imports point one way, each third-party library has one home, only the CLI
prints or exits, every module says what it owns, and the README and docs/cli.md document
the CLI."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click
import pytest

from launcher.cli import EXIT_CODES, cli
from launcher.errors import ExitCode

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "launcher"

# What each module may import from the package: data flows source -> manifest -> plan ->
# apply -> ledger; status reads the ledger and the API, cancel/results build on status; the
# simulator shares only the API model, file reading and (its pacing model) the pacer; the CLI
# sits on top of everything.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "source": {"errors"},
    "models": {"errors"},
    "templating": {"errors"},
    "model": {"errors"},
    "manifest": {"errors", "source", "model"},
    "items": {"errors", "manifest", "model", "source"},
    "plan": {"errors", "manifest", "templating", "digest", "identity", "diff"},
    "waves": {"manifest", "model", "templating"},
    "identity": {"models"},
    "digest": {"errors"},
    "check": {"errors", "build"},
    "build": {
        "identity",
        "errors",
        "manifest",
        "model",
        "models",
        "templating",
        "items",
        "source",
        "plan",
        "waves",
    },
    "client": {"errors", "models"},
    "github": {"errors"},
    "adaptive": set(),
    "pacing": {"adaptive"},
    "migrations": set(),
    "records": set(),
    "store": {"errors", "records"},
    "sqlite_attempts": {"errors", "records", "sqlite_errors"},
    "sqlite": {
        "sqlite_attempts",
        "errors",
        "migrations",
        "records",
        "store",
        "sqlite_errors",
        "orgfacts",
    },
    "orgfacts": set(),
    "sqlite_errors": {"errors"},
    "pg_conn": {"errors", "migrations", "records", "store"},
    "postgres": {"errors", "pg_conn", "records", "store"},
    "location": {"errors", "sqlite", "postgres", "store"},
    "lease": {"errors", "pacing", "records", "store"},
    "reconcile": {"plan", "client", "store", "models", "records", "binding", "identity"},
    "binding": {"errors", "store"},
    "writer": {"errors", "records", "store"},
    "refusals": {"errors"},
    "listlag": {"errors", "client", "pacing"},
    "apply": {
        "refusals",
        "errors",
        "plan",
        "client",
        "pacing",
        "store",
        "models",
        "summary",
        "writer",
        "listlag",
        "binding",
        "identity",
        "budget",
        "lease",
        "options",
        "startup",
    },
    "options": {"errors", "store"},
    "preview": {"client", "store", "location", "reconcile", "remote", "rollout", "diff", "plan"},
    "ceiling": {"identity", "client", "pacing", "errors", "status", "summary", "plan"},
    "startup": {
        "client",
        "errors",
        "store",
        "options",
        "reconcile",
        "remote",
        "summary",
        "plan",
        "listlag",
        "lease",
        "pacing",
    },
    "campaign": {
        "client",
        "pacing",
        "attempts",
        "store",
        "options",
        "relaunch",
        "remote",
        "rollout",
        "status",
        "summary",
        "plan",
    },
    "status": {
        "binding",
        "outcome",
        "options",
        "errors",
        "plan",
        "client",
        "store",
        "models",
        "pacing",
        "reconcile",
        "templating",
        "attempts",
    },
    "outcome": {
        "options",
        "errors",
        "plan",
        "client",
        "store",
        "models",
        "pacing",
        "reconcile",
        "templating",
        "attempts",
        "binding",
    },
    "cancel": {"errors", "plan", "client", "store", "status", "reconcile", "binding"},
    "remote": {"errors", "plan", "client", "source"},
    "results": {"outcome", "status"},
    "formats": {"results"},
    "report": {"outcome", "plan", "status", "results"},
    "diff": set(),
    "messages": {
        "errors",
        "plan",
        "client",
        "store",
        "pacing",
        "status",
        "templating",
        "lease",
        "options",
        "binding",
    },
    "rollout": {
        "errors",
        "plan",
        "client",
        "pacing",
        "store",
        "apply",
        "summary",
        "status",
        "manifest",
        "identity",
        "lease",
        "model",
        "options",
        "ceiling",
        "waves",
    },
    "progress": {"summary"},
    "markdown": {"plan"},
    "ghactions": {"markdown"},
    "summary": {"errors"},
    "attempts": {"records", "store"},
    "relaunch": {
        "errors",
        "plan",
        "build",
        "client",
        "store",
        "status",
        "reconcile",
        "attempts",
        "budget",
        "identity",
    },
    "budget": {"errors", "attempts", "store", "plan"},
    # the pacing model (sim/pacing_model.py) runs the real pacer against a simulated bucket
    # ... and sim/campaigns.py writes a finished campaign's ledger (for tests and benches)
    "sim": {"errors", "models", "source", "sim", "pacing", "location", "records", "build", "manifest"},
}
HOMES = {
    # The GitHub comments client (pr-comment) is a second API client, with its own seam and
    # error translation; it shares httpx rather than hand-rolling HTTP with urllib.
    "httpx": {"client", "github"},
    "jinja2": {"templating"},
    "yaml": {"source"},
    "click": {"cli"},
    "rich": {"cli", "progress"},
    "uvicorn": {"sim"},
    "starlette": {"sim"},
    "sqlite3": {"sqlite", "sqlite_errors", "sqlite_attempts"},
    "psycopg": {"pg_conn"},
    "jsonschema": {"models"},
}


def modules() -> list[tuple[str, Path, ast.Module]]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        if rel.parts[0] in ("sim", "cli"):
            name = rel.parts[0]
        elif rel.parts[-1] == "__init__":
            name = "__init__"
        else:
            name = rel.parts[-1]
        out.append((name, path, ast.parse(path.read_text(), str(path))))
    return out


def _module(dotted: str) -> str:
    """`launcher.ledger.store` -> `store`; `launcher.sim.x` -> `sim`; `launcher.errors` -> `errors`."""
    parts = dotted.split(".")
    return "sim" if parts[1] == "sim" else parts[-1]


def imported(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(("name", "path", "tree"), modules(), ids=lambda x: str(x)[-30:])
def test_imports_point_one_way(name: str, path: Path, tree: ast.Module) -> None:
    if name in ("cli", "__init__", "__main__"):
        return
    own = {_module(m) for m in imported(tree) if m.startswith("launcher.")}
    assert own <= ALLOWED[name], f"{path.name} imports {own - ALLOWED[name]}"


# The subpackages are floors: a module imports only from its own floor or those below it.
FLOORS = ["errors", "api", "spec", "ledger", "run", "views", "cli"]


def _floor(dotted: str) -> int | None:
    parts = dotted.split(".")
    return FLOORS.index(parts[1]) if len(parts) > 1 and parts[1] in FLOORS else None


def test_subpackages_are_floors_imports_go_down() -> None:
    for path in sorted(PKG.rglob("*.py")):
        here = _floor("launcher." + ".".join(path.relative_to(PKG).with_suffix("").parts))
        if here is None:
            continue
        for mod in imported(ast.parse(path.read_text(), str(path))):
            there = _floor(mod) if mod.startswith("launcher.") else None
            assert there is None or there <= here, f"{path} imports {mod} (a floor above)"


def test_at_most_twelve_top_level_modules() -> None:
    assert len(list(PKG.glob("*.py"))) <= 12


@pytest.mark.parametrize(("name", "path", "tree"), modules(), ids=lambda x: str(x)[-30:])
def test_each_third_party_library_has_one_home(name: str, path: Path, tree: ast.Module) -> None:
    for mod in imported(tree):
        top = mod.split(".")[0]
        if top in HOMES:
            assert name in HOMES[top], f"{path.name} imports {top}; its home is {HOMES[top]}"


@pytest.mark.parametrize(("name", "path", "tree"), modules(), ids=lambda x: str(x)[-30:])
def test_only_the_cli_prints_or_exits_and_modules_say_what_they_own(
    name: str, path: Path, tree: ast.Module
) -> None:
    assert ast.get_docstring(tree), f"{path.name} has no module docstring"
    if name == "cli":
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in ("print", "exit"), f"{path.name}:{node.lineno}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert (node.value.id, node.attr) != ("sys", "exit"), f"{path.name}:{node.lineno}"


# Size limits (issue 17), for every module of the package.
NOT_YET_LIMITED: tuple[str, ...] = ()
MODULE_LINES, FUNCTION_LINES, CLI_FUNCTION_LINES = 600, 80, 60


def _limited(path: Path) -> bool:
    return path.relative_to(PKG).parts[0] not in NOT_YET_LIMITED


def test_no_module_is_over_600_lines() -> None:
    for path in PKG.rglob("*.py"):
        lines = len(path.read_text().splitlines())
        assert lines <= (MODULE_LINES if _limited(path) else 800), f"{path}: {lines} lines"


def test_no_function_is_over_80_lines_nor_a_cli_function_over_60() -> None:
    """From `def` to its last line (the signature counts, decorators do not)."""
    too_long = []
    for path in sorted(PKG.rglob("*.py")):
        if not _limited(path):
            continue
        limit = CLI_FUNCTION_LINES if path.relative_to(PKG).parts[0] == "cli" else FUNCTION_LINES
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > limit:
                    too_long.append(f"{path.relative_to(PKG)}:{node.lineno} {node.name}: {lines}")
    assert not too_long, f"functions over the limit: {too_long}"


def test_readme_and_cli_reference_document_every_command_and_exit_code() -> None:
    readme = (ROOT / "README.md").read_text()
    reference = (ROOT / "docs" / "cli.md").read_text()
    assert isinstance(cli, click.Group)
    for name in cli.commands:
        for doc, text in (("README", readme), ("docs/cli.md", reference)):
            assert re.search(rf"`devin-fleet {name}\b", text), f"{doc} misses `devin-fleet {name}`"
    for code in EXIT_CODES:
        assert re.search(rf"^\|\s*{code}\s*\|", reference, re.M), f"docs/cli.md misses exit code {code}"


def test_cli_reference_exit_code_table_is_the_exit_code_enum() -> None:
    readme = (ROOT / "docs" / "cli.md").read_text()
    section = readme[readme.index("## Exit codes") :]
    section = section[: section.index("\n## ", 1)]
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*(.*?)\s*\|\s*$", section, re.M)
    assert [(int(code), meaning) for code, meaning in rows] == [(int(c), c.meaning) for c in ExitCode]


def test_cli_reference_error_tree_is_the_one_in_errors_py() -> None:
    import launcher.errors

    readme = (ROOT / "docs" / "cli.md").read_text()
    tree = readme[readme.index("```\nFleetError") + 4 :]
    doc = launcher.errors.__doc__ or ""
    in_code = [ln.strip() for ln in doc.splitlines() if ln.strip()[:1] in ("F", "├", "│", "└")]
    assert [ln.strip() for ln in tree[: tree.index("```")].splitlines()] == in_code


def _typed_exit_code(node: ast.expr) -> bool:
    """An ExitCode member, something's `.exit_code`, or a choice between those."""
    if isinstance(node, ast.IfExp):
        return _typed_exit_code(node.body) and _typed_exit_code(node.orelse)
    if isinstance(node, ast.Attribute):
        return node.attr == "exit_code" or (
            isinstance(node.value, ast.Name) and node.value.id == "ExitCode"
        )
    return False


def test_every_exit_in_the_cli_uses_an_exit_code() -> None:
    exits = 0
    for path in sorted((PKG / "cli").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.name}:{getattr(node, 'lineno', '?')}"
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("exit", "_exit")  # sys.exit, os._exit, ctx.exit
            ):
                exits += 1
                assert len(node.args) == 1 and _typed_exit_code(node.args[0]), where
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("SystemExit", "exit"), where
            if isinstance(node, ast.Assign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Attribute) and t.attr == "exit_code" for t in targets):
                    assert _typed_exit_code(node.value), where
    assert exits >= 5


def test_every_ledger_read_goes_through_the_one_sqlite_translation() -> None:
    """Ledger methods touching `self.db` outside a transaction are `@_reads` (which, like
    `transaction` and opening, turns sqlite3.Error into LedgerError via `sqlite_errors`)."""
    tree = ast.parse((PKG / "ledger" / "sqlite.py").read_text())  # reads: sqlite_errors.reads
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SqliteLedger"]
    # holds_lock turns any sqlite3.Error into "not held" on purpose (fail safe: no create is
    # sent on a lease it cannot prove), so it is not a read that reports errors.
    plumbing = {"__init__", "close", "transaction", "_version", "holds_lock", "_migrate"}
    plumbing |= {"_read_lock_row", "schema_version"}
    for f in cls.body:
        if isinstance(f, ast.FunctionDef) and f.name not in plumbing and "self.db" in ast.unparse(f):
            decorators = [ast.unparse(d) for d in f.decorator_list]
            assert "reads" in decorators, f"Ledger.{f.name} reads sqlite without translation"


def test_pydantic_validation_errors_have_one_renderer() -> None:
    """Only errors.py reads a ValidationError's `.errors()` (manifest problems, profiles, API
    objects and the simulator's 422 bodies all start from errors.validation_errors)."""
    for name, path, tree in modules():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "errors"
            ):
                assert name == "errors", f"{path.name}:{node.lineno} renders a ValidationError"


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme[readme.index("## Test") :], re.S)
    assert blocks
    commands = [ln.strip() for b in blocks[:2] for ln in b.splitlines() if ln.strip()]
    assert commands[-1] == "python -m pytest -q"
    for line in commands:  # the test command, and the lint gates CI runs before it
        for command in line.split(" && "):
            assert command in ci, f"README's command {command!r} is not what .ci/run runs"


def test_committed_manifest_schema_is_fresh() -> None:
    import json

    from launcher.spec.model import manifest_json_schema

    committed = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text())
    assert committed == manifest_json_schema(), "run: devin-fleet schema > schemas/manifest.schema.json"


SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b.*\b(FROM|INTO|SET)\b|\bPRAGMA\b|BEGIN IMMEDIATE")


def test_sql_and_database_drivers_live_in_the_ledger_subpackage() -> None:
    """Every SQL statement and database driver import of the package is in launcher/ledger/."""
    for path in sorted(PKG.rglob("*.py")):
        if path.parent.name == "ledger":
            continue
        text = path.read_text()
        assert not SQL.search(text), f"{path} speaks SQL"
        mods = imported(ast.parse(text, str(path)))
        assert not {m.split(".")[0] for m in mods} & {"sqlite3", "psycopg"}, path


def test_tests_go_through_the_store_not_the_schema() -> None:
    """Only the SQLite backend's own tests touch its schema (raw SQL, sqlite3.connect)."""
    # test_shared_ledger.py's adversary kills the ledger's server connections
    # (pg_terminate_backend): server administration, not the ledger's schema.
    own = {"test_ledger_sqlite.py", "test_design.py", "test_shared_ledger.py"}
    for path in sorted((ROOT / "tests").glob("*.py")):
        if path.name in own:
            continue
        text = path.read_text()
        assert "sqlite3" not in text and ".db.execute" not in text, path
        assert not SQL.search(text), f"{path} speaks SQL"


def _ledger_names(node: ast.AST) -> bool:
    """`ledger`, `led` or `self.ledger`: a store as the run modules name it."""
    if isinstance(node, ast.Name):
        return node.id in ("ledger", "led")
    return isinstance(node, ast.Attribute) and node.attr == "ledger"


def test_async_code_calls_the_store_off_the_event_loop() -> None:
    """In async functions of the run floor and the CLI, a store method is never called directly
    (it may wait on a disk or a network): it goes through `off_loop` (a worker thread)."""
    for path in sorted([*(PKG / "run").glob("*.py"), *(PKG / "cli").glob("*.py")]):
        for fn in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(fn, ast.AsyncFunctionDef):
                continue
            for node in _on_the_loop(fn):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and _ledger_names(node.func.value)
                ):
                    raise AssertionError(f"{path.name}:{node.lineno} calls the store on the loop")


def _on_the_loop(fn: ast.AsyncFunctionDef) -> list[ast.AST]:
    """The nodes an async function runs itself (a nested lambda or def is a callback that
    may well run in a thread: checked where it is defined as async, if it is)."""
    out: list[ast.AST] = []
    todo: list[ast.AST] = list(ast.iter_child_nodes(fn))
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Lambda | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out
