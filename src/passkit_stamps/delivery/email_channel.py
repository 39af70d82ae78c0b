"""The e-mail channel as a dispatcher :class:`~.worker.Sender` (outbox platform ``email``): the
worker claims e-mail rows like any other (lease, back-off with jitter, parking, ``outbox
retry``) and this sends each one through :class:`~.email.EmailSender`.

E-mails are not coalesced: every row of a card in the batch is its own message (an enrolment
link and a personal message are two e-mails). A refused recipient (5xx) or an e-mail with nothing
left to send counts as done (its row leaves the outbox); a retryable failure fails the card's
rows of this batch (retried later: a message of that card already sent in the same batch may go
twice, at least once); an SMTP configuration error pauses e-mail delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..errors import EmailConfigError, EmailPermanentError, EmailRetryableError
from .email import EmailSender, build_message
from .worker import CardUpdate, SenderPaused

if TYPE_CHECKING:
    from ..service import StampService

logger = logging.getLogger(__name__)


class EmailChannel:
    """Sends the outbox's e-mail rows; ``card_url(serial)`` is the card page URL
    (``WebConfig.card_page_url``)."""

    platform = "email"

    def __init__(
        self, service: StampService, sender: EmailSender, card_url: Callable[[str], str]
    ) -> None:
        self.service = service
        self.sender = sender
        self.card_url = card_url

    async def deliver(self, updates: Sequence[CardUpdate]) -> Mapping[str, str]:
        from ..service.email import EmailJob

        failed: dict[str, str] = {}
        for update in updates:
            for row in update.rows:
                job = EmailJob(row.id, row.serial, row.reason, row.attempts, row.created_at)
                content = await self.service.email_content(job, self.card_url)
                if content is None:
                    continue  # nothing to send any more: done
                message = build_message(content, self.sender.config.sender, now=datetime.now(UTC))
                try:
                    await self.sender.send(message)
                except EmailConfigError as exc:
                    raise SenderPaused(str(exc)) from None
                except EmailPermanentError as exc:
                    logger.warning("e-mail of card %s refused for good: %s", row.serial, exc)
                except EmailRetryableError as exc:
                    logger.warning("e-mail of card %s not sent, will retry: %s", row.serial, exc)
                    failed[update.serial] = "EmailRetryableError"
                    break
        return failed
