"""devin-fleet: a declarative batch launcher for Devin sessions.

The library API is what `__all__` lists; the `devin-fleet` CLI is a thin layer over it:

    loaded = load_manifest("manifests/py312-upgrade.yaml")
    plan = build_plan(loaded)
    async with DevinClient(ApiConfig.from_env(os.environ)) as client:
        with open_ledger(loaded.path, plan.campaign) as ledger:
            summary = await apply_plan(plan, client, ledger, ApplyOptions(rate=10))
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # explicit re-exports (`X as X`) for type checkers; _HOMES for run time
    from launcher.apply import (
        ApplyOptions as ApplyOptions,
        apply_plan as apply_plan,
    )
    from launcher.cancel import cancel_sessions as cancel_sessions
    from launcher.summary import ApplySummary as ApplySummary
    from launcher.summary import Result as Result
    from launcher.client import (
        ApiConfig as ApiConfig,
        CreateOutcome as CreateOutcome,
        DevinClient as DevinClient,
    )
    from launcher.errors import (
        APIError as APIError,
        AuthError as AuthError,
        CircuitOpenError as CircuitOpenError,
        ConfigError as ConfigError,
        ConfirmationError as ConfirmationError,
        ExitCode as ExitCode,
        FleetError as FleetError,
        LedgerError as LedgerError,
        LockedError as LockedError,
        LockLostError as LockLostError,
        ManifestError as ManifestError,
        Problem as Problem,
        RemoteCheckError as RemoteCheckError,
        SecretError as SecretError,
    )
    from launcher.ledger import (
        Change as Change,
        EventKind as EventKind,
        LaunchState as LaunchState,
        Ledger as Ledger,
        open_ledger as open_ledger,
    )
    from launcher.manifest import (
        LoadedManifest as LoadedManifest,
        Manifest as Manifest,
        load_manifest as load_manifest,
        manifest_json_schema as manifest_json_schema,
    )
    from launcher.models import (
        CreateSessionRequest as CreateSessionRequest,
        Session as Session,
    )
    from launcher.plan import (
        Plan as Plan,
        PlannedSession as PlannedSession,
        build_plan as build_plan,
    )
    from launcher.remote import (
        check_remote as check_remote,
    )
    from launcher.status import (
        CampaignView as CampaignView,
        Outcome as Outcome,
        campaign_view as campaign_view,
        classify as classify,
        refresh as refresh,
        watch as watch,
    )
    from launcher.messages import (
        prepare_messages as prepare_messages,
        send_messages as send_messages,
    )
    from launcher.report import render_report as render_report
    from launcher.results import build_results as build_results
    from launcher.rollout import (
        RolloutOptions as RolloutOptions,
        RolloutSummary as RolloutSummary,
        follow as follow,
        run_rollout as run_rollout,
    )

# Names resolve on first use (PEP 562), so `devin-fleet validate` does not pay for httpx,
# sqlite or the executor at start-up.
_HOMES: dict[str, str] = {
    "APIError": "launcher.errors",
    "ApiConfig": "launcher.client",
    "ApplyOptions": "launcher.apply",
    "ApplySummary": "launcher.summary",
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
    "Result": "launcher.summary",
    "RolloutOptions": "launcher.rollout",
    "RolloutSummary": "launcher.rollout",
    "SecretError": "launcher.errors",
    "Session": "launcher.models",
    "apply_plan": "launcher.apply",
    "build_plan": "launcher.plan",
    "build_results": "launcher.results",
    "campaign_view": "launcher.status",
    "cancel_sessions": "launcher.cancel",
    "check_remote": "launcher.remote",
    "classify": "launcher.status",
    "follow": "launcher.rollout",
    "load_manifest": "launcher.manifest",
    "manifest_json_schema": "launcher.manifest",
    "open_ledger": "launcher.ledger",
    "prepare_messages": "launcher.messages",
    "refresh": "launcher.status",
    "render_report": "launcher.report",
    "send_messages": "launcher.messages",
    "run_rollout": "launcher.rollout",
    "watch": "launcher.status",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'launcher' has no attribute {name!r}")


__all__ = sorted(_HOMES)  # listed once: _HOMES above
