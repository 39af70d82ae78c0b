"""Templates and their versions: publish (new version or design update), read, list, and move
cards to another version."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Connection

from .. import engine
from ..engine import Event
from ..errors import CardInputError, Problem, TemplateError, TemplateNotFoundError
from ..model import Card, CardTemplate
from ..store import cards as store_cards
from ..store import codec
from ..store import journal as store_journal
from ..store import outbox as store_outbox
from ..store import templates as store_templates
from .core import WALLETS, ServiceCore
from .results import PublishResult, TemplateSummary


class TemplateOperations(ServiceCore):
    async def publish_template(self, template: CardTemplate) -> PublishResult:
        """Store a template version.

        * A new id, or a version above the latest: stored (``created``); cards keep theirs.
        * A version already stored with identical content: nothing happens (``unchanged``).
        * A version already stored whose rules are the same but whose design or texts changed:
          stored over it and applied to every card of that version (``design_updated``): their
          change tags move and each wallet gets a silent update.
        * A version already stored with different rules, or a version below the latest that was
          never published: TemplateError (publish the rules change as a new version).
        """
        if not isinstance(template, CardTemplate):
            raise CardInputError(f"expected a CardTemplate, got {type(template).__name__}")
        template.check()  # texts rendered, images bounded, even for a model_copy: TemplateError
        encoded = codec.EncodedTemplate(template)
        now = self._now()

        def body(conn: Connection) -> PublishResult:
            versions = store_templates.template_versions(conn, template.id)
            same = next((v for v in versions if v["version"] == template.version), None)
            if same is not None:
                if same["content_digest"] == encoded.content_digest:
                    return PublishResult(template.id, template.version, "unchanged")
                if same["rules_digest"] != encoded.rules_digest:
                    raise TemplateError(
                        [
                            Problem(
                                "version",
                                f"{template.key} is already published with other rules "
                                "(stamps required, rewards, expiry, limits or after_last_reward); "
                                f"publish the change as version {versions[-1]['version'] + 1} "
                                "and migrate cards with migrate_cards",
                            )
                        ],
                        source=template.id,
                    )
                store_templates.replace_template(conn, encoded, now)
                count = self._touch_template_cards(conn, template, now)
                return PublishResult(template.id, template.version, "design_updated", count)
            if versions and template.version < versions[-1]["version"]:
                raise TemplateError(
                    [
                        Problem(
                            "version",
                            f"must be greater than {versions[-1]['version']}, the latest "
                            f"published version of {template.id!r}",
                        )
                    ],
                    source=template.id,
                )
            store_templates.insert_template(conn, encoded, now)
            return PublishResult(template.id, template.version, "created")

        result = await self.store.run_write(body)
        if result.status != "unchanged":
            # Committed: cache the version as published (a design update replaces the old copy).
            self._templates[(template.id, template.version)] = (encoded.content_digest, template)
        return result

    def _touch_template_cards(self, conn: Connection, template: CardTemplate, now: datetime) -> int:
        """Move the change tag of every card of this version and queue silent updates."""
        serials = store_cards.lock_template_cards(conn, template.id, template.version)
        if not serials:
            return 0
        tag = store_journal.next_change_tag(conn)
        store_cards.touch_template_cards(
            conn, template.id, template.version, change_tag=tag, now=now
        )
        store_outbox.queue_template_updates(
            conn,
            template.id,
            template.version,
            WALLETS,
            reason="template_design",
            change_tag=tag,
            now=now,
        )
        return len(serials)

    async def get_template(self, template_id: str, version: int | None = None) -> CardTemplate:
        """A published template (the latest version when ``version`` is None).
        Raises TemplateNotFoundError."""

        def body(conn: Connection) -> CardTemplate:
            wanted = version
            if wanted is None:
                wanted = store_templates.latest_version(conn, template_id)
                if wanted is None:
                    raise TemplateNotFoundError(f"no template {template_id!r} was published")
            return self._template(conn, template_id, wanted)

        return await self.store.run_read(body)

    async def list_templates(self) -> list[TemplateSummary]:
        """Every published template version, by id and version."""
        rows = await self.store.run_read(store_templates.all_versions)
        return [TemplateSummary(i, v, n) for i, v, n in rows]

    async def migrate_cards(
        self,
        template_id: str,
        to_version: int,
        *,
        from_version: int | None = None,
        actor: str | None = None,
    ) -> int:
        """Move the active and completed cards of ``template_id`` (of every other version, or
        only ``from_version``) to ``to_version``, keeping their stamps (engine.migrate_card).
        Voided, expired and deleted cards stay where they are. Returns the number moved."""
        now = self._now()

        def body(conn: Connection) -> int:
            moved = 0
            target = self._template(conn, template_id, to_version)
            if from_version is not None:
                self._template(conn, template_id, from_version)
            serials = store_cards.lock_cards_to_migrate(conn, template_id, to_version, from_version)
            if not serials:
                return 0
            pending: list[tuple[store_cards.StoredCard, Card, CardTemplate, list[Event]]] = []
            for batch in store_cards.chunks(serials, 500):
                for stored in store_cards.load_cards(conn, batch):
                    old = self._template(
                        conn, stored.card.template_id, stored.card.template_version
                    )
                    expired = engine.expire_if_due(old, stored.card, now=now)
                    if expired.events:
                        pending.append((stored, expired.card, old, list(expired.events)))
                        continue
                    outcome = engine.migrate_card(old, target, stored.card, now=now)
                    after = engine.expire_if_due(target, outcome.card, now=now)
                    pending.append((stored, after.card, target, [*outcome.events, *after.events]))
                    moved += 1
            rows = [store_journal.event_row(e, actor) for _, _, _, evs in pending for e in evs]
            store_journal.insert_events(conn, rows)
            found = store_cards.platforms(conn, serials)
            tag = store_journal.next_change_tag(conn)
            for stored, card, _, _ in pending:
                store_cards.update_card(
                    conn,
                    stored.card,
                    card,
                    stored.holder_id,
                    change_tag=tag,
                    now=now,
                    previous=stored.updated_at,
                )
            store_outbox.insert_outbox(
                conn,
                [
                    store_outbox.outbox_row(stored.card.serial, p, "migrated", True, tag, now)
                    for stored, _, _, _ in pending
                    for p in sorted(found.get(stored.card.serial, set()) & set(WALLETS))
                ],
            )
            return moved

        return await self.store.run_write(body)
