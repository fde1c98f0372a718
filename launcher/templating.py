"""Jinja2 templating of manifest strings, in a sandbox, with undefined variables as errors.

Templates are compiled once per source string and rendered per item; strings with no Jinja
markers skip Jinja entirely (most of a manifest's strings, and the planner's hot path).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

_MARKERS = ("{{", "{%", "{#")


class TemplateFailure(Exception):
    """A template could not be compiled or rendered (internal: the planner locates it).

    `line` is the line within the template source, when Jinja knows it.
    """

    def __init__(self, message: str, hint: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.line = line


class Templates:
    """A compile cache over one sandboxed, strict Jinja2 environment."""

    def __init__(self) -> None:
        self.env = ImmutableSandboxedEnvironment(
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
        )
        self._cache: dict[str, jinja2.Template | str] = {}

    def compile(self, source: str) -> jinja2.Template | str:
        """Compile `source` (cached); a string without markers is returned as is."""
        hit = self._cache.get(source)
        if hit is not None:
            return hit
        compiled: jinja2.Template | str
        if not any(m in source for m in _MARKERS):
            compiled = source
        else:
            try:
                compiled = self.env.from_string(source)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateFailure(f"template syntax error: {exc.message}",
                                      "check the {{ }} and {% %} pairs", exc.lineno) from None
        self._cache[source] = compiled
        return compiled

    def render(self, source: str, context: Mapping[str, Any]) -> str:
        """Render one template string against `context`."""
        compiled = self.compile(source)
        if isinstance(compiled, str):
            return compiled
        try:
            return compiled.render(context)
        except SecurityError as exc:
            raise TemplateFailure(f"template tried to leave the sandbox: {exc}",
                                  "templates may only read item, vars, campaign, fleet, index") from None
        except jinja2.UndefinedError as exc:
            raise TemplateFailure(f"undefined variable: {exc.message}",
                                  "available: item, vars, campaign, fleet, index; "
                                  "use `| default(...)` for optional values") from None
        except jinja2.TemplateError as exc:
            raise TemplateFailure(f"template error: {exc}") from None
        except Exception as exc:  # a filter or operation failed on this item's data
            raise TemplateFailure(f"template failed: {type(exc).__name__}: {exc}") from None
