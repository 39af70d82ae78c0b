"""The store's tables (SQLAlchemy Core), the schema version, and the ordered upgrade steps.

One schema serves SQLite and PostgreSQL. Times are stored in UTC (SQLite hands them back naive;
:func:`utc` makes them aware again). The schema version is recorded in ``schema_version``, one row
per applied step; :func:`upgrade` applies the missing steps in order and refuses a database written
by a newer library (it could not know what the newer tables mean).

The ``Table`` objects describe the CURRENT schema (what queries use); the steps are frozen DDL as
each version released it, never derived from the Tables, so a column added later cannot change
what an old step creates. To change the schema: add the column (or table, index) to its Table,
append a step with the DDL for both dialects (``ALTER TABLE ... ADD COLUMN ...``), raise
:data:`SCHEMA_VERSION`. ``tests/store/test_schema_upgrades.py`` fails until the Tables and the
steps agree and every past version upgrades to what a fresh database gets (docs/storage.md).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import StoreError

#: The schema version this library writes. Raise it together with a new step in UPGRADES.
SCHEMA_VERSION = 10

#: SQLite's search index (step 2): an FTS5 table with the trigram tokenizer over
#: ``cards.search_text``, keyed by the card's ``holder_id`` (every card has a holder row of its
#: own; a shared one would fail loudly on insert). Kept in step by triggers.
SQLITE_SEARCH_TABLE = "cards_search"

#: 64-bit ids; SQLite only auto-increments an INTEGER PRIMARY KEY (its rowid), hence the variant.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", Time, nullable=False),
)

#: Named counters. ``change_tag``: SQLite's pass change tag, bumped inside every write transaction
#: (one writer at a time, so tags commit in order). ``change_tag_offset`` (step 6): added to the
#: transaction id that is PostgreSQL's tag (no lock: see store/changes.py).
counters = sa.Table(
    "counters",
    metadata,
    sa.Column("name", sa.String(40), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

#: Image bytes, content-addressed: template versions share unchanged images.
images = sa.Table(
    "images",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

#: One row per published template version. ``content`` is the template as JSON with images
#: replaced by their sha256 (see :mod:`.codec`); ``rules_digest`` tells a design-only change from
#: a rules change.
templates = sa.Table(
    "templates",
    metadata,
    sa.Column("id", sa.String(63), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("stamps_required", sa.Integer, nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("content_digest", sa.String(64), nullable=False),
    sa.Column("rules_digest", sa.String(64), nullable=False),
    sa.Column("published_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
)

holders = sa.Table(
    "holders",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200)),
    sa.Column("email", sa.String(320)),
    sa.Column("phone", sa.String(40)),
    sa.Column("birthday", sa.Date),
    sa.Column("created_at", Time, nullable=False),
    # Step 6: keyset pages sorted by name.
    sa.Index("ix_holders_name", "name", "id"),
)

#: Step 8's indexes of live cards: (state or template_id, then these); named by the key. Only
#: the default order's: a card's every write rewrites each index holding one of its columns
#: (SQLite: the UPDATE sets them all), so each costs every stamp; pages of a state or template
#: in other orders walk or look up instead (store/search.py), except step 9's and 10's.
LIVE_INDEX_KEYS: dict[str, tuple[str, ...]] = {"created": ("created_at", "serial")}

#: Step 9's indexes of the live cards in a state other than active (completed, expired,
#: voided: each a small share of the cards), by state and then these; named by the key. Partial,
#: so a write of an active card (most stamps) only tests the condition and writes no entry.
#: A query uses them when its WHERE carries the condition's terms as written here (SQLite's
#: rule for partial indexes; store/search.py adds them).
INACTIVE_WHERE = "state <> 'active' AND deleted_at IS NULL"
INACTIVE_INDEX_KEYS: dict[str, tuple[str, ...]] = {
    "stamps": ("stamps", "serial"),
    "last_stamp": ("last_stamp_at", "serial"),
    "serial": ("serial",),
    "holder": ("holder_id",),
}

#: Step 10's indexes of live cards by template and then these: a template's page by stamps or
#: last stamp is one range (a rare template's page otherwise walked the sort index past about
#: page size x cards / the template's cards: 32 to 46 ms p99 at a million cards). A stamp
#: changes both keys, so each costs a stamp one index entry more; measured in docs/storage.md.
TEMPLATE_INDEX_KEYS: dict[str, tuple[str, ...]] = {
    "stamps": ("stamps", "serial"),
    "last_stamp": ("last_stamp_at", "serial"),
}

cards = sa.Table(
    "cards",
    metadata,
    sa.Column("serial", sa.String(64), primary_key=True),
    sa.Column("template_id", sa.String(63), nullable=False),
    sa.Column("template_version", sa.Integer, nullable=False),
    sa.Column("holder_id", BigId, sa.ForeignKey("holders.id"), nullable=False),
    sa.Column("stamps", sa.Integer, nullable=False),
    sa.Column("rounds_completed", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("last_stamp_at", Time),
    sa.Column("expires_at", Time),
    sa.Column("authentication_token", sa.String(128), nullable=False),
    sa.Column("message", sa.String(1000)),
    sa.Column("language", sa.String(16)),
    # Lower-cased serial, name, email and phone: one column a search matches, kept in step with
    # the holder by the service; served by a trigram index (PostgreSQL: pg_trgm, SQLite: FTS5).
    sa.Column("search_text", sa.String(700), nullable=False),
    sa.Column("change_tag", sa.BigInteger, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("deleted_at", Time),
    # Notifications step: whether the card's last change was notified (the budget's decision;
    # a pass built for a silent change carries no changeMessage), and the id of the message on
    # the card (Google's addMessage: the same message is never added twice).
    sa.Column("notified", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("message_id", sa.String(64)),
    # Step 7: when the card's last notified change was made. A device that last fetched before
    # it gets a pass with changeMessage even if silent changes followed (issue 10).
    sa.Column("notified_at", Time),
    sa.ForeignKeyConstraint(
        ["template_id", "template_version"], ["templates.id", "templates.version"]
    ),
    sa.Index("ix_cards_template", "template_id", "template_version"),
    sa.Index("ix_cards_created", "created_at", "serial"),
    sa.Index("ix_cards_change_tag", "change_tag"),
    sa.Index("ix_cards_holder", "holder_id"),
    sa.Index("ix_cards_state", "state"),
    # Step 5 (notifications): the expiry sweep reads the cards that can still expire, by time.
    sa.Index(
        "ix_cards_expiring",
        "expires_at",
        sqlite_where=sa.text("state IN ('active', 'completed')"),
        postgresql_where=sa.text("state IN ('active', 'completed')"),
    ),
    # Step 6: keyset pages sorted by last stamp or stamps (the serial breaks ties).
    sa.Index("ix_cards_last_stamp", "last_stamp_at", "serial"),
    sa.Index("ix_cards_stamps", "stamps", "serial"),
    # Step 8: keyset pages filtered by state or template in the default order (live cards
    # only: every list reads those, and a count of them reads the index alone).
    *(
        sa.Index(
            f"ix_cards_live_{column}_{name}",
            column,
            *keys,
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        )
        for column in ("state", "template_id")
        for name, keys in LIVE_INDEX_KEYS.items()
    ),
    # Step 9: keyset pages of a state other than active in the other orders (a range of the
    # state's cards by stamps, last stamp or serial; by name, a probe of the state's holders).
    *(
        sa.Index(
            f"ix_cards_inactive_{name}",
            "state",
            *keys,
            sqlite_where=sa.text(INACTIVE_WHERE),
            postgresql_where=sa.text(INACTIVE_WHERE),
        )
        for name, keys in INACTIVE_INDEX_KEYS.items()
    ),
    # Step 10: keyset pages of a template by stamps or last stamp (live cards only).
    *(
        sa.Index(
            f"ix_cards_live_template_id_{name}",
            "template_id",
            *keys,
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        )
        for name, keys in TEMPLATE_INDEX_KEYS.items()
    ),
)

vouchers = sa.Table(
    "vouchers",
    metadata,
    sa.Column("serial", sa.String(64), sa.ForeignKey("cards.serial"), primary_key=True),
    # Codes are unique per card (the engine guarantees it); redeeming looks them up per card.
    sa.Column("code", sa.String(64), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("description", sa.String(2000), nullable=False),
    sa.Column("issued_at", Time, nullable=False),
    sa.Column("redeemed_at", Time),
    sa.Column("reward_at", sa.Integer),
    # Step 3: the till API redeems a voucher by its scanned code alone.
    sa.Index("ix_vouchers_code", "code"),
)

#: Where a card is saved: web, apple, google (several at once).
card_platforms = sa.Table(
    "card_platforms",
    metadata,
    sa.Column("serial", sa.String(64), sa.ForeignKey("cards.serial"), primary_key=True),
    sa.Column("platform", sa.String(16), primary_key=True),
    sa.Column("added_at", Time, nullable=False),
    sa.Index("ix_card_platforms_platform", "platform", "serial"),
)

#: The journal ("Card Events"). No foreign key to cards: the journal outlives a deleted card.
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("at", Time, nullable=False),
    sa.Column("serial", sa.String(64), nullable=False),
    sa.Column("template_id", sa.String(63), nullable=False),
    sa.Column("template_version", sa.Integer, nullable=False),
    sa.Column("code", sa.String(200)),
    sa.Column("stamps", sa.Integer, nullable=False),
    sa.Column("required", sa.Integer, nullable=False),
    sa.Column("reward", sa.String(200)),
    sa.Column("voucher_code", sa.String(64)),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("actor", sa.String(200)),
    sa.Index("ix_events_serial", "serial", "id"),
    sa.Index("ix_events_type", "type", "id"),
    sa.Index("ix_events_template", "template_id", "id"),
    sa.Index("ix_events_at", "at"),
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("device_library_id", sa.String(128), primary_key=True),
    sa.Column("push_token", sa.String(256), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
)

registrations = sa.Table(
    "registrations",
    metadata,
    sa.Column(
        "device_library_id",
        sa.String(128),
        sa.ForeignKey("devices.device_library_id"),
        primary_key=True,
    ),
    sa.Column("pass_type_id", sa.String(255), primary_key=True),
    sa.Column("serial", sa.String(64), sa.ForeignKey("cards.serial"), primary_key=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Index("ix_registrations_serial", "serial"),
)

google_objects = sa.Table(
    "google_objects",
    metadata,
    sa.Column("serial", sa.String(64), sa.ForeignKey("cards.serial"), primary_key=True),
    sa.Column("object_id", sa.String(255), nullable=False, unique=True),
    sa.Column("class_id", sa.String(255), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("last_synced", Time),
)

#: Pending pass updates per card and platform, consumed by the push worker.
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("serial", sa.String(64), nullable=False),
    sa.Column("platform", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("silent", sa.Boolean, nullable=False),
    sa.Column("change_tag", sa.BigInteger, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    # Step 4, the dispatcher (store/outbox.py): a row is due at ``next_attempt_at`` (NULL: now),
    # claimed by ``lease_owner`` until ``lease_until`` (a crashed worker's rows come back when
    # the lease runs out), ``last_error`` of the last failed attempt, ``dead_at`` once parked.
    sa.Column("next_attempt_at", Time),
    sa.Column("last_error", sa.String(500)),
    sa.Column("lease_owner", sa.String(64)),
    sa.Column("lease_until", Time),
    sa.Column("dead_at", Time),
    # Notifications step: the broadcast the row belongs to (its report counts the deliveries).
    sa.Column("campaign_id", sa.BigInteger),
    sa.Index("ix_outbox_serial", "serial", "platform"),
    sa.Index("ix_outbox_campaign", "campaign_id"),
)

#: Notifications spent per card (the budget: default 3 per card per 24 h).
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("serial", sa.String(64), nullable=False),
    sa.Column("at", Time, nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Index("ix_notifications_serial_at", "serial", "at"),
)

#: Broadcasts (notifications step): the message, the cards' filter (JSON, as ``cards`` takes
#: it), and the progress of the enqueue: ``cursor`` is the last serial enqueued (keyset order),
#: so a crashed broadcast resumes after it and never enqueues a card twice.
campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("message", sa.String(1000), nullable=False),
    sa.Column("filters", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("cursor", sa.String(64)),
    sa.Column("cards", sa.Integer, nullable=False, server_default="0"),
    sa.Column("notified", sa.Integer, nullable=False, server_default="0"),
    sa.Column("silent", sa.Integer, nullable=False, server_default="0"),
    sa.Column("actor", sa.String(200)),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("finished_at", Time),
)

#: A broadcast's figures per platform: outbox rows enqueued (targeted), of which notified and
#: silent, and delivered (counted when the dispatcher acknowledges its rows).
campaign_stats = sa.Table(
    "campaign_stats",
    metadata,
    sa.Column("campaign_id", BigId, sa.ForeignKey("campaigns.id"), primary_key=True),
    sa.Column("platform", sa.String(16), primary_key=True),
    sa.Column("targeted", sa.Integer, nullable=False, server_default="0"),
    sa.Column("notified", sa.Integer, nullable=False, server_default="0"),
    sa.Column("silent", sa.Integer, nullable=False, server_default="0"),
    sa.Column("delivered", sa.Integer, nullable=False, server_default="0"),
)

#: Results of operations by idempotency key: a replay returns the stored result.
idempotency = sa.Table(
    "idempotency",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("operation", sa.String(32), nullable=False),
    sa.Column("request_digest", sa.String(64), nullable=False),
    sa.Column("serial", sa.String(64)),
    sa.Column("result", sa.Text, nullable=False),
    sa.Column("created_at", Time, nullable=False),
)


#: API keys (step 3): the secret is kept only as its SHA-256; ``id`` is the public part of the key
#: (looked up by it, then the hash compared in constant time). Revoked keys stay listed.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("revoked_at", Time),
)


def utc(value: datetime | None) -> datetime | None:
    """A stored time as aware UTC (SQLite returns naive datetimes)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# -- upgrades -------------------------------------------------------------------------------------


