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
    from launcher.run.apply import apply_plan as apply_plan
    from launcher.run.options import (
        ApplyOptions as ApplyOptions,
        RolloutOptions as RolloutOptions,
    )
    from launcher.run.campaign import (
        launch_campaign as launch_campaign,
        relaunch_selection as relaunch_selection,
    )
    from launcher.run.cancel import (
        cancel_campaign as cancel_campaign,
        cancel_sessions as cancel_sessions,
        cancel_targets as cancel_targets,
    )
    from launcher.ledger.binding import check_target as check_target
    from launcher.run.budget import BudgetUse as BudgetUse
    from launcher.run.budget import budget_use as budget_use
    from launcher.run.summary import ApplySummary as ApplySummary
    from launcher.run.summary import Result as Result
    from launcher.api.client import (
        ApiConfig as ApiConfig,
        CreateOutcome as CreateOutcome,
        DevinClient as DevinClient,
    )
    from launcher.errors import (
        APIError as APIError,
        AuthError as AuthError,
        CampaignRefusedError as CampaignRefusedError,
        CircuitOpenError as CircuitOpenError,
        ConfigError as ConfigError,
        ConfirmationError as ConfirmationError,
        ExitCode as ExitCode,
        FleetError as FleetError,
        GitHubError as GitHubError,
        PlanChangedError as PlanChangedError,
        LedgerError as LedgerError,
        LockedError as LockedError,
        LockLostError as LockLostError,
        ManifestError as ManifestError,
        Problem as Problem,
        RemoteCheckError as RemoteCheckError,
        SecretError as SecretError,
    )
    from launcher.ledger.store import (
        Change as Change,
        EventKind as EventKind,
        LaunchState as LaunchState,
        Ledger as Ledger,
        LedgerStore as LedgerStore,
    )
    from launcher.ledger.location import (
        ledger_exists as ledger_exists,
        open_ledger as open_ledger,
    )
    from launcher.spec.build import build_plan as build_plan
    from launcher.spec.check import (
        ManifestCheck as ManifestCheck,
        check_manifest as check_manifest,
    )
    from launcher.spec.manifest import (
        LoadedManifest as LoadedManifest,
        load_manifest as load_manifest,
    )
    from launcher.spec.model import (
        Manifest as Manifest,
        manifest_json_schema as manifest_json_schema,
    )
    from launcher.api.models import (
        CreateSessionRequest as CreateSessionRequest,
        Session as Session,
    )
    from launcher.spec.plan import (
        Plan as Plan,
        PlannedSession as PlannedSession,
    )
    from launcher.run.preview import (
        PlanPreview as PlanPreview,
        preview_plan as preview_plan,
        preview_plan_remote as preview_plan_remote,
    )
    from launcher.run.remote import (
        check_remote as check_remote,
    )
    from launcher.run.status import (
        CampaignView as CampaignView,
        Outcome as Outcome,
        campaign_view as campaign_view,
        classify as classify,
        refresh as refresh,
        watch as watch,
    )
    from launcher.run.messages import (
        prepare_messages as prepare_messages,
        send_messages as send_messages,
    )
    from launcher.views.report import render_report as render_report
    from launcher.views.markdown import (
        fit_markdown as fit_markdown,
        plan_view as plan_view,
        render_plan_markdown as render_plan_markdown,
    )
    from launcher.spec.digest import (
        check_reviewed as check_reviewed,
        read_reviewed as read_reviewed,
    )
    from launcher.api.github import (
        GitHubClient as GitHubClient,
        GitHubConfig as GitHubConfig,
    )
    from launcher.views.results import build_results as build_results
    from launcher.run.rollout import (
        RolloutSummary as RolloutSummary,
        follow as follow,
        run_rollout as run_rollout,
    )

# Names resolve on first use (PEP 562), so `devin-fleet validate` does not pay for httpx,
# sqlite or the executor at start-up.
_HOMES: dict[str, str] = {
    "APIError": "launcher.errors",
    "ApiConfig": "launcher.api.client",
    "ApplyOptions": "launcher.run.options",
    "ApplySummary": "launcher.run.summary",
    "AuthError": "launcher.errors",
    "BudgetUse": "launcher.run.budget",
    "CampaignRefusedError": "launcher.errors",
    "CampaignView": "launcher.run.status",
    "Change": "launcher.ledger.store",
    "CircuitOpenError": "launcher.errors",
    "ConfigError": "launcher.errors",
    "ConfirmationError": "launcher.errors",
    "ExitCode": "launcher.errors",
    "CreateOutcome": "launcher.api.client",
    "CreateSessionRequest": "launcher.api.models",
    "DevinClient": "launcher.api.client",
    "FleetError": "launcher.errors",
    "GitHubClient": "launcher.api.github",
    "GitHubConfig": "launcher.api.github",
    "GitHubError": "launcher.errors",
    "PlanChangedError": "launcher.errors",
    "LaunchState": "launcher.ledger.store",
    "Ledger": "launcher.ledger.store",
    "LedgerStore": "launcher.ledger.store",
    "LedgerError": "launcher.errors",
    "LoadedManifest": "launcher.spec.manifest",
    "LockedError": "launcher.errors",
    "LockLostError": "launcher.errors",
    "EventKind": "launcher.ledger.store",
    "Manifest": "launcher.spec.model",
    "ManifestCheck": "launcher.spec.check",
    "ManifestError": "launcher.errors",
    "Outcome": "launcher.run.status",
    "Plan": "launcher.spec.plan",
    "PlannedSession": "launcher.spec.plan",
    "PlanPreview": "launcher.run.preview",
    "Problem": "launcher.errors",
    "RemoteCheckError": "launcher.errors",
    "Result": "launcher.run.summary",
    "RolloutOptions": "launcher.run.options",
    "RolloutSummary": "launcher.run.rollout",
    "SecretError": "launcher.errors",
    "Session": "launcher.api.models",
    "apply_plan": "launcher.run.apply",
    "build_plan": "launcher.spec.build",
    "budget_use": "launcher.run.budget",
    "build_results": "launcher.views.results",
    "check_reviewed": "launcher.spec.digest",
    "fit_markdown": "launcher.views.markdown",
    "plan_view": "launcher.views.markdown",
    "read_reviewed": "launcher.spec.digest",
    "render_plan_markdown": "launcher.views.markdown",
    "campaign_view": "launcher.run.status",
    "cancel_campaign": "launcher.run.cancel",
    "cancel_sessions": "launcher.run.cancel",
    "cancel_targets": "launcher.run.cancel",
    "check_manifest": "launcher.spec.check",
    "check_remote": "launcher.run.remote",
    "check_target": "launcher.ledger.binding",
    "classify": "launcher.run.status",
    "follow": "launcher.run.rollout",
    "launch_campaign": "launcher.run.campaign",
    "load_manifest": "launcher.spec.manifest",
    "manifest_json_schema": "launcher.spec.model",
    "ledger_exists": "launcher.ledger.location",
    "open_ledger": "launcher.ledger.location",
    "prepare_messages": "launcher.run.messages",
    "preview_plan": "launcher.run.preview",
    "preview_plan_remote": "launcher.run.preview",
    "refresh": "launcher.run.status",
    "relaunch_selection": "launcher.run.campaign",
    "render_report": "launcher.views.report",
    "send_messages": "launcher.run.messages",
    "run_rollout": "launcher.run.rollout",
    "watch": "launcher.run.status",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'launcher' has no attribute {name!r}")


__all__ = sorted(_HOMES)  # listed once: _HOMES above
