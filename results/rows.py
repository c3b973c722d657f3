"""How a result becomes a row of the `results` table, and rows become a card of the API."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import RowMapping

from results.records import DEAD_LETTER, Record

ObjectId = tuple[str, str, str]  # bucket, key, version


def result_row(record: Record) -> dict[str, Any]:
    top = record.labels[0] if record.labels else {}
    return {
        "dedup": record.dedup,
        "kind": record.kind,
        "function": record.function,
        "event_id": record.event_id,
        "event_source": record.event_source,
        "event_type": record.event_type,
        "bucket": record.bucket,
        "key": record.key,
        "version": record.version,
        "version_id": record.version_id,
        "etag": record.etag,
        "model": record.model,
        "top_label": top.get("name"),
        "top_score": top.get("score"),
        "latency_ms": record.latency_ms,
        "flagged": record.flagged,
        "verdict": record.verdict,
        "score": record.score,
        "error": record.error,
        "labels": record.labels,
        "timings": record.timings,
        "extra": record.extra,
        "received_at": record.received_at,
    }


def label_row(label: dict[str, Any]) -> dict[str, Any]:
    return {"name": label["name"], "score": label.get("score")}


def card(object_id: ObjectId, rows: list[RowMapping]) -> dict[str, Any]:
    bucket, key, version = object_id
    results = [row for row in rows if row["kind"] != DEAD_LETTER]
    dead = [row for row in rows if row["kind"] == DEAD_LETTER]
    return {
        "bucket": bucket,
        "key": key,
        "version": version,
        "version_id": next((r["version_id"] for r in rows if r["version_id"]), None),
        "etag": next((r["etag"] for r in rows if r["etag"]), None),
        "first_seen": min((r["received_at"] for r in rows), default=None),
        "last_seen": max((r["received_at"] for r in rows), default=None),
        "flagged": any(r["flagged"] for r in results),
        "dead_lettered": bool(dead),
        "results": [
            {
                "kind": row["kind"],
                "function": row["function"],
                "model": row["model"],
                "labels": row["labels"],
                "latency_ms": row["latency_ms"],
                "flagged": row["flagged"],
                "verdict": row["verdict"],
                "score": row["score"],
                "timings": row["timings"],
                "event_id": row["event_id"],
                "received_at": row["received_at"],
                "extra": row["extra"],
            }
            for row in results
        ],
        "dead_letters": [
            {
                "function": row["function"],
                "error": row["error"],
                "event_id": row["event_id"],
                "event_type": row["event_type"],
                "received_at": row["received_at"],
            }
            for row in dead
        ],
    }
