"""Database engine and schema. SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

metadata = sa.MetaData()

workspaces = sa.Table(
    "workspaces",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("balance_micros", sa.BigInteger, nullable=False, default=0),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_hash", sa.String(64), primary_key=True),  # sha256 hex; keys are never stored
    sa.Column("workspace", sa.String(128), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

sandboxes = sa.Table(
    "sandboxes",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("workspace", sa.String(128), nullable=False),
    sa.Column("name", sa.String(63), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("external_id", sa.String(256)),
    sa.Column("runtime_id", sa.String(64)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True)),
    sa.Column("doc", sa.JSON, nullable=False),  # spec, events, reason, timestamps
    # One live sandbox per name and workspace; deleted ones keep their row (v1 answers 410).
    sa.Index(
        "uq_live_sandbox_name",
        "workspace",
        "name",
        unique=True,
        sqlite_where=sa.text("deleted_at IS NULL"),
        postgresql_where=sa.text("deleted_at IS NULL"),
    ),
)


previews = sa.Table(  # store/previews.py
    "previews",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("workspace", sa.String(128), nullable=False),
    sa.Column("sandbox_id", sa.String(40), nullable=False, index=True),
    sa.Column("name", sa.String(63), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("doc", sa.JSON, nullable=False),
    sa.UniqueConstraint("sandbox_id", "name", name="uq_preview_name"),
)

preview_tokens = sa.Table(  # token values are stored as-is: the SDK lists them back
    "preview_tokens",
    metadata,
    sa.Column("value", sa.String(128), primary_key=True),
    sa.Column("preview_id", sa.String(40), nullable=False, index=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

ledger = sa.Table(  # store/ledger.py: every charge (negative) and credit (positive)
    "ledger",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True
    ),  # SQLite assigns rowids only to INTEGER PRIMARY KEY
    sa.Column("workspace", sa.String(128), nullable=False, index=True),
    sa.Column("amount_micros", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("ref", sa.String(256), nullable=False, default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

jobs = sa.Table(  # store/jobs.py: a job's current revision (running executions hold theirs)
    "jobs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("workspace", sa.String(128), nullable=False),
    sa.Column("name", sa.String(63), nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("schedule", sa.String(128), index=True),  # cron jobs, scanned by scheduler/cron
    sa.Column("last_tick", sa.DateTime(timezone=True)),  # the newest cron tick fired
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("doc", sa.JSON, nullable=False),  # spec, file list, updated_at
    sa.Column("files", sa.JSON, nullable=False),  # path -> base64 content
    sa.UniqueConstraint("workspace", "name", name="uq_job_name"),
)

job_executions = sa.Table(  # store/jobs.py: executions with their tasks and log tails
    "job_executions",
    metadata,
    sa.Column("job_id", sa.String(40), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("workspace", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("doc", sa.JSON, nullable=False),
    sa.Index("ix_job_executions_created", "job_id", "created_at"),
)

runs = sa.Table(  # store/runs.py: finished ephemeral runs (/v1/run)
    "runs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("workspace", sa.String(128), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("doc", sa.JSON, nullable=False),  # language, status, output, exit code, times
    sa.Index("ix_runs_workspace_created", "workspace", "created_at"),
)


def make_engine(url: str) -> AsyncEngine:
    engine = create_async_engine(url, future=True)
    if url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL keeps this crash-safe
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


async def create_schema(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
