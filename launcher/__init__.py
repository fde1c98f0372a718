"""devin-fleet: a declarative batch launcher for Devin sessions.

The library API is what `__all__` lists; the `devin-fleet` CLI is a thin layer over it:

    loaded = load_manifest("manifests/py312-upgrade.yaml")
    plan = build_plan(loaded)
    async with DevinClient(ApiConfig.from_env(os.environ)) as client:
        with open_ledger(loaded.path, plan.campaign) as ledger:
            summary = await apply_plan(plan, client, ledger, ApplyOptions(rate=10))
"""

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

__all__ = [
    "APIError", "ApiConfig", "ApplyOptions", "ApplySummary", "AuthError", "CampaignView",
    "Change", "CircuitOpenError", "ConfigError", "ConfirmationError", "CreateOutcome",
    "CreateSessionRequest", "DevinClient", "FleetError", "LaunchState", "Ledger", "LedgerError",
    "LoadedManifest", "LockedError", "Manifest", "ManifestError", "Outcome", "Plan",
    "PlannedSession", "Problem", "RemoteCheckError", "Result", "SecretError", "Session",
    "apply_plan", "build_plan", "campaign_view", "cancel", "check_remote", "classify",
    "load_manifest", "manifest_json_schema", "open_ledger", "refresh", "watch",
]
