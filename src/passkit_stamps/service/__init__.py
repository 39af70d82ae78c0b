"""The service: the merchant's and the web app's operations on a store, each one atomic.

``StampService`` (:mod:`.facade`) composes the concerns; results are frozen dataclasses
(:mod:`.results`).
"""

from __future__ import annotations

from .apikeys import ApiKey, ApiRole, NewApiKey
from .apple import parse_update_tag, updated_serials_answer
from .checks import utcnow
from .core import BUDGET_WINDOW, DEFAULT_NOTIFICATION_BUDGET
from .facade import StampService
from .reads import SORT_KEYS
from .results import (
    CardDetails,
    CardSummary,
    Change,
    GoogleObject,
    JournalEntry,
    OutboxEntry,
    Page,
    PassContent,
    PassState,
    PublishResult,
    TemplateSummary,
    UpdatedSerials,
)

__all__ = [
    "BUDGET_WINDOW",
    "DEFAULT_NOTIFICATION_BUDGET",
    "SORT_KEYS",
    "ApiKey",
    "ApiRole",
    "CardDetails",
    "CardSummary",
    "Change",
    "GoogleObject",
    "JournalEntry",
    "NewApiKey",
    "OutboxEntry",
    "Page",
    "PassContent",
    "PassState",
    "PublishResult",
    "StampService",
    "TemplateSummary",
    "UpdatedSerials",
    "parse_update_tag",
    "updated_serials_answer",
    "utcnow",
]
