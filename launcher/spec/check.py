"""Checking a manifest offline, as `validate` does: planned in full (templates, data files, API
rules, budget), with its problems or its warnings, as a report (`validate -o json`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from launcher.errors import FleetError, ManifestError, Problem
from launcher.spec.build import plan_manifest


@dataclass(frozen=True)
class ManifestCheck:
    """One manifest's check: how many sessions it plans and its warnings, or its error."""

    path: str
    sessions: int | None = None
    warnings: tuple[str, ...] = ()
    error: FleetError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def problems(self) -> list[Problem]:
        """The located problems of a failed check (one unlocated line for another error)."""
        if self.error is None:
            return []
        if isinstance(self.error, ManifestError) and self.error.problems:
            return self.error.problems
        return [Problem(self.path, None, None, "", self.error.message, self.error.hint)]

    def to_json(self) -> dict[str, Any]:
        if self.error is None:
            return {
                "path": self.path,
                "ok": True,
                "sessions": self.sessions,
                "problems": [],
                "warnings": list(self.warnings),
            }
        located = self.error.problems if isinstance(self.error, ManifestError) else []
        return {
            "path": self.path,
            "ok": False,
            "sessions": None,
            "problems": [dataclasses.asdict(p) for p in located],
            "error": self.error.message,
            "hint": self.error.hint,
        }


def check_manifest(path: str, *, environ: Mapping[str, str] | None = None) -> ManifestCheck:
    """Plan `path` in full, offline; a problem is the check's result, not an exception."""
    try:
        plan = plan_manifest(path, environ=environ)
    except FleetError as exc:
        return ManifestCheck(path, error=exc)
    return ManifestCheck(path, len(plan), tuple(plan.warnings))