#: Column types of the frozen DDL below, per dialect (what SQLAlchemy emitted for step 1).
_STEP_1_TYPES: dict[str, dict[str, str]] = {
    "sqlite": {"time": "DATETIME", "id": "INTEGER", "id_ref": "INTEGER", "bytes": "BLOB"},
    "postgresql": {
        "time": "TIMESTAMP WITH TIME ZONE",
        "id": "BIGSERIAL",
        "id_ref": "BIGINT",
        "bytes": "BYTEA",
    },
}

#: Schema version 1 as released, frozen: never edit (a database created by it exists in the
#: field). Later changes are new steps; the Table objects above describe the current schema.
_STEP_1_DDL = (
    """CREATE TABLE schema_version (
        version INTEGER NOT NULL,
        applied_at {time} NOT NULL,
        PRIMARY KEY (version))""",
    """CREATE TABLE counters (
        name VARCHAR(40) NOT NULL,
        value BIGINT NOT NULL,
        PRIMARY KEY (name))""",
    """CREATE TABLE images (
        sha256 VARCHAR(64) NOT NULL,
        data {bytes} NOT NULL,
        PRIMARY KEY (sha256))""",
    """CREATE TABLE templates (
        id VARCHAR(63) NOT NULL,
        version INTEGER NOT NULL,
        name VARCHAR(100) NOT NULL,
        stamps_required INTEGER NOT NULL,
        content TEXT NOT NULL,
        content_digest VARCHAR(64) NOT NULL,
        rules_digest VARCHAR(64) NOT NULL,
        published_at {time} NOT NULL,
        updated_at {time} NOT NULL,
        PRIMARY KEY (id, version))""",
    """CREATE TABLE holders (
        id {id} NOT NULL,
        name VARCHAR(200),
        email VARCHAR(320),
        phone VARCHAR(40),
        birthday DATE,
        created_at {time} NOT NULL,
        PRIMARY KEY (id))""",
    """CREATE TABLE cards (
        serial VARCHAR(64) NOT NULL,
        template_id VARCHAR(63) NOT NULL,
        template_version INTEGER NOT NULL,
        holder_id {id_ref} NOT NULL,
        stamps INTEGER NOT NULL,
        rounds_completed INTEGER NOT NULL,
        state VARCHAR(16) NOT NULL,
        created_at {time} NOT NULL,
        last_stamp_at {time},
        expires_at {time},
        authentication_token VARCHAR(128) NOT NULL,
        message VARCHAR(1000),
        language VARCHAR(16),
        search_text VARCHAR(700) NOT NULL,
        change_tag BIGINT NOT NULL,
        updated_at {time} NOT NULL,
        deleted_at {time},
        PRIMARY KEY (serial),
        FOREIGN KEY (template_id, template_version) REFERENCES templates (id, version),
        FOREIGN KEY (holder_id) REFERENCES holders (id))""",
    "CREATE INDEX ix_cards_template ON cards (template_id, template_version)",
    "CREATE INDEX ix_cards_created ON cards (created_at, serial)",
    "CREATE INDEX ix_cards_change_tag ON cards (change_tag)",
    "CREATE INDEX ix_cards_holder ON cards (holder_id)",
    "CREATE INDEX ix_cards_state ON cards (state)",
    # Released with step 1 (dropped again by step 2): a B-tree cannot serve a substring search.
    "CREATE INDEX ix_cards_search ON cards (search_text)",
    """CREATE TABLE vouchers (
        serial VARCHAR(64) NOT NULL,
        code VARCHAR(64) NOT NULL,
        position INTEGER NOT NULL,
        kind VARCHAR(16) NOT NULL,
        title VARCHAR(200) NOT NULL,
        description VARCHAR(2000) NOT NULL,
        issued_at {time} NOT NULL,
        redeemed_at {time},
        reward_at INTEGER,
        PRIMARY KEY (serial, code),
        FOREIGN KEY (serial) REFERENCES cards (serial))""",
    """CREATE TABLE card_platforms (
        serial VARCHAR(64) NOT NULL,
        platform VARCHAR(16) NOT NULL,
        added_at {time} NOT NULL,
        PRIMARY KEY (serial, platform),
        FOREIGN KEY (serial) REFERENCES cards (serial))""",
    "CREATE INDEX ix_card_platforms_platform ON card_platforms (platform, serial)",
    """CREATE TABLE events (
        id {id} NOT NULL,
        type VARCHAR(32) NOT NULL,
        at {time} NOT NULL,
        serial VARCHAR(64) NOT NULL,
        template_id VARCHAR(63) NOT NULL,
        template_version INTEGER NOT NULL,
        code VARCHAR(200),
        stamps INTEGER NOT NULL,
        required INTEGER NOT NULL,
        reward VARCHAR(200),
        voucher_code VARCHAR(64),
        data JSON NOT NULL,
        actor VARCHAR(200),
        PRIMARY KEY (id))""",
    "CREATE INDEX ix_events_serial ON events (serial, id)",
    "CREATE INDEX ix_events_type ON events (type, id)",
    "CREATE INDEX ix_events_template ON events (template_id, id)",
    "CREATE INDEX ix_events_at ON events (at)",
    """CREATE TABLE devices (
        device_library_id VARCHAR(128) NOT NULL,
        push_token VARCHAR(256) NOT NULL,
        created_at {time} NOT NULL,
        updated_at {time} NOT NULL,
        PRIMARY KEY (device_library_id))""",
    """CREATE TABLE registrations (
        device_library_id VARCHAR(128) NOT NULL,
        pass_type_id VARCHAR(255) NOT NULL,
        serial VARCHAR(64) NOT NULL,
        created_at {time} NOT NULL,
        PRIMARY KEY (device_library_id, pass_type_id, serial),
        FOREIGN KEY (device_library_id) REFERENCES devices (device_library_id),
        FOREIGN KEY (serial) REFERENCES cards (serial))""",
    "CREATE INDEX ix_registrations_serial ON registrations (serial)",
    """CREATE TABLE google_objects (
        serial VARCHAR(64) NOT NULL,
        object_id VARCHAR(255) NOT NULL,
        class_id VARCHAR(255) NOT NULL,
        state VARCHAR(32) NOT NULL,
        last_synced {time},
        PRIMARY KEY (serial),
        FOREIGN KEY (serial) REFERENCES cards (serial),
        UNIQUE (object_id))""",
    """CREATE TABLE outbox (
        id {id} NOT NULL,
        serial VARCHAR(64) NOT NULL,
        platform VARCHAR(16) NOT NULL,
        reason VARCHAR(32) NOT NULL,
        silent BOOLEAN NOT NULL,
        change_tag BIGINT NOT NULL,
        created_at {time} NOT NULL,
        attempts INTEGER DEFAULT '0' NOT NULL,
        PRIMARY KEY (id))""",
    "CREATE INDEX ix_outbox_serial ON outbox (serial, platform)",
    """CREATE TABLE notifications (
        id {id} NOT NULL,
        serial VARCHAR(64) NOT NULL,
        at {time} NOT NULL,
        reason VARCHAR(32) NOT NULL,
        PRIMARY KEY (id))""",
    "CREATE INDEX ix_notifications_serial_at ON notifications (serial, at)",
    """CREATE TABLE idempotency (
        "key" VARCHAR(200) NOT NULL,
        operation VARCHAR(32) NOT NULL,
        request_digest VARCHAR(64) NOT NULL,
        serial VARCHAR(64),
        result TEXT NOT NULL,
        created_at {time} NOT NULL,
        PRIMARY KEY ("key"))""",
    "INSERT INTO counters (name, value) VALUES ('change_tag', 0)",
)


