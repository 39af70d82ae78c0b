"""The Apple pass web service's operations: the pass and its state, device registrations, the
serials a device should fetch, and the push tokens of a card's devices."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.engine import Connection

from ..engine import Platform, card_at
from ..errors import CardNotFoundError, RegistrationLimitError
from ..model import is_valid_serial
from ..store import cards as store_cards
from ..store import devices as store_devices
from .checks import check_text
from .core import ServiceCore
from .results import PassContent, PassState, UpdatedSerials

#: Devices that may register for one pass. A holder has a few devices; the cap keeps a leaked
#: token from registering thousands (each one is a push per change, and one log line of them).
MAX_REGISTRATIONS_PER_PASS = 100


class AppleOperations(ServiceCore):
    #: The cap of :meth:`register_device`; set it on the service to change it.
    max_registrations_per_pass: int = MAX_REGISTRATIONS_PER_PASS

    async def card_for_pass(
        self, pass_type_identifier: str, serial: str, *, held_since: datetime | None = None
    ) -> PassContent | None:
        """The card, its template and Last-Modified for the pass web service; None when there
        is no such pass. A deleted card is still served (voided, anonymous) so devices that
        hold it learn it was invalidated.

        ``notified`` says whether the pass is built with ``changeMessage``: whether the card's
        last change was notified or, for a device holding the version of ``held_since`` (its
        ``If-Modified-Since``, a whole second), whether a notified change came after that
        version: a notified change followed by a silent one before the device fetched still
        alerts that device (and only that one)."""
        if not self._check_pass_type(pass_type_identifier) or not is_valid_serial(serial):
            return None

        def body(conn: Connection) -> PassContent | None:
            stored = store_cards.load_card(conn, serial)
            if stored is None:
                return None
            # The state at the time of the read (an expired card's pass says so at once).
            card = card_at(stored.card, self._now())
            template = self._template(
                conn, card.template_id, card.template_version, stored.template_digest
            )
            notified = stored.notified or (
                held_since is not None and _after_second(stored.notified_at, held_since)
            )
            return PassContent(card, template, stored.updated_at, notified=notified)

        return await self.store.run_read(body)

    async def register_device(
        self, device_id: str, push_token: str, pass_type_identifier: str, serial: str
    ) -> bool:
        """Register a device for a pass's updates; True when new (HTTP 201), False when it was
        already registered (200; a changed push token is stored). The first registration
        marks the card as saved in Apple Wallet (``pass_added``). Raises CardNotFoundError, and
        RegistrationLimitError for a new device when the pass has ``max_registrations_per_pass``
        registrations already."""
        check_text(device_id, "device library identifier", 128)
        check_text(push_token, "push token", 256)
        if not self._check_pass_type(pass_type_identifier) or not is_valid_serial(serial):
            raise CardNotFoundError(f"no pass {pass_type_identifier}/{serial}")
        now = self._now()
        limit = self.max_registrations_per_pass

        def body(conn: Connection) -> bool:
            stored = store_cards.load_card(conn, serial, for_update=True)
            if stored is None or stored.deleted_at is not None:
                raise CardNotFoundError(f"no pass {pass_type_identifier}/{serial}")
            # Counted under the card's row lock, so concurrent registrations cannot pass the cap.
            registered = store_devices.registration_count(conn, serial)
            store_devices.upsert_device(conn, device_id, push_token, now)
            if not store_devices.add_registration(
                conn, device_id, pass_type_identifier, serial, now
            ):
                return False
            if registered >= limit:  # a new device over the cap: the transaction rolls back
                raise RegistrationLimitError(
                    f"pass {serial} already has {registered} devices registered (at most {limit})"
                )
            self._set_platform(conn, stored, Platform.APPLE, True, now)
            return True

        return await self.store.run_write(body)

    async def unregister_device(
        self, device_id: str, pass_type_identifier: str, serial: str
    ) -> bool:
        """Remove a registration; False when there was none. A device with no registrations
        left is forgotten; a card with none left is no longer in Apple Wallet (``pass_removed``).
        Works for deleted cards too (devices clean up)."""
        check_text(device_id, "device library identifier", 128)
        if not self._check_pass_type(pass_type_identifier) or not is_valid_serial(serial):
            return False
        now = self._now()

        def body(conn: Connection) -> bool:
            stored = store_cards.load_card(conn, serial, for_update=True)
            if not store_devices.remove_registration(conn, device_id, pass_type_identifier, serial):
                return False
            others = store_devices.registration_count(conn, serial)
            if not others and stored is not None:
                self._set_platform(conn, stored, Platform.APPLE, False, now)
            return True

        return await self.store.run_write(body)

    async def push_tokens(self, serial: str) -> list[str]:
        """The push tokens of every device registered for the card (for the push worker)."""

        return await self.store.run_read(lambda conn: store_devices.push_tokens(conn, serial))

    async def serials_updated_since(
        self, device_id: str, pass_type_identifier: str, tag: str | None
    ) -> UpdatedSerials:
        """The serials registered to the device whose pass changed after ``tag`` (all of them
        when ``tag`` is None or not one of ours), and the tag to hand back as ``lastUpdated``.
        An empty list means "no updates" (HTTP 204). One statement, no transaction
        (:mod:`..store.hotreads`): devices ask far more often than anything changes."""
        check_text(device_id, "device library identifier", 128)
        since = parse_update_tag(tag)
        if not self._check_pass_type(pass_type_identifier):
            return UpdatedSerials([], tag or "0")
        rows = await self.hot_reads.registered_serials(device_id, pass_type_identifier, since)
        serials, last = updated_serials_answer(rows, tag)
        return UpdatedSerials(serials, last)

    async def pass_state(self, serial: str) -> PassState | None:
        """Token and last change of a card's pass, or None when there is no such card.

        One indexed primary-key lookup of two columns without a transaction: no card, voucher
        or template is loaded, so a device asking "has my pass changed?" costs no signing and
        no template decoding."""
        # A known and an unknown serial cost the same: one statement reading one card (another
        # card's as a stand-in) and the same result built; only then is the stand-in dropped.
        found = await self.hot_reads.pass_state_or_stand_in(serial)
        if found is None:
            return None
        known, token, last_modified = found
        state = PassState(authentication_token=token, last_modified=last_modified)
        return state if known else None


def _after_second(moment: datetime | None, held_since: datetime) -> bool:
    """Whether a change at ``moment`` is newer than the version a device holding
    ``held_since`` has: at whole seconds, ``moment`` rounded up as Last-Modified is (the web
    service's 304 uses the same rule, so a change it would not answer 304 for counts)."""
    if moment is None:
        return False
    second = moment.replace(microsecond=0)
    if moment.microsecond:
        second += timedelta(seconds=1)
    return second > held_since


def parse_update_tag(tag: str | None) -> int | None:
    """The change tag a device sent as ``passesUpdatedSince``; None when absent or not ours
    (then every registered pass is listed, so a device never misses an update)."""
    if isinstance(tag, str) and tag.isascii() and tag.isdigit() and len(tag) <= 18:
        return int(tag)
    return None


def updated_serials_answer(
    rows: Sequence[tuple[str, int]], tag: str | None
) -> tuple[list[str], str]:
    """Apple's answer from the (serial, change tag) rows changed since ``tag``: the serials and
    the tag to hand back as ``lastUpdated`` (an opaque string that only moves forward)."""
    if not rows:
        return [], tag if parse_update_tag(tag) is not None and tag is not None else "0"
    return [serial for serial, _ in rows], str(max(change_tag for _, change_tag in rows))
