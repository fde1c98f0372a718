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
    from launcher.apply import ApplyOptions, ApplySummary, Result, apply_plan
    from launcher.cancel import cancel
    from launcher.client import ApiConfig, CreateOutcome, DevinClient
    from launcher.errors import (
        APIError,
        AuthError,
        CircuitOpenError,
        ConfigError,
        ConfirmationError,
        ExitCode,
        FleetError,
        LedgerError,
        LockedError,
        LockLostError,
        ManifestError,
        Problem,
        RemoteCheckError,
        SecretError,
    )
    from launcher.ledger import Change, EventKind, LaunchState, Ledger, open_ledger
    from launcher.manifest import LoadedManifest, Manifest, load_manifest, manifest_json_schema
    from launcher.models import CreateSessionRequest, Session
    from launcher.plan import Plan, PlannedSession, build_plan
    from launcher.remote import check_remote
    from launcher.status import CampaignView, Outcome, campaign_view, classify, refresh, watch

# Names resolve on first use (PEP 562), so `devin-fleet validate` does not pay for httpx,
# sqlite or the executor at start-up.
_HOMES: dict[str, str] = {
    "APIError": "launcher.errors",
    "ApiConfig": "launcher.client",
    "ApplyOptions": "launcher.apply",
    "ApplySummary": "launcher.apply",
    "AuthError": "launcher.errors",
    "CampaignView": "launcher.status",
    "Change": "launcher.ledger",
    "CircuitOpenError": "launcher.errors",
    "ConfigError": "launcher.errors",
    "ConfirmationError": "launcher.errors",
    "ExitCode": "launcher.errors",
    "CreateOutcome": "launcher.client",
    "CreateSessionRequest": "launcher.models",
    "DevinClient": "launcher.client",
    "FleetError": "launcher.errors",
    "LaunchState": "launcher.ledger",
    "Ledger": "launcher.ledger",
    "LedgerError": "launcher.errors",
    "LoadedManifest": "launcher.manifest",
    "LockedError": "launcher.errors",
    "LockLostError": "launcher.errors",
    "EventKind": "launcher.ledger",
    "Manifest": "launcher.manifest",
    "ManifestError": "launcher.errors",
    "Outcome": "launcher.status",
    "Plan": "launcher.plan",
    "PlannedSession": "launcher.plan",
    "Problem": "launcher.errors",
    "RemoteCheckError": "launcher.errors",
    "Result": "launcher.apply",
    "SecretError": "launcher.errors",
    "Session": "launcher.models",
    "apply_plan": "launcher.apply",
    "build_plan": "launcher.plan",
    "campaign_view": "launcher.status",
    "cancel": "launcher.cancel",
    "check_remote": "launcher.remote",
    "classify": "launcher.status",
    "load_manifest": "launcher.manifest",
    "manifest_json_schema": "launcher.manifest",
    "open_ledger": "launcher.ledger",
    "refresh": "launcher.status",
    "watch": "launcher.status",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'launcher' has no attribute {name!r}")


__all__ = [
    "APIError",
    "ApiConfig",
    "ApplyOptions",
    "ApplySummary",
    "AuthError",
    "CampaignView",
    "Change",
    "CircuitOpenError",
    "ConfigError",
    "ConfirmationError",
    "CreateOutcome",
    "CreateSessionRequest",
    "DevinClient",
    "ExitCode",
    "FleetError",
    "LaunchState",
    "Ledger",
    "LedgerError",
    "LoadedManifest",
    "LockedError",
    "LockLostError",
    "EventKind",
    "Manifest",
    "ManifestError",
    "Outcome",
    "Plan",
    "PlannedSession",
    "Problem",
    "RemoteCheckError",
    "Result",
    "SecretError",
    "Session",
    "apply_plan",
    "build_plan",
    "campaign_view",
    "cancel",
    "check_remote",
    "classify",
    "load_manifest",
    "manifest_json_schema",
    "open_ledger",
    "refresh",
    "watch",
]