def _step_1(conn: Connection) -> None:
    """The first schema, as released: its tables and indexes, the change-tag counter at 0, and
    on PostgreSQL the trigram search index (when pg_trgm can be had)."""
    types = _STEP_1_TYPES[conn.dialect.name]
    for statement in _STEP_1_DDL:
        conn.exec_driver_sql(statement.format(**types))
    if conn.dialect.name == "postgresql":
        _postgres_trigram_index(conn)


def _step_2(conn: Connection) -> None:
    """Search: drop the useless B-tree on search_text; on SQLite add the FTS5 trigram index.

    PostgreSQL already has its pg_trgm index from step 1 (when the extension can be had).
    """
    conn.execute(sa.text("DROP INDEX IF EXISTS ix_cards_search"))
    if conn.dialect.name == "sqlite":
        _sqlite_search_index(conn)


def _sqlite_search_index(conn: Connection) -> None:
    """An FTS5 trigram table over cards.search_text (substring search with an index), its
    triggers, and a covering index so counting matches needs no table rows.

    Optional by design: SQLite builds without FTS5 or older than 3.34 (no trigram tokenizer)
    skip it and search scans the table.
    """
    savepoint = conn.begin_nested()
    try:
        conn.execute(
            sa.text(
                f"CREATE VIRTUAL TABLE {SQLITE_SEARCH_TABLE} USING fts5(search_text, "
                "tokenize='trigram')"
            )
        )
        savepoint.commit()
    except sa.exc.OperationalError:
        savepoint.rollback()
        return
    table = SQLITE_SEARCH_TABLE
    for statement in (
        f"INSERT INTO {table}(rowid, search_text) SELECT holder_id, search_text FROM cards",
        # The update trigger fires only when the text (or the holder) really changed: most
        # card updates (stamps) leave the index alone.
        f"""CREATE TRIGGER cards_search_insert AFTER INSERT ON cards BEGIN
              INSERT INTO {table}(rowid, search_text) VALUES (new.holder_id, new.search_text);
            END""",
        f"""CREATE TRIGGER cards_search_update AFTER UPDATE OF search_text, holder_id ON cards
            WHEN old.search_text IS NOT new.search_text OR old.holder_id IS NOT new.holder_id
            BEGIN
              DELETE FROM {table} WHERE rowid = old.holder_id;
              INSERT INTO {table}(rowid, search_text) VALUES (new.holder_id, new.search_text);
            END""",
        f"""CREATE TRIGGER cards_search_delete AFTER DELETE ON cards BEGIN
              DELETE FROM {table} WHERE rowid = old.holder_id;
            END""",
        "CREATE INDEX ix_cards_holder_live ON cards (holder_id, deleted_at)",
    ):
        conn.execute(sa.text(statement))


