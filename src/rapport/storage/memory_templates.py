"""Template versions in memory: the in-memory backend's part for ``rapport.core.templates``.

Versions are kept encoded, so a caller that mutates a definition it got
back (or passed in) never changes what is stored, as on the database backends.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from rapport.core.templates.definitions import (
    TemplateAlreadyExists,
    TemplateDefinition,
    TemplateDraft,
    deleted_template,
    next_template,
)

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(TemplateDefinition).decode


class MemoryTemplates:
    """Every version of every template; the methods mirror ``Storage``'s template methods."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], list[bytes]] = {}
        """(workspace, template id) -> encoded versions, oldest first (version = index + 1)."""

    def put(self, draft: TemplateDraft, now: datetime, create_only: bool) -> TemplateDefinition:
        previous = self._latest(draft.workspace_id, draft.id)
        if create_only and previous is not None and previous.active:
            raise TemplateAlreadyExists(draft.workspace_id, draft.id)
        return self._store(next_template(previous, draft, now))

    def get(
        self, workspace_id: str, template_id: str, version: int | None
    ) -> TemplateDefinition | None:
        if version is None:
            found = self._latest(workspace_id, template_id)
        else:
            versions = self._versions.get((workspace_id, template_id), [])
            found = _decode(versions[version - 1]) if 1 <= version <= len(versions) else None
        return found if found is not None and found.active else None

    def listed(self, workspace_id: str) -> list[TemplateDefinition]:
        latest = (
            _decode(versions[-1])
            for (workspace, _), versions in self._versions.items()
            if workspace == workspace_id
        )
        return sorted((d for d in latest if d.active), key=lambda definition: definition.id)

    def delete(
        self, workspace_id: str, template_id: str, now: datetime
    ) -> TemplateDefinition | None:
        previous = self._latest(workspace_id, template_id)
        if previous is None or not previous.active:
            return None
        return self._store(deleted_template(previous, now))

    def _latest(self, workspace_id: str, template_id: str) -> TemplateDefinition | None:
        versions = self._versions.get((workspace_id, template_id))
        return _decode(versions[-1]) if versions else None

    def _store(self, definition: TemplateDefinition) -> TemplateDefinition:
        doc = _encode(definition)
        self._versions.setdefault((definition.workspace_id, definition.id), []).append(doc)
        return _decode(doc)
