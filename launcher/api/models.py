"""The API model: create-session requests and the session objects the v3 API returns.

One model, two users: the planner validates every rendered request with it, and the simulator
validates what it receives with it (see ../shared/devin-api.md, sections 2 and 3).
"""

from __future__ import annotations

import hashlib
import json
import re
import typing
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from launcher.errors import validation_errors

# How long one answer of the API may take (seconds): the client's read timeout, and how long a
# create that got no answer may still be in transit (it is looked up only after that).
REQUEST_TIMEOUT = 30.0

MAX_TAGS = 50
MAX_SCHEMA_BYTES = 64 * 1024
MAX_URL_CHARS = 2083
MAX_SECRET_KEY = 256
MAX_SECRET_VALUE = 65_536


class DevinMode(StrEnum):
    normal = "normal"
    fast = "fast"
    lite = "lite"
    ultra = "ultra"
    fusion = "fusion"


class SessionStatus(StrEnum):
    new = "new"
    claimed = "claimed"
    running = "running"
    exit = "exit"
    error = "error"
    suspended = "suspended"
    resuming = "resuming"


class StatusDetail(StrEnum):
    working = "working"
    waiting_for_user = "waiting_for_user"
    waiting_for_approval = "waiting_for_approval"
    finished = "finished"
    inactivity = "inactivity"
    user_request = "user_request"
    usage_limit_exceeded = "usage_limit_exceeded"
    out_of_credits = "out_of_credits"
    out_of_quota = "out_of_quota"
    no_quota_allocation = "no_quota_allocation"
    payment_declined = "payment_declined"
    org_usage_limit_exceeded = "org_usage_limit_exceeded"
    total_session_limit_exceeded = "total_session_limit_exceeded"
    error = "error"
    user_usage_limit_exceeded = "user_usage_limit_exceeded"
    contract_expired = "contract_expired"


# --------------------------------------------------------------------------- structured output


_checked_schemas: dict[str, str | None] = {}  # sha256 of canonical JSON -> problem or None
_checked_objects: dict[int, tuple[dict[str, Any], str | None]] = {}  # id -> (schema, problem)
_MAX_CACHED_OBJECTS = 64


# Every keyword of JSON Schema Draft 7: an output schema with none of them is most likely a
# sample output pasted where the schema belongs.
DRAFT7_KEYWORDS = frozenset(
    {
        "$schema",
        "$id",
        "$ref",
        "$comment",
        "title",
        "description",
        "default",
        "readOnly",
        "writeOnly",
        "examples",
        "multipleOf",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "additionalItems",
        "items",
        "maxItems",
        "minItems",
        "uniqueItems",
        "contains",
        "maxProperties",
        "minProperties",
        "required",
        "additionalProperties",
        "definitions",
        "properties",
        "patternProperties",
        "dependencies",
        "propertyNames",
        "const",
        "enum",
        "type",
        "format",
        "contentMediaType",
        "contentEncoding",
        "if",
        "then",
        "else",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
    }
)


