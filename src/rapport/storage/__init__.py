"""Storage and event-log backends behind two small interfaces (see ``base``)."""

from rapport.storage.base import ApiKey, EventLog, EventPage, ProcessingBatch, Storage, Workspace

__all__ = ["ApiKey", "EventLog", "EventPage", "ProcessingBatch", "Storage", "Workspace"]
