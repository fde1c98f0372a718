"""Jinja2 templating of manifest strings, in a sandbox, with undefined variables as errors.

Templates are compiled once per source string and rendered per item; strings with no Jinja
markers skip Jinja entirely (most of a manifest's strings, and the planner's hot path).
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Callable, Mapping
from types import BuiltinMethodType
from typing import Any

import jinja2
import jinja2.meta
from jinja2.exceptions import SecurityError
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

_MARKERS = ("{{", "{%", "{#")
MAX_OUTPUT_CHARS = 1_000_000  # what one operation may build; a prompt is a few KB
MAX_EXPONENT = 1_000
CONTEXT_NAMES = ("item", "vars", "campaign", "fleet", "index")
_UNDEFINED_NAME = re.compile(r"has no attribute '([^']+)'|^'([^']+)' is undefined")


class TemplateFailure(Exception):
    """A template could not be compiled or rendered (internal: the planner locates it).

    `line` is the line within the template source, when Jinja knows it.
    """

    def __init__(self, message: str, hint: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.line = line


def _bounded_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse numeric arguments that would make a filter build a huge string (`center(10**9)`)."""

    def guarded(*args: Any, **kwargs: Any) -> Any:
        for a in (*args[1:], *kwargs.values()):
            if isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_OUTPUT_CHARS:
                raise SecurityError(f"{name}() argument {a} is too large")
        return fn(*args, **kwargs)

    guarded.__wrapped__ = fn  # type: ignore[attr-defined]
    return guarded