def has_search_index(conn: Connection) -> bool:
    """Whether this SQLite database has the FTS5 search table (see :func:`_step_2`)."""
    found = conn.execute(
        sa.text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :name"),
        {"name": SQLITE_SEARCH_TABLE},
    ).scalar()
    return found is not None


def _postgres_trigram_index(conn: Connection) -> None:
    """A trigram index makes substring search fast on PostgreSQL, when pg_trgm can be had.

    Optional by design: the extension may be missing or not allowed, and search still works
    (a sequential scan). The operator class is schema-qualified so any search_path works.
    """
    schema = conn.execute(
        sa.text(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'pg_trgm'"
        )
    ).scalar()
    if schema is None:
        available = conn.execute(
            sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")
        ).scalar()
        if not available:
            return
        savepoint = conn.begin_nested()
        try:
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public"))
            savepoint.commit()
            schema = "public"
        except sa.exc.DBAPIError:
            savepoint.rollback()
            return
    conn.execute(
        sa.text(
            "CREATE INDEX ix_cards_search_trgm ON cards "
            f'USING gin (search_text "{schema}".gin_trgm_ops)'
        )
    )


def _step_3(conn: Connection) -> None:
    """The till API: its keys, and an index to find a voucher by its code alone."""
    time = _STEP_1_TYPES[conn.dialect.name]["time"]
    conn.exec_driver_sql(
        f"""CREATE TABLE api_keys (
        id VARCHAR(32) NOT NULL,
        name VARCHAR(100) NOT NULL,
        role VARCHAR(16) NOT NULL,
        secret_sha256 VARCHAR(64) NOT NULL,
        created_at {time} NOT NULL,
        revoked_at {time},
        PRIMARY KEY (id))"""
    )
    conn.exec_driver_sql("CREATE INDEX ix_vouchers_code ON vouchers (code)")


