"""devin-fleet: a declarative batch launcher for Devin sessions.

The library API is what `__all__` lists; the `devin-fleet` CLI is a thin layer over it:

    loaded = load_manifest("manifests/py312-upgrade.yaml")
    plan = build_plan(loaded)
    async with DevinClient(ApiConfig.from_env(os.environ)) as client:
        with open_ledger(loaded.path, plan.campaign) as ledger:
            summary = await apply_plan(plan, client, ledger, ApplyOptions(rate=10))
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from launcher.client import ApiConfig, CreateOutcome, DevinClient
    from launcher.errors import (
        APIError,
        AuthError,
        CircuitOpenError,
        ConfigError,
        ConfirmationError,
        FleetError,
        LedgerError,
        LockedError,
        ManifestError,
        Problem,
        RemoteCheckError,
        SecretError,
    )
    from launcher.execute import ApplyOptions, ApplySummary, Result, apply_plan
    from launcher.follow import (
        CampaignView,
        Outcome,
        campaign_view,
        cancel,
        check_remote,
        classify,
        refresh,
        watch,
    )
    from launcher.ledger import Change, LaunchState, Ledger, open_ledger
    from launcher.manifest import LoadedManifest, Manifest, load_manifest, manifest_json_schema
    from launcher.models import CreateSessionRequest, Session
    from launcher.plan import Plan, PlannedSession, build_plan

# Names resolve on first use (PEP 562), so `devin-fleet validate` does not pay for httpx,
# sqlite or the executor at start-up.
_HOMES: dict[str, str] = {
    "APIError": "launcher.errors",
    "ApiConfig": "launcher.client",
    "ApplyOptions": "launcher.execute",
    "ApplySummary": "launcher.execute",
    "AuthError": "launcher.errors",
    "CampaignView": "launcher.follow",
    "Change": "launcher.ledger",
    "CircuitOpenError": "launcher.errors",
    "ConfigError": "launcher.errors",
    "ConfirmationError": "launcher.errors",
    "CreateOutcome": "launcher.client",
    "CreateSessionRequest": "launcher.models",
    "DevinClient": "launcher.client",
    "FleetError": "launcher.errors",
    "LaunchState": "launcher.ledger",
    "Ledger": "launcher.ledger",
    "LedgerError": "launcher.errors",
    "LoadedManifest": "launcher.manifest",
    "LockedError": "launcher.errors",
    "Manifest": "launcher.manifest",
    "ManifestError": "launcher.errors",
    "Outcome": "launcher.follow",
    "Plan": "launcher.plan",
    "PlannedSession": "launcher.plan",
    "Problem": "launcher.errors",
    "RemoteCheckError": "launcher.errors",
    "Result": "launcher.execute",
    "SecretError": "launcher.errors",
    "Session": "launcher.models",
    "apply_plan": "launcher.execute",
    "build_plan": "launcher.plan",
    "campaign_view": "launcher.follow",
    "cancel": "launcher.follow",
    "check_remote": "launcher.follow",
    "classify": "launcher.follow",
    "load_manifest": "launcher.manifest",
    "manifest_json_schema": "launcher.manifest",
    "open_ledger": "launcher.ledger",
    "refresh": "launcher.follow",
    "watch": "launcher.follow",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'launcher' has no attribute {name!r}")


__all__ = [
    "APIError", "ApiConfig", "ApplyOptions", "ApplySummary", "AuthError", "CampaignView",
    "Change", "CircuitOpenError", "ConfigError", "ConfirmationError", "CreateOutcome",
    "CreateSessionRequest", "DevinClient", "FleetError", "LaunchState", "Ledger", "LedgerError",
    "LoadedManifest", "LockedError", "Manifest", "ManifestError", "Outcome", "Plan",
    "PlannedSession", "Problem", "RemoteCheckError", "Result", "SecretError", "Session",
    "apply_plan", "build_plan", "campaign_view", "cancel", "check_remote", "classify",
    "load_manifest", "manifest_json_schema", "open_ledger", "refresh", "watch",
]
