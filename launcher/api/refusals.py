"""Refusals a whole campaign shares: a create the API refused for a reason every session of the
campaign would meet (a tag the org's allow-list lacks, an unknown platform or user), which
apply stops at rather than refusing each item in turn."""

from __future__ import annotations

import re

from launcher.errors import CampaignRefusedError

_CAMPAIGN_WIDE = (
    ("tag", re.compile(r"\btags?\b.*\b(allow|register|permitted|not enabled)", re.I | re.S)),
    ("platform", re.compile(r"\bplatform\b", re.I)),
    ("user", re.compile(r"\b(create_as_user_id|org member|not a member)\b", re.I)),
)


_CAMPAIGN_HINTS = {
    "tag": "the org restricts session tags to an allow-list (an enterprise setting): set "
    "`identity: title` in the manifest (then only `fleet:<campaign>` is sent: ask an admin to "
    "register it), and register or drop the manifest's own tags; `plan --check-remote` lists "
    "every tag that is not allowed",
    "platform": "use one of the platform labels the API listed, or `default`",
    "user": "create_as_user_id must name an org member, and the token needs ImpersonateOrgSessions",
}


def campaign_refusal(key: str, status: int | None, message: str) -> CampaignRefusedError | None:
    """A refused create (a 4xx) whose reason every session of the campaign shares: a tag the
    org's allow-list lacks, an unknown platform or user. It would repeat for every item, so
    apply stops at the first (None: a refusal of this session alone)."""
    if status is None or not 400 <= status < 500 or status in (401, 403, 429):
        return None
    kind = next((kind for kind, rx in _CAMPAIGN_WIDE if rx.search(message)), None)
    if kind is None:
        return None
    return CampaignRefusedError(
        f"{key}: the API refused the create (HTTP {status}: {message}); every session of the "
        "campaign would be refused the same way, so launching stopped",
        hint=_CAMPAIGN_HINTS[kind],
    )