def _external_refs(node: Any, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and not v.startswith("#"):
                found.append(f"{path}/$ref={v}")
            else:
                found.extend(_external_refs(v, f"{path}/{k}"))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found.extend(_external_refs(v, f"{path}/{i}"))
    return found


# Keywords whose values are data, not schemas: a "$ref" key inside them is not a reference.
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples"})


def _local_refs(node: Any, path: str = "") -> list[tuple[str, str]]:
    """(where, ref) for every `$ref` inside the document ("#..."), in document order."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#"):
                found.append((path or "/", v))
            elif k not in _DATA_KEYWORDS:
                found.extend(_local_refs(v, f"{path}/{k}"))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found.extend(_local_refs(v, f"{path}/{i}"))
    return found


def _ids(node: Any) -> set[str]:
    """Every `$id` in the document (Draft 7 plain-name fragments like "#item" point at one)."""
    out: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("$id"), str):
            out.add(node["$id"])
        for k, v in node.items():
            if k not in _DATA_KEYWORDS:
                out |= _ids(v)
    elif isinstance(node, list):
        for v in node:
            out |= _ids(v)
    return out


def _resolves(root: Any, ref: str, ids: set[str]) -> bool:
    """Whether a local `$ref` ("#", "#/json/pointer" with ~0 ~1 and %-escapes, "#name") exists."""
    from urllib.parse import unquote

    fragment = unquote(ref[1:])
    if not fragment:
        return True
    if not fragment.startswith("/"):
        return ref in ids
    node = root
    for raw in fragment[1:].split("/"):
        if "~" in raw.replace("~0", "").replace("~1", ""):
            return False  # "~" must be escaped as ~0 (RFC 6901)
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and (token == "0" or token[0] != "0"):
            if int(token) >= len(node):
                return False
            node = node[int(token)]
        else:
            return False
    return True


def _dangling_refs(schema: dict[str, Any]) -> list[str]:
    refs = _local_refs(schema)
    ids = _ids(schema) if any(not r.startswith("#/") and r != "#" for _, r in refs) else set()
    return [f"{ref} (at {where})" for where, ref in refs if not _resolves(schema, ref, ids)]


def _check_schema(schema: Any) -> str | None:
    if not isinstance(schema, dict):
        return f"a structured-output schema must be a JSON object, not {type(schema).__name__}"
    try:
        text = json.dumps(
            schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        return f"schema is not plain JSON (object keys must be strings, no NaN): {exc}"
    raw = text.encode()
    digest = hashlib.sha256(raw).hexdigest()
    if digest in _checked_schemas:
        return _checked_schemas[digest]
    problem: str | None = None
    if len(raw) > MAX_SCHEMA_BYTES:
        problem = (
            f"schema is {len(raw):,} bytes serialized; the API accepts at most {MAX_SCHEMA_BYTES:,}"
        )
    elif refs := _external_refs(schema):
        problem = f"schema must be self-contained, but has an external $ref: {refs[0]}"
    elif dangling := _dangling_refs(schema):
        plural = "s" if len(dangling) > 1 else ""
        problem = f"dangling $ref{plural}, to nothing in the schema: {', '.join(dangling)}"
    else:
        import jsonschema  # ~80 ms to import: only when a schema is checked

        try:
            jsonschema.Draft7Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            problem = f"not a valid Draft 7 schema at {where}: {exc.message}"
    _checked_schemas[digest] = problem
    return problem


def check_output_schema(schema: dict[str, Any]) -> str | None:
    """Return why `schema` is not an acceptable structured-output schema, or None.

    The rules: a JSON object, at most 64 KB serialized, no `$ref` outside the document, every
    local `$ref` resolves, and a valid Draft 7 schema. Results are cached by content, and by
    identity for the object itself: a campaign of 10,000 sessions shares one schema object,
    which is checked once.
    """
    hit = _checked_objects.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    problem = _check_schema(schema)
    if len(_checked_objects) >= _MAX_CACHED_OBJECTS:
        _checked_objects.clear()
    _checked_objects[id(schema)] = (schema, problem)  # holding it keeps its id from being reused
    return problem


_validators: dict[int, tuple[dict[str, Any], Any]] = {}


def output_errors(schema: dict[str, Any], output: Any) -> list[str]:
    """Validate a structured output against its Draft 7 schema; return readable problems."""
    import jsonschema

    hit = _validators.get(id(schema))
    if hit is not None and hit[0] is schema:  # a fleet's sessions share one schema object
        validator = hit[1]
    else:
        validator = jsonschema.Draft7Validator(schema)
        if len(_validators) >= _MAX_CACHED_OBJECTS:
            _validators.clear()
        _validators[id(schema)] = (schema, validator)  # holding it keeps its id from being reused
    if validator.is_valid(output):  # the usual case: no error to collect and sort
        return []
    problems = []
    for err in sorted(validator.iter_errors(output), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        problems.append(f"{where}: {err.message}")
    return problems


# --------------------------------------------------------------------------- create request


class SessionSecretInput(BaseModel):
    """A per-session secret, not stored in the org."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=MAX_SECRET_KEY, description="Secret name.")
    value: str = Field(max_length=MAX_SECRET_VALUE, description="Secret value.")
    sensitive: bool = Field(default=True, description="Hide the value from logs in the session.")


class CreateSessionRequest(BaseModel):
    """Body of POST /v3/organizations/{org_id}/sessions, exactly as the contract lists it."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="The task for Devin.")
    title: str | None = Field(default=None, description="Session title; generated when absent.")
    repos: list[str] | None = Field(default=None, description="Repositories, `owner/repo`.")
    tags: list[str] | None = Field(default=None, description="Tags (at most 50 in total).")
    attachment_urls: list[str] | None = Field(
        default=None, description="Absolute URIs of 1..2083 characters."
    )
    knowledge_ids: list[str] | None = Field(
        default=None, description="Knowledge notes to use (null = all, [] = none)."
    )
    secret_ids: list[str] | None = Field(
        default=None, description="Org secrets to expose (null = all, [] = none)."
    )
    session_secrets: list[SessionSecretInput] | None = Field(
        default=None, description="Per-session secrets."
    )
    playbook_id: str | None = Field(default=None, description="Playbook to follow.")
    child_playbook_id: str | None = Field(default=None, description="Playbook for child sessions.")
    session_links: list[str] | None = Field(
        default=None, description="Other sessions to use as context."
    )
    max_acu_limit: int | None = Field(default=None, gt=0, description="Per-session ACU cap.")
    bypass_approval: bool | None = Field(default=None, description="Skip the approval gate.")
    create_as_user_id: str | None = Field(default=None, description="Create on behalf of an org member.")
    devin_mode: DevinMode | None = Field(default=None, description="Agent mode.")
    platform: str | None = Field(default=None, description="VM platform label.")
    structured_output_schema: dict[str, Any] | None = Field(
        default=None, description="JSON Schema Draft 7, <= 64 KB, no external $ref."
    )
    structured_output_required: bool | None = Field(
        default=None, description="Agent must deliver final structured output (default true)."
    )
    resumable: bool | None = Field(default=None, description="Keep the VM to resume later.")

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("prompt must not be empty")
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if len(v) > MAX_TAGS:
            raise ValueError(f"{len(v)} tags; the API accepts at most {MAX_TAGS}")
        for t in v:
            if not t.strip():
                raise ValueError("tags must not be empty strings")
        return v

    @field_validator("attachment_urls")
    @classmethod
    def _urls(cls, v: list[str] | None) -> list[str] | None:
        for url in v or []:
            if not 1 <= len(url) <= MAX_URL_CHARS:
                raise ValueError(
                    f"attachment URL is {len(url):,} characters; the API accepts 1..{MAX_URL_CHARS:,}"
                )
            if not is_absolute_uri(url):
                raise ValueError(
                    f"{_short(url)} is not an absolute URI (scheme:..., e.g. https://host/path)"
                )
        return v

    @field_validator("max_acu_limit", mode="before")
    @classmethod
    def _acu_not_bool(cls, v: Any) -> Any:
        if isinstance(v, bool):  # JSON true is not a number of ACUs, though int(True) == 1
            raise ValueError("max_acu_limit must be a positive integer, not a boolean")
        return v

    @field_validator("structured_output_schema", mode="wrap")
    @classmethod
    def _schema(cls, v: Any, handler: ValidatorFunctionWrapHandler) -> dict[str, Any] | None:
        if isinstance(v, dict) and all(isinstance(k, str) for k in v):
            # Keep the caller's object (no copy): a campaign's sessions share one schema,
            # checked once (see check_output_schema).
            if problem := check_output_schema(v):
                raise ValueError(problem)
            return typing.cast(dict[str, Any], v)
        return typing.cast(dict[str, Any] | None, handler(v))  # None, or pydantic's type error

    def body(self) -> dict[str, Any]:
        """The JSON body to send: only the fields that were set, never nulls."""
        body = self.model_dump(mode="json", exclude_none=True, exclude={"structured_output_schema"})
        if self.structured_output_schema is not None:
            body["structured_output_schema"] = self.structured_output_schema  # checked as JSON
        return body


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_URI_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")


def is_absolute_uri(url: str) -> bool:
    """RFC 3986 absolute-URI syntax (`scheme:rest`, URI characters only); http(s) needs a host."""
    scheme, sep, rest = url.partition(":")
    if not sep or not rest or not _SCHEME.fullmatch(scheme) or not _URI_CHARS.fullmatch(rest):
        return False
    if scheme.lower() in ("http", "https"):
        return bool(urlsplit(url).hostname)
    return True


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def api_error_details(exc: ValidationError, where: str = "body") -> list[dict[str, Any]]:
    """A ValidationError as the API's (FastAPI's) 422 `detail` list ({loc, msg, type}): the
    simulator's wire format, not a message for people (that is errors.validation_lines)."""
    return [
        {"loc": [where, *err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in validation_errors(exc)
    ]


# --------------------------------------------------------------------------- session object


class PullRequest(BaseModel):
    """A pull request a session opened."""

    model_config = ConfigDict(extra="allow")

    pr_url: str = ""
    pr_state: str | None = None


_NOT_NULL = frozenset(
    {
        "url",
        "status",
        "tags",
        "org_id",
        "created_at",
        "updated_at",
        "acus_consumed",
        "pull_requests",
        "is_archived",
    }
)


class Session(BaseModel):
    """A session as the API returns it: tolerant of unknown fields and enum values."""

    model_config = ConfigDict(extra="allow")

    session_id: str
    url: str = ""
    status: str = ""
    tags: list[str] = Field(default_factory=list)
    org_id: str = ""
    created_at: int | float = 0
    updated_at: int | float = 0
    acus_consumed: float = 0.0
    pull_requests: list[PullRequest] = Field(default_factory=list)
    title: str | None = None
    status_detail: str | None = None
    structured_output: Any = None  # an object by contract; anything else is flagged, not fatal
    is_archived: bool = False
    playbook_id: str | None = None
    origin: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _nulls_mean_defaults(cls, data: Any) -> Any:
        # The API may send null for a field documented as always present: take the default.
        if isinstance(data, dict) and any(data.get(k, 0) is None for k in _NOT_NULL):
            return {k: v for k, v in data.items() if not (v is None and k in _NOT_NULL)}
        return data

    @property
    def status_enum(self) -> SessionStatus | None:
        try:
            return SessionStatus(self.status)
        except ValueError:
            return None

    @property
    def detail_enum(self) -> StatusDetail | None:
        try:
            return StatusDetail(self.status_detail) if self.status_detail else None
        except ValueError:
            return None


class Page(BaseModel):
    """One page of a list endpoint."""

    model_config = ConfigDict(extra="allow")

    items: list[dict[str, Any]]
    end_cursor: str | None = None
    has_next_page: bool = False
    total: int | None = None


def session_path_id(session_id: str) -> str:
    """The `devin_id` path parameter for a session id (some bodies carry bare hex ids)."""
    return session_id if session_id.startswith("devin-") else f"devin-{session_id}"
