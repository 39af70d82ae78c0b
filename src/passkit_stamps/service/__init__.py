"""The service: the merchant's and the web app's operations on a store, each one atomic.

``StampService`` (:mod:`.facade`) composes the concerns; results are frozen dataclasses
(:mod:`.results`).

The names are re-exported lazily (PEP 562, as the package's): importing one concern's module,
e.g. :mod:`.cards` for the command line's card commands, does not import every other concern.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:  # what mypy and IDEs see; at run time __getattr__ below imports on demand
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

_EXPORTS = {
    "ApiKey": "apikeys",
    "ApiRole": "apikeys",
    "NewApiKey": "apikeys",
    "parse_update_tag": "apple",
    "updated_serials_answer": "apple",
    "utcnow": "checks",
    "BUDGET_WINDOW": "core",
    "DEFAULT_NOTIFICATION_BUDGET": "core",
    "StampService": "facade",
    "SORT_KEYS": "reads",
    **dict.fromkeys(
        (
            "CardDetails",
            "CardSummary",
            "Change",
            "GoogleObject",
            "JournalEntry",
            "OutboxEntry",
            "Page",
            "PassContent",
            "PassState",
            "PublishResult",
            "TemplateSummary",
            "UpdatedSerials",
        ),
        "results",
    ),
}

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

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