def _step_4(conn: Connection) -> None:
    """The dispatcher: retry schedule, lease, last error and dead parking on outbox rows."""
    time = _STEP_1_TYPES[conn.dialect.name]["time"]
    for column in (
        f"next_attempt_at {time}",
        "last_error VARCHAR(500)",
        "lease_owner VARCHAR(64)",
        f"lease_until {time}",
        f"dead_at {time}",
    ):
        conn.exec_driver_sql(f"ALTER TABLE outbox ADD COLUMN {column}")


def _step_change_order(conn: Connection) -> None:
    """Step 6. Change ordering without a global lock (store/changes.py): on PostgreSQL a tag is
    the writing transaction's id plus ``change_tag_offset``, chosen here so that every new tag
    is above every tag the ``change_tag`` counter handed out (devices keep their lastUpdated).
    SQLite keeps the counter (one writer at a time) and gets the row for uniformity (0).
    Keyset pages (store/search.py): an index per sort key, ending in the tie-breaker."""
    for statement in (
        "CREATE INDEX ix_cards_last_stamp ON cards (last_stamp_at, serial)",
        "CREATE INDEX ix_cards_stamps ON cards (stamps, serial)",
        "CREATE INDEX ix_holders_name ON holders (name, id)",
    ):
        conn.exec_driver_sql(statement)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "INSERT INTO counters (name, value) SELECT 'change_tag_offset', "
            "GREATEST(0, COALESCE((SELECT value FROM counters WHERE name = 'change_tag'), 0) "
            "- pg_current_xact_id()::text::bigint + 1)"
        )
    else:
        conn.exec_driver_sql("INSERT INTO counters (name, value) VALUES ('change_tag_offset', 0)")


