"""Compiling templates with a locked-down Liquid environment, once per version.

Liquid is what marketers already write in their tools; the engine is
python-liquid. The environments here are configured so a template can do
no harm whoever wrote it:

- no loader: ``include`` and ``render`` are removed, so a template can read
  nothing from disk (or anywhere) but the context it is given;
- unknown tags are syntax errors and unknown filters are errors at save
  time (found by static analysis, before any render);
- a template reads only the context roots ``profile``, ``event``,
  ``journey``, ``offer``, ``codes`` and ``links`` (plus what it assigns itself): any
  other name is an error at save time, since nothing could ever fill it;
- HTML parts (the email ``html``) escape every value they output; a value
  can only reach the HTML unescaped through the ``safe`` filter, written by
  the template's author;
- the ``date`` filter reads ``"now"`` and ``"today"`` as the render's own
  time (``RenderContext.now``, from the runtime's clock), never the
  machine's: a scenario on a virtual clock renders the virtual date, and a
  message composed again (a retry) shows the date it is sent;
- limits: loops stop after ``LOOP_ITERATION_LIMIT`` iterations in all, an
  HTML part's output after ``HTML_OUTPUT_LIMIT`` bytes and any other part's
  after ``TEXT_OUTPUT_LIMIT``, assigned values after ``LOCAL_NAMESPACE_LIMIT``
  bytes; passing a limit fails the render (``limit_exceeded``), it never
  sends a cut message.

Missing values (see ``render``): an undefined value is falsy and takes the
``default`` filter, so ``{% if profile.traits.vip %}`` and
``{{ x | default: "friend" }}`` are safe, and it equals ``nil``;
outputting it or looping over it fails that render with ``missing_variable``. Declared
``variables`` are filled in before the render, so they are never undefined.

``compile_template`` parses every part of a definition and returns every
error with its path (``$.html``, ``$.body['items'][0]``) and line, or the
compiled template; ``TemplateCache`` keeps compiled versions so each is
parsed once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Final

from liquid import BoundTemplate, Environment
from liquid.builtin.filters.misc import date as liquid_date
from liquid.exceptions import LiquidError
from liquid.filter import liquid_filter, with_context, with_environment
from liquid.undefined import FalsyStrictUndefined, Undefined, is_undefined

from rapport.core.templates.definitions import (
    HTML_PARTS,
    JSON_PARTS,
    ROOTS,
    TemplateDefinition,
    TemplateError,
)

LOOP_ITERATION_LIMIT: Final = 10_000
HTML_OUTPUT_LIMIT: Final = 512 * 1024
TEXT_OUTPUT_LIMIT: Final = 64 * 1024
LOCAL_NAMESPACE_LIMIT: Final = 1024 * 1024
_REMOVED_TAGS: Final = ("include", "render")
NOW_GLOBAL: Final = "rapport.now"
"""Where a render keeps its time among the template's globals. Not a name a
template can read: the compile-time check refuses every root outside ``ROOTS``."""
_NOW_WORDS: Final = ("now", "today")


class Missing(FalsyStrictUndefined):
    """An undefined value: falsy, equal to nil, takes ``default``; any other use raises."""

    force_liquid_default = True

    def __eq__(self, other: object) -> bool:
        return other is None or other is False or isinstance(other, Undefined)

    def __hash__(self) -> int:
        return hash(None)


@with_context
@with_environment
@liquid_filter
def clock_date(value: Any, fmt: Any, *, context: Any, environment: Environment) -> str:
    """Liquid's ``date`` filter, with ``"now"`` / ``"today"`` read from the render's time.

    python-liquid would read the machine's local time for them; a render gets
    its time from the runtime's ``Clock`` instead (``RenderContext.now``).
    """
    if not is_undefined(value) and not is_undefined(fmt) and value in _NOW_WORDS:
        now = context.globals.get(NOW_GLOBAL)
        if not isinstance(now, datetime):
            raise ValueError("this render was given no time for 'now'")
        if fmt == "%s":  # the C library would read an aware time as local time
            return str(int(now.timestamp()))
        value = now
    result: str = liquid_date(value, fmt, environment=environment)
    return result


class _SafeEnvironment(Environment):
    loop_iteration_limit: ClassVar[int | None] = LOOP_ITERATION_LIMIT
    local_namespace_limit: ClassVar[int | None] = LOCAL_NAMESPACE_LIMIT
    output_stream_limit: ClassVar[int | None] = TEXT_OUTPUT_LIMIT

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(undefined=Missing, strict_filters=True, autoescape=autoescape)
        for tag in _REMOVED_TAGS:
            del self.tags[tag]
        self.filters["date"] = clock_date


class _HtmlEnvironment(_SafeEnvironment):
    output_stream_limit: ClassVar[int | None] = HTML_OUTPUT_LIMIT


TEXT_ENVIRONMENT: Final = _SafeEnvironment(autoescape=False)
HTML_ENVIRONMENT: Final = _HtmlEnvironment(autoescape=True)


def source_position(error: LiquidError) -> tuple[int | None, int | None]:
    """1-based line and column of the token ``error`` points at, if it names one."""
    token = error.token
    if token is None:
        return None, None
    return position(token.source, token.start_index)


def position(source: str, index: int) -> tuple[int, int]:
    line_start = source.rfind("\n", 0, index) + 1
    return source.count("\n", 0, index) + 1, index - line_start + 1


@dataclass(frozen=True, slots=True)
class CompiledPart:
    """One part: a parsed Liquid template, or (webhook body) a JSON value of them."""

    name: str
    template: Any
    """``BoundTemplate``, or dict/list/scalars with ``BoundTemplate`` for strings."""


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    """A template version ready to render any number of times."""

    workspace_id: str
    id: str
    version: int
    channel: str
    parts: tuple[CompiledPart, ...]
    variables: Mapping[str, Any]


def compile_template(definition: TemplateDefinition) -> CompiledTemplate | list[TemplateError]:
    """Parse and check every part; every error found, or the compiled template."""
    errors: list[TemplateError] = []
    parts: list[CompiledPart] = []
    for name, source in definition.parts.items():
        key = (definition.channel, name)
        env = HTML_ENVIRONMENT if key in HTML_PARTS else TEXT_ENVIRONMENT
        if key in JSON_PARTS:
            parts.append(CompiledPart(name, _compile_json(env, source, f"$.{name}", errors)))
        else:
            parts.append(CompiledPart(name, _compile_source(env, source, f"$.{name}", errors)))
    if errors:
        return errors
    return CompiledTemplate(
        workspace_id=definition.workspace_id,
        id=definition.id,
        version=definition.version,
        channel=definition.channel,
        parts=tuple(parts),
        variables=dict(definition.variables),
    )


def _compile_json(env: Environment, value: Any, path: str, errors: list[TemplateError]) -> Any:
    if isinstance(value, str):
        return _compile_source(env, value, path, errors)
    if isinstance(value, dict):
        return {
            key: _compile_json(env, item, f"{path}[{key!r}]", errors) for key, item in value.items()
        }
    if isinstance(value, list):
        return [_compile_json(env, item, f"{path}[{i}]", errors) for i, item in enumerate(value)]
    return value


def _compile_source(
    env: Environment, source: str, path: str, errors: list[TemplateError]
) -> BoundTemplate | None:
    try:
        template = env.from_string(source)
    except LiquidError as error:
        line, column = source_position(error)
        errors.append(TemplateError(path, str(error.message), line, column))
        return None
    analysis = template.analyze(include_partials=False)
    for name, spans in sorted(analysis.filters.items()):
        if name not in env.filters:
            line, column = position(source, spans[0].index)
            errors.append(TemplateError(path, f"unknown filter {name!r}", line, column))
    for variable in analysis.globals.get("codes", ()):
        # The sender claims codes before rendering: the pool must be known statically.
        if len(variable.segments) < 2 or not isinstance(variable.segments[1], str):
            line, column = position(source, variable.span.index)
            errors.append(
                TemplateError(
                    path, "read a promo code as codes.<pool id>, the pool written out", line, column
                )
            )
    for name, variables in sorted(analysis.globals.items()):
        if name not in ROOTS:
            line, column = position(source, variables[0].span.index)
            errors.append(
                TemplateError(
                    path,
                    f"unknown variable {name!r}; a template reads {', '.join(ROOTS)}",
                    line,
                    column,
                )
            )
    return template


class TemplateCache:
    """Compiled template versions, the ``size`` most recently used.

    Keyed by (workspace, id, version): a version never changes, so an entry
    never goes stale, and a new version is compiled on its first use.
    """

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._compiled: OrderedDict[tuple[str, str, int], CompiledTemplate | list[TemplateError]]
        self._compiled = OrderedDict()

    def get(self, definition: TemplateDefinition) -> CompiledTemplate | list[TemplateError]:
        key = (definition.workspace_id, definition.id, definition.version)
        found = self._compiled.get(key)
        if found is not None:
            self._compiled.move_to_end(key)
            return found
        compiled = compile_template(definition)
        self._compiled[key] = compiled
        if len(self._compiled) > self._size:
            self._compiled.popitem(last=False)
        return compiled

    def __len__(self) -> int:
        return len(self._compiled)