# Types whose attributes are the same for every instance (no instance __dict__, no
# __getattr__): for them the sandbox's verdict on an attribute depends on (type, name) alone, so
# it is asked once per pair. Items, vars and loop variables are made of these.
_PLAIN_TYPES = frozenset({str, int, float, bool, list, tuple, dict, type(None), LoopContext})


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, plus: dict keys win over dict methods (`item.items` is the
    item's `items` column, not a bound method), arithmetic that would build huge values is
    refused, and its verdicts on the attributes of plain data are remembered.

    Remembering: the sandbox checks every attribute read (`dep.startswith`, `loop.index`)
    through several isinstance tests against abstract types, which dominated the rendering of
    templates with loops. A verdict of "safe" for (type, name) on a plain type is cached and later
    reads of it return the attribute at once; anything else (unsafe, missing, `str.format`
    which the sandbox wraps) takes Jinja's own path every time, so what it refused it still
    refuses.
    """

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._safe: set[tuple[type, str]] = set()

    def getattr(self, obj: Any, attribute: str) -> Any:
        kind = type(obj)
        if kind is dict and attribute in obj:  # plain data: a key lookup is always safe
            return obj[attribute]
        if (kind, attribute) in self._safe:
            return getattr(obj, attribute)
        value = super().getattr(obj, attribute)
        if (
            kind in _PLAIN_TYPES
            and not attribute.startswith("_")
            and not isinstance(value, jinja2.Undefined)
            and hasattr(kind, attribute)  # the type's own, not a dict key of this one object
            and self.wrap_str_format(getattr(obj, attribute)) is None
            and self.is_safe_attribute(obj, attribute, getattr(obj, attribute))
        ):
            self._safe.add((kind, attribute))
        return value

    def call(
        __self,  # jinja2's signature: the double underscores avoid keyword clashes
        __context: jinja2.runtime.Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        # A method of plain data was already vetted when it was read (getattr above, where the
        # immutable sandbox refuses `list.append` and the like); the per-call check looks for
        # flags that builtin methods never carry.
        if type(__obj) is BuiltinMethodType and type(__obj.__self__) in _PLAIN_TYPES:
            return __context.call(__obj, *args, **kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(
        self,
        context: jinja2.runtime.Context,  # noqa: ARG002 (jinja2's signature)
        op: str,
        left: Any,
        right: Any,
    ) -> Any:
        if op == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"exponent {right} is too large")
            return operator.pow(left, right)
        for seq, n in ((left, right), (right, left)):
            if (
                isinstance(seq, str | list | tuple)
                and isinstance(n, int)
                and len(seq) * n > MAX_OUTPUT_CHARS
            ):
                raise SecurityError(f"repeating a value {n} times would build {len(seq) * n:,} items")
        return operator.mul(left, right)


class Templates:
    """A compile cache over one sandboxed, strict Jinja2 environment."""

    def __init__(self) -> None:
        self.env = _Sandbox(
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
        )
        self.env.globals.pop("lipsum", None)  # generates text at will; not useful in a manifest
        for name in ("center", "indent", "format", "wordwrap", "truncate"):
            self.env.filters[name] = _bounded_filter(name, self.env.filters[name])
        self._globals = dict(self.env.globals)
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
                raise TemplateFailure(
                    f"template syntax error: {exc.message}",
                    "check the {{ }} and {% %} pairs",
                    exc.lineno,
                ) from None
        self._cache[source] = compiled
        return compiled

    def variables(self, source: str) -> set[str]:
        """The top-level names a template reads (`item`, `vars`, ...); empty for plain text."""
        if not any(m in source for m in _MARKERS):
            return set()
        try:
            return jinja2.meta.find_undeclared_variables(self.env.parse(source))
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateFailure(
                f"template syntax error: {exc.message}", "check the {{ }} and {% %} pairs", exc.lineno
            ) from None

    def context(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A render context: the environment's globals plus `values` (item, vars, ...)."""
        return {**self._globals, **values}

    def render(self, source: str, context: Mapping[str, Any]) -> str:
        """Render one template string against `context` (item, vars, ...)."""
        return self.bind(context)(source)

    def bind(self, values: Mapping[str, Any]) -> Callable[[str], str]:
        """A renderer of many templates against one item's values (the planner's hot path).

        One Jinja context serves every template of the item: Jinja's own Template.render
        builds a new one (merging a ChainMap of globals) per call, which dominated plan time.
        Variables a template sets are cleared before the next one.
        """
        ctx = self.context(values)
        shared: list[jinja2.runtime.Context] = []

        def render(source: str) -> str:
            compiled = self.compile(source)
            if isinstance(compiled, str):
                return compiled
            if compiled.blocks:  # {% block %}: the context must know the template's blocks
                jctx = compiled.new_context(ctx, shared=True)
            elif shared:
                jctx = shared[0]
                jctx.vars.clear()
                jctx.exported_vars.clear()
            else:  # built directly: Template.new_context would copy the globals' keys again
                jctx = self.env.context_class(self.env, ctx, None, {})
                shared.append(jctx)
            return _run(compiled, jctx, ctx)

        return render


def _run(compiled: jinja2.Template, jctx: jinja2.runtime.Context, ctx: Mapping[str, Any]) -> str:
    try:
        out = "".join(compiled.root_render_func(jctx))
    except SecurityError as exc:
        raise TemplateFailure(
            f"template tried to leave the sandbox: {exc}",
            "templates may only read item, vars, campaign, fleet, index",
            _line(compiled, exc),
        ) from None
    except jinja2.UndefinedError as exc:
        raise TemplateFailure(
            f"undefined variable: {exc.message}",
            _undefined_hint(exc.message or "", ctx),
            _line(compiled, exc),
        ) from None
    except jinja2.TemplateError as exc:
        raise TemplateFailure(f"template error: {exc}", None, _line(compiled, exc)) from None
    except Exception as exc:  # a filter or operation failed on this item's data
        raise TemplateFailure(
            f"template failed: {type(exc).__name__}: {exc}", None, _line(compiled, exc)
        ) from None
    if len(out) > MAX_OUTPUT_CHARS:
        raise TemplateFailure(
            f"template renders {len(out):,} characters; the limit is {MAX_OUTPUT_CHARS:,}"
        )
    return out


def _line(compiled: jinja2.Template, exc: BaseException) -> int | None:
    """The template line being rendered when `exc` was raised (the innermost one)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = compiled.get_corresponding_lineno(tb.tb_lineno)
        tb = tb.tb_next
    return line


def _undefined_hint(message: str, context: Mapping[str, Any]) -> str:
    """Name the closest existing field, and what there is to read."""
    m = _UNDEFINED_NAME.search(message)
    missing = (m.group(1) or m.group(2)) if m else ""
    item, vars_ = context.get("item"), context.get("vars")
    item_keys = [str(k) for k in item] if isinstance(item, Mapping) else []
    var_keys = [str(k) for k in vars_] if isinstance(vars_, Mapping) else []
    close = difflib.get_close_matches(missing, [*item_keys, *var_keys, *CONTEXT_NAMES], n=1)
    parts = [f"did you mean {close[0]!r}?"] if close and missing else []
    if item_keys:
        parts.append(f"this item has: {', '.join(item_keys)}")
    else:
        parts.append(f"available: {', '.join(CONTEXT_NAMES)}")
    parts.append("use `| default(...)` for optional values")
    return "; ".join(parts)


class _LenientSandbox(_Sandbox):
    """The rule sandbox: a missing field (`output.blockers` when there is no output) is falsy
    rather than an error, since sessions deliver partial outputs."""


RULE_NAMES = ("output", "pull_requests", "status", "status_detail", "item")


class Rule:
    """A compiled boolean expression (a manifest's `success_when`), evaluated in the sandbox.

    Raises TemplateFailure at compile time for a syntax error or a name it cannot read.
    """

    _env: _LenientSandbox | None = None

    def __init__(self, source: str) -> None:
        env = Rule._shared_env()
        self.source = source
        try:
            ast = env.parse(f"{{{{ {source} }}}}")
            names = jinja2.meta.find_undeclared_variables(ast)
            self._expr = env.compile_expression(source, undefined_to_none=False)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateFailure(
                f"success rule syntax error: {exc.message}",
                'write an expression, e.g. "output.migrated and not output.blockers"',
            ) from None
        unknown = sorted(names - set(RULE_NAMES) - set(env.globals))
        if unknown:
            close = difflib.get_close_matches(unknown[0], RULE_NAMES, n=1)
            raise TemplateFailure(
                f"success rule reads unknown name {unknown[0]!r}",
                (f"did you mean {close[0]!r}? " if close else "")
                + f"a rule may read {', '.join(RULE_NAMES)}",
            )

    @classmethod
    def _shared_env(cls) -> _LenientSandbox:
        if cls._env is None:
            env = _LenientSandbox(undefined=jinja2.ChainableUndefined, autoescape=False)
            env.globals.pop("lipsum", None)
            cls._env = env
        return cls._env

    def evaluate(self, values: Mapping[str, Any]) -> bool:
        """The rule's truth for one session; TemplateFailure when evaluating it fails."""
        try:
            result = self._expr(**values)
        except SecurityError as exc:
            raise TemplateFailure(f"success rule tried to leave the sandbox: {exc}") from None
        except Exception as exc:  # a comparison or filter failed on this session's data
            raise TemplateFailure(f"success rule failed: {type(exc).__name__}: {exc}") from None
        if isinstance(result, jinja2.Undefined):
            return False
        return bool(result)