def _step_notifications(conn: Connection) -> None:
    """Notifications (issue 10): the budget's decision and the message id on each card, the
    campaign of an outbox row, and the broadcasts with their figures per platform."""
    types = _STEP_1_TYPES[conn.dialect.name]
    false = "0" if conn.dialect.name == "sqlite" else "false"
    conn.exec_driver_sql(f"ALTER TABLE cards ADD COLUMN notified BOOLEAN DEFAULT {false} NOT NULL")
    conn.exec_driver_sql("ALTER TABLE cards ADD COLUMN message_id VARCHAR(64)")
    conn.exec_driver_sql("ALTER TABLE outbox ADD COLUMN campaign_id BIGINT")
    conn.exec_driver_sql("CREATE INDEX ix_outbox_campaign ON outbox (campaign_id)")
    conn.exec_driver_sql(
        "CREATE INDEX ix_cards_expiring ON cards (expires_at) "
        "WHERE state IN ('active', 'completed')"
    )
    conn.exec_driver_sql(
        """CREATE TABLE campaigns (
        id {id} NOT NULL,
        message VARCHAR(1000) NOT NULL,
        filters TEXT NOT NULL,
        state VARCHAR(16) NOT NULL,
        cursor VARCHAR(64),
        cards INTEGER DEFAULT '0' NOT NULL,
        notified INTEGER DEFAULT '0' NOT NULL,
        silent INTEGER DEFAULT '0' NOT NULL,
        actor VARCHAR(200),
        created_at {time} NOT NULL,
        finished_at {time},
        PRIMARY KEY (id))""".format(**types)
    )
    conn.exec_driver_sql(
        """CREATE TABLE campaign_stats (
        campaign_id {id_ref} NOT NULL,
        platform VARCHAR(16) NOT NULL,
        targeted INTEGER DEFAULT '0' NOT NULL,
        notified INTEGER DEFAULT '0' NOT NULL,
        silent INTEGER DEFAULT '0' NOT NULL,
        delivered INTEGER DEFAULT '0' NOT NULL,
        PRIMARY KEY (campaign_id, platform),
        FOREIGN KEY (campaign_id) REFERENCES campaigns (id))""".format(**types)
    )


