"""Message templates: per-channel Liquid parts, versioned, compiled safely, rendered
without raising. See docs/templates.md.

- ``definitions``: the stored definition, its versions and the shape check;
- ``compile``: the locked-down Liquid environments, compile-time checks, a cache;
- ``render``: the render context and the rendering rule for missing values.
"""

from rapport.core.templates.compile import CompiledTemplate, TemplateCache, compile_template
from rapport.core.templates.definitions import (
    CHANNEL_PARTS,
    CHANNELS,
    TemplateAlreadyExists,
    TemplateDefinition,
    TemplateDraft,
    TemplateError,
    deleted_template,
    is_template_id,
    next_template,
    parse_draft,
)
from rapport.core.templates.render import (
    RenderContext,
    Rendered,
    RenderFailure,
    empty_profile_context,
    event_context,
    profile_context,
    render_template,
)

__all__ = [
    "CHANNELS",
    "CHANNEL_PARTS",
    "CompiledTemplate",
    "RenderContext",
    "RenderFailure",
    "Rendered",
    "TemplateAlreadyExists",
    "TemplateCache",
    "TemplateDefinition",
    "TemplateDraft",
    "TemplateError",
    "compile_template",
    "deleted_template",
    "empty_profile_context",
    "event_context",
    "is_template_id",
    "next_template",
    "parse_draft",
    "profile_context",
    "render_template",
]
