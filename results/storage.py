"""Where results are kept: SQLAlchemy Core on SQLite (default) or PostgreSQL (DATABASE_URL).

Two tables. `results` has one row per result or dead letter for one object version (bucket,
key, version: the version id, else the ETag), with what the page filters on as columns and
everything else as JSON. `labels` has one row per label of a result, so that a label filter is
plain SQL on both databases. An event is written in one transaction; a redelivered one (same
kind, source, id and position, and for a dead letter the same failed destination) is dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, RowMapping

from results.records import DEAD_LETTER, Record
from results.rows import ObjectId, card, label_row, result_row

metadata = sa.MetaData()

results_table = sa.Table(
    "results",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dedup", sa.String(64), nullable=False, unique=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("function", sa.String(400)),
    sa.Column("event_id", sa.String(400), nullable=False),
    sa.Column("event_source", sa.Text, nullable=False),
    sa.Column("event_type", sa.String(200), nullable=False),
    sa.Column("bucket", sa.String(255), nullable=False),
    sa.Column("key", sa.String(1024), nullable=False),
    sa.Column("version", sa.String(1024), nullable=False),
    sa.Column("version_id", sa.String(400)),
    sa.Column("etag", sa.String(400)),
    sa.Column("model", sa.String(400)),
    sa.Column("top_label", sa.String(400)),
    sa.Column("top_score", sa.Float),
    sa.Column("latency_ms", sa.Float),
    sa.Column("flagged", sa.Boolean),
    sa.Column("verdict", sa.String(400)),
    sa.Column("score", sa.Float),
    sa.Column("error", sa.Text),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("timings", sa.JSON, nullable=False),
    sa.Column("extra", sa.JSON, nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Index("results_object", "bucket", "key", "version"),
    sa.Index("results_received", "received_at"),
)

labels_table = sa.Table(
    "labels",
    metadata,
    sa.Column(
        "result_id", sa.Integer, sa.ForeignKey("results.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("name", sa.String(400), nullable=False),
    sa.Column("score", sa.Float),
    sa.PrimaryKeyConstraint("result_id", "rank"),
    sa.Index("labels_name", "name"),
)


@dataclass(frozen=True)
class Filters:
    """What `/api/results` and the page filter on; None means "any"."""

    label: str | None = None  # a function's top label contains this, case-insensitively
    function: str | None = None
    flagged: bool | None = None
    dead_lettered: bool | None = None
    bucket: str | None = None
    key: str | None = None
    version: str | None = None
    limit: int = 100


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite"):
            # One connection shared by the threads of the app: `:memory:` would otherwise be
            # one empty database per connection, and SQLite serialises writers anyway.
            self.engine: Engine = sa.create_engine(
                url,
                connect_args={"check_same_thread": False},
                poolclass=sa.pool.StaticPool,
            )
        else:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        self._write_lock = threading.Lock()

    def create(self) -> None:
        metadata.create_all(self.engine)

    def ping(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            return False
        return True

    def close(self) -> None:
        self.engine.dispose()

    def add(self, records: Sequence[Record]) -> list[Record]:
        """Keep the records of one event, all or none; returns those that were new."""
        added: list[Record] = []
        with self._write_lock, self.engine.begin() as connection:
            seen = set(
                connection.execute(
                    sa.select(results_table.c.dedup).where(
                        results_table.c.dedup.in_([r.dedup for r in records])
                    )
                ).scalars()
            )
            for record in records:
                if record.dedup in seen:
                    continue
                seen.add(record.dedup)
                row_id = connection.execute(
                    results_table.insert()
                    .values(**result_row(record))
                    .returning(results_table.c.id)
                ).scalar_one()
                if record.labels:
                    connection.execute(
                        labels_table.insert(),
                        [
                            {"result_id": row_id, "rank": rank, **label_row(label)}
                            for rank, label in enumerate(record.labels)
                        ],
                    )
                added.append(record)
        return added

    def objects(self, filters: Filters) -> list[dict[str, Any]]:
        """One card per object version matching `filters`, the most recently updated first."""
        r = results_table
        query = (
            sa.select(r.c.bucket, r.c.key, r.c.version, sa.func.max(r.c.received_at).label("last"))
            .group_by(r.c.bucket, r.c.key, r.c.version)
            .order_by(sa.desc("last"), r.c.bucket, r.c.key)
            .limit(filters.limit)
        )
        for condition in _conditions(filters):
            query = query.where(condition)
        with self.engine.connect() as connection:
            ids = [(b, k, v) for b, k, v, _ in connection.execute(query)]
            rows = self._rows_of(connection, ids)
        return [card(object_id, rows.get(object_id, [])) for object_id in ids]

    def known(self, bucket: str, key: str, version: str) -> RowMapping | None:
        """The newest row of this object version (None: the service never heard of it)."""
        r = results_table
        query = (
            sa.select(r.c.bucket, r.c.key, r.c.version_id, r.c.etag)
            .where(r.c.bucket == bucket, r.c.key == key, r.c.version == version)
            .order_by(r.c.received_at.desc())
            .limit(1)
        )
        with self.engine.connect() as connection:
            return connection.execute(query).mappings().first()

    def functions(self) -> list[str]:
        query = sa.select(results_table.c.function).where(
            results_table.c.function.is_not(None), results_table.c.kind != DEAD_LETTER
        )
        with self.engine.connect() as connection:
            return sorted(set(connection.execute(query.distinct()).scalars()))

    def agreement(self) -> dict[str, Any]:
        """How often the classifiers agree on the objects more than one of them saw: each
        function's latest top-1 label per object version, compared case-insensitively."""
        r = results_table
        query = (
            sa.select(r.c.bucket, r.c.key, r.c.version, r.c.function, r.c.top_label)
            .where(r.c.kind == "classification", r.c.function.is_not(None))
            .order_by(r.c.received_at)
        )
        latest: dict[ObjectId, dict[str, str | None]] = {}
        with self.engine.connect() as connection:
            for bucket, key, version, function, top in connection.execute(query):
                latest.setdefault((bucket, key, version), {})[function] = top
        pairs: dict[tuple[str, str], list[int]] = {}
        compared = agree = 0
        for tops in latest.values():
            if len(tops) < 2:
                continue
            compared += 1
            names = {(top or "").casefold() for top in tops.values()}
            agree += len(names) == 1 and "" not in names
            ordered = sorted(tops)
            for i, first in enumerate(ordered):
                for second in ordered[i + 1 :]:
                    counts = pairs.setdefault((first, second), [0, 0])
                    counts[0] += 1
                    same = (tops[first] or "").casefold() == (tops[second] or "").casefold()
                    counts[1] += bool(same and tops[first])
        return {
            "objects": len(latest),
            "compared": compared,
            "agree": agree,
            "rate": round(agree / compared, 4) if compared else None,
            "pairs": [
                {"functions": list(names), "compared": n, "agree": k}
                for names, (n, k) in sorted(pairs.items())
            ],
        }

    def _rows_of(
        self, connection: sa.Connection, ids: Iterable[ObjectId]
    ) -> dict[ObjectId, list[RowMapping]]:
        r = results_table
        wanted = [sa.and_(r.c.bucket == b, r.c.key == k, r.c.version == v) for b, k, v in ids]
        if not wanted:
            return {}
        rows: dict[ObjectId, list[RowMapping]] = {}
        query = sa.select(r).where(sa.or_(*wanted)).order_by(r.c.received_at, r.c.id)
        for row in connection.execute(query).mappings():
            rows.setdefault((row["bucket"], row["key"], row["version"]), []).append(row)
        return rows