def _step_notified_at(conn: Connection) -> None:
    """Step 7. The time of each card's last notified change: a notified change followed by a
    silent one before the device fetched must still alert the holder once."""
    time = _STEP_1_TYPES[conn.dialect.name]["time"]
    conn.exec_driver_sql(f"ALTER TABLE cards ADD COLUMN notified_at {time}")


def _step_live_pages(conn: Connection) -> None:
    """Step 8. Keyset pages of a state or a template in the default order (issue 11): one
    index range at any depth however rare the state or template; partial on live cards (what
    every list reads)."""
    for column in ("state", "template_id"):
        conn.exec_driver_sql(
            f"CREATE INDEX ix_cards_live_{column}_created ON cards ({column}, created_at, serial) "
            "WHERE deleted_at IS NULL"
        )
    if (
        conn.dialect.name == "sqlite"
        and conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").first()
    ):
        # A store someone analyzed: without figures for the new indexes SQLite would take
        # ``state = ?`` on them for selective next to the old indexes' real figures.
        for column in ("state", "template_id"):
            conn.exec_driver_sql(f"ANALYZE ix_cards_live_{column}_created")


def _step_inactive_pages(conn: Connection) -> None:
    """Step 9. Keyset pages of a state other than active in any order (issue 11): partial
    indexes of the live cards not active, by state and stamps, last stamp, serial or holder."""
    for name, keys in (
        ("stamps", "stamps, serial"),
        ("last_stamp", "last_stamp_at, serial"),
        ("serial", "serial"),
        ("holder", "holder_id"),
    ):
        conn.exec_driver_sql(
            f"CREATE INDEX ix_cards_inactive_{name} ON cards (state, {keys}) "
            "WHERE state <> 'active' AND deleted_at IS NULL"
        )
    if (
        conn.dialect.name == "sqlite"
        and conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").first()
    ):
        # An analyzed store: figures for the new indexes too (see step 8).
        for name in ("stamps", "last_stamp", "serial", "holder"):
            conn.exec_driver_sql(f"ANALYZE ix_cards_inactive_{name}")


