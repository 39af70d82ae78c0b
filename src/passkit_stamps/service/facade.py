"""StampService: the one object callers hold. It only composes the service's concerns, each in
its own module; state is shared through :class:`.core.ServiceCore`:

* :mod:`.templates`  publish, read and list template versions; migrate cards between versions
* :mod:`.cards`      the card operations (issue, stamp, redeem, coupon, void, message, holder,
                     delete), each one store transaction: state + journal + change tag + outbox
* :mod:`.reads`      the card details, the card page, the issued-cards list, history, journal
* :mod:`.export`     the customer CSV export
* :mod:`.apple`      the Apple pass web service: pass content and state, device registrations
* :mod:`.wallets`    where a card is saved, Google Wallet objects, the outbox for the pusher
* :mod:`.delivery`   the dispatcher's operations: claim, acknowledge, retry or park, pruning
* :mod:`.messages`   the expiry sweep and the notification budget's upkeep (the worker's)
* :mod:`.campaigns`  broadcasts: stored campaigns, enqueued in batches, resumable, reported
* :mod:`.apikeys`    the till API's keys; cards by scanned barcode, vouchers by scanned code
* :mod:`.enrolment`  enrolment (page and staff): a card and its link by e-mail, one per address
* :mod:`.email`      e-mails in the outbox: pending, rendered in the holder's language, sent
* :mod:`.imports`    customers from another platform: CSV rows checked, batches, idempotent

None of them holds SQL: that is :mod:`passkit_stamps.store`'s, the one way into the database.
"""

from __future__ import annotations

from .apikeys import ApiKeyOperations
from .apple import AppleOperations
from .campaigns import CampaignOperations
from .cards import CardOperations
from .delivery import DeliveryOperations
from .email import EmailOperations
from .enrolment import EnrolmentOperations
from .export import ExportOperations
from .imports import ImportOperations
from .messages import MessageOperations
from .templates import TemplateOperations
from .wallets import WalletOperations


class StampService(
    ApiKeyOperations,  # first: it builds on CardOperations and CardReads
    TemplateOperations,
    MessageOperations,  # builds on CardOperations
    CampaignOperations,  # builds on CardReads
    CardOperations,
    ExportOperations,
    AppleOperations,
    WalletOperations,
    DeliveryOperations,
    EnrolmentOperations,
    EmailOperations,
    ImportOperations,
):
    """The merchant's and the web app's operations on one :class:`~passkit_stamps.store.Store`.

    ``StampService(store, clock=..., notification_budget=3, pass_type_identifier=None)``."""
