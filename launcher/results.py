"""Results: the fleet's structured outputs joined with items and outcomes, as flat rows."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from launcher.status import CampaignView


def results_rows(view: CampaignView) -> list[dict[str, Any]]:
    """Flattened rows for CSV: item fields and structured-output fields as columns."""
    rows = []
    for s in view.sessions:
        row: dict[str, Any] = {"key": s.key}
        if isinstance(s.item, Mapping):
            row.update({f"item.{k}": v for k, v in s.item.items()})
        else:
            row["item"] = "" if s.item is None else s.item
        row.update(
            {
                "session_id": s.session_id or "",
                "url": s.url or "",
                "outcome": s.outcome.value,
                "pull_requests": " ".join(s.pr_urls),
                "acus_consumed": "" if s.acus_consumed is None else s.acus_consumed,
                "output_valid": "" if s.output_valid is None else s.output_valid,
                "output_errors": "; ".join(s.output_errors),
            }
        )
        row.update(_flatten(s.structured_output or {}, "output"))
        rows.append(row)
    return rows


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}"))
        return out
    if isinstance(value, list):
        return {prefix: "; ".join(v if isinstance(v, str) else json.dumps(v) for v in value)}
    return {prefix: value}