def _step_template_pages(conn: Connection) -> None:
    """Step 10. Keyset pages of a template by stamps or last stamp (issue 11): one index range
    however rare the template; partial on live cards, like step 8's."""
    for name, keys in (("stamps", "stamps, serial"), ("last_stamp", "last_stamp_at, serial")):
        conn.exec_driver_sql(
            f"CREATE INDEX ix_cards_live_template_id_{name} ON cards (template_id, {keys}) "
            "WHERE deleted_at IS NULL"
        )
    if (
        conn.dialect.name == "sqlite"
        and conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").first()
    ):
        # An analyzed store: figures for the new indexes too (see step 8).
        for name in ("stamps", "last_stamp"):
            conn.exec_driver_sql(f"ANALYZE ix_cards_live_template_id_{name}")


#: Ordered upgrade steps: (version reached, step). Append only; never edit a released step (nor
#: the helpers it calls: _sqlite_search_index, _postgres_trigram_index): old databases were
#: made by them as they are.
UPGRADES: tuple[tuple[int, Callable[[Connection], None]], ...] = (
    (1, _step_1),
    (2, _step_2),
    (3, _step_3),
    (4, _step_4),
    (5, _step_notifications),
    (6, _step_change_order),
    (7, _step_notified_at),
    (8, _step_live_pages),
    (9, _step_inactive_pages),
    (10, _step_template_pages),
)


def current_version(conn: Connection) -> int:
    """The schema version recorded in the database (0 for an empty database)."""
    if not sa.inspect(conn).has_table("schema_version"):
        return 0
    return int(conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0)


def upgrade(conn: Connection, *, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION` inside the caller's transaction.

    ``target`` stops at an older version (tests build databases as past releases left them).
    Raises StoreError when the database was written by a newer library.
    """
    if conn.dialect.name == "postgresql":
        # Two processes opening a fresh database at once: one upgrades, the other waits.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(727274)"))
    found = current_version(conn)
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"the database has schema version {found}, newer than this library's "
            f"{SCHEMA_VERSION}: upgrade passkit-stamps"
        )
    for version, step in UPGRADES:
        if found < version <= target:
            step(conn)
            conn.execute(schema_version.insert().values(version=version, applied_at=_now()))
    return max(found, min(target, SCHEMA_VERSION))


def _now() -> datetime:
    return datetime.now(UTC)