def _conditions(filters: Filters) -> list[sa.ColumnElement[bool]]:
    """WHERE clauses on the grouped rows: each asks whether *some* row of the object matches."""
    r = results_table
    conditions: list[sa.ColumnElement[bool]] = []
    if filters.bucket is not None:
        conditions.append(r.c.bucket == filters.bucket)
    if filters.key is not None:
        conditions.append(r.c.key == filters.key)
    if filters.version is not None:
        conditions.append(r.c.version == filters.version)

    if filters.label:
        wanted = filters.label.casefold()
        conditions.append(
            _some_other(
                lambda _: sa.and_(
                    labels_table.c.rank == 0,
                    sa.func.lower(labels_table.c.name).contains(wanted, autoescape=True),
                ),
                labels=True,
            )
        )
    if filters.function:
        conditions.append(_some_other(lambda o: o.c.function == filters.function))
    if filters.flagged is not None:
        flagged = _some_other(lambda o: o.c.flagged.is_(True))
        conditions.append(flagged if filters.flagged else ~flagged)
    if filters.dead_lettered is not None:
        dead = _some_other(lambda o: o.c.kind == DEAD_LETTER)
        conditions.append(dead if filters.dead_lettered else ~dead)
    return conditions


def _some_other(where: Any, labels: bool = False) -> sa.Exists:
    """EXISTS a row of the same object version (with its labels joined) for which `where`."""
    r = results_table
    other = results_table.alias("other")
    rows = other.join(labels_table, labels_table.c.result_id == other.c.id) if labels else other
    return sa.exists(
        sa.select(sa.literal(1))
        .select_from(rows)
        .where(
            other.c.bucket == r.c.bucket,
            other.c.key == r.c.key,
            other.c.version == r.c.version,
            where(other),
        )
        .correlate(r)
    )
