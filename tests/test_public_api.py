"""The library API (`launcher.__all__`) is listed once: every name resolves from its home, and
the explicit re-exports type checkers read are exactly the same names from the same homes."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import launcher

INIT = Path(launcher.__file__)


def type_checking_imports() -> dict[str, str]:
    """name -> module of the `if TYPE_CHECKING:` imports, each checked to be `X as X`."""
    tree = ast.parse(INIT.read_text())
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.module, ast.unparse(imp)
                for alias in imp.names:
                    assert alias.asname == alias.name, f"re-export {alias.name} as {alias.name}"
                    found[alias.name] = imp.module
    return found


def test_all_is_derived_from_the_homes_and_every_name_resolves() -> None:
    homes = launcher._HOMES
    assert launcher.__all__ == sorted(homes)
    for module in set(homes.values()):  # as after any command ran: submodules are loaded
        importlib.import_module(module)
    for name in launcher.__all__:
        value = getattr(launcher, name)
        assert value is getattr(importlib.import_module(homes[name]), name)


def test_no_public_name_is_shadowed_by_a_submodule() -> None:
    # Importing launcher.X sets the package attribute X to the module, hiding a function X.
    submodules = {p.stem for p in INIT.parent.iterdir() if p.suffix == ".py" or p.is_dir()}
    assert not set(launcher.__all__) & submodules


def test_type_checking_imports_match_the_homes() -> None:
    assert type_checking_imports() == launcher._HOMES


def test_all_is_assigned_once_and_not_spelled_out() -> None:
    tree = ast.parse(INIT.read_text())
    assigned = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign | ast.AugAssign) and "__all__" in ast.unparse(n).split("=")[0]
    ]
    assert len(assigned) == 1
    assert not isinstance(assigned[0].value, ast.List), "derive __all__ from _HOMES"
