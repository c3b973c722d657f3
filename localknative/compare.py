"""`demo --compare`: the evaluation overlay's Trigger played locally, and the agreement table.

The local Broker is a recording collector that delivers on to the results service only
(Trigger `results`). Trigger `evaluation` of knative/overlays/evaluation is played here: each
result the Broker kept that matches the Trigger's `filter.attributes` is delivered, as a
structured CloudEvent with the attributes and data the Broker recorded, to the process playing
the Trigger's subscriber (the evaluation function), with the Trigger's retry policy. The table is
then built from the evaluation function's own `GET /report`, not recomputed here.

With `--auth` the Trigger authenticates as Knative's Broker filter does with
`authentication-oidc`: the evaluation function gets AUTH_* (`played_trigger_auth_env`: its
audience, the Trigger's OIDC identity as the allowed subject), and each delivery carries a token
from the local issuer for that audience, with the Trigger's identity as its subject.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from localknative.collector import read_entries
from localknative.routing import is_retryable
from localknative.topology import Ref, TopologyError, Trigger, triggers_to
from localknative.workloads import namespace_of

if TYPE_CHECKING:
    # Imported where used: `--compare` without `--auth` (and the CLI, which imports OVERLAY
    # from here) loads neither PyJWT nor aiohttp.
    from localknative.issuer import BlockingTokenClient

EVALUATION = "evaluation"
OVERLAY = Path(__file__).resolve().parents[1] / "knative" / "overlays" / "evaluation"


def played_trigger_auth_env(directory: Path, issuer: str) -> dict[str, dict[str, str]]:
    """AUTH_* for the evaluation function when the manifests in `directory` have Triggers to it
    (the ones `Comparer` plays), as knative/components/verify-tokens sets them: its audience in
    Knative's format and the Triggers' identities as the allowed subjects. Empty otherwise."""
    from localknative.issuer import serving_audience, trigger_identity

    triggers = triggers_to(directory, Ref("Service", EVALUATION))
    if not triggers:
        return {}
    namespace = namespace_of(directory) or "default"
    senders = sorted(trigger_identity(namespace, trigger.name) for trigger in triggers)
    return {
        EVALUATION: {
            "AUTH_AUDIENCE": serving_audience(namespace, "Service", EVALUATION),
            "AUTH_ISSUER": issuer,
            "AUTH_ALLOWED_SUBJECTS": ",".join(senders),
        }
    }


@dataclass(frozen=True)
class TriggerCredentials:
    """How a played Trigger authenticates: tokens for `audience`, as `subject`."""

    tokens: BlockingTokenClient
    subject: str
    audience: str

    def header(self) -> dict[str, str] | None:
        """None when the issuer gives no token (the attempt then fails, as with no answer)."""
        from localknative.poster import Unanswered

        try:
            token = self.tokens.token(self.subject, self.audience)
        except Unanswered:
            return None
        return {"authorization": f"Bearer {token}"}


class TriggerPlayer:
    """Delivers the Broker's recorded events that match `trigger` to `url`, each once; with
    `credentials`, each attempt carries a bearer token."""

    def __init__(
        self,
        trigger: Trigger,
        url: str,
        client: httpx.Client,
        credentials: TriggerCredentials | None = None,
    ) -> None:
        self.trigger = trigger
        self.url = url
        self.client = client
        self.credentials = credentials
        self.delivered = 0
        self.failed: list[str] = []
        self._offset = 0

    def play(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Deliver the entries recorded since the last call (the Broker's file only grows)."""
        for entry in entries[self._offset :]:
            attributes = entry.get("attributes") or {}
            if self.trigger.matches(attributes):
                self._deliver(attributes, entry.get("data"))
        self._offset = len(entries)

    def _deliver(self, attributes: Mapping[str, Any], data: Any) -> None:
        body = json.dumps({**attributes, "data": data}).encode()
        headers = {"content-type": "application/cloudevents+json"}
        status: int | None = None
        for retries_done in range(self.trigger.delivery.retry + 1):
            if retries_done:
                time.sleep(self.trigger.delivery.backoff(retries_done - 1))
            status = self._attempt(body, headers)
            if status is not None and status < 300:
                self.delivered += 1
                return
            if not is_retryable(status):
                break
        self.failed.append(f"{attributes.get('id')}: {status or 'no answer'}")

    def _attempt(self, body: bytes, headers: dict[str, str]) -> int | None:
        """The status of one POST; None for no answer, or no token to send it with."""
        if self.credentials is not None:
            token = self.credentials.header()
            if token is None:
                return None
            headers = {**headers, **token}
        try:
            return self.client.post(self.url, content=body, headers=headers).status_code
        except httpx.HTTPError:
            return None


def fetch_report(client: httpx.Client, url: str) -> dict[str, Any]:
    answer = client.get(f"{url}/report")
    answer.raise_for_status()
    report: dict[str, Any] = answer.json()
    return report


@dataclass(frozen=True)
class AgreementRow:
    key: str
    first: Mapping[str, Any]  # the report's side: function, model, label, score, top
    second: Mapping[str, Any]
    top1_agree: bool
    overlap: int


def agreement_rows(
    report: Mapping[str, Any], bucket: str, keys: Iterable[str]
) -> list[AgreementRow]:
    """One row per key, in `keys`' order, from the report's comparisons (the latest per key);
    a key with no comparison yet has no row."""
    latest: dict[str, Mapping[str, Any]] = {}
    for comparison in report.get("comparisons") or []:
        if comparison.get("bucket") == bucket:
            latest[str(comparison["key"])] = comparison
    return [
        AgreementRow(
            key=key,
            first=latest[key]["first"],
            second=latest[key]["second"],
            top1_agree=bool(latest[key]["top1_agree"]),
            overlap=int(latest[key]["top_k_overlap"]),
        )
        for key in keys
        if key in latest
    ]


@dataclass(frozen=True)
class Totals:
    pairs: int
    agree: int
    mean_overlap: float | None

    @classmethod
    def of(cls, rows: Sequence[AgreementRow]) -> Totals:
        agree = sum(1 for row in rows if row.top1_agree)
        mean = sum(row.overlap for row in rows) / len(rows) if rows else None
        return cls(len(rows), agree, mean)


def _side_title(side: Mapping[str, Any]) -> str:
    return f"{side.get('function')} ({side.get('model')})"


def _score(side: Mapping[str, Any]) -> str:
    score = side.get("score")
    return "-" if score is None else f"{float(score):.4f}"


def agreement_table(rows: Sequence[AgreementRow], top_k: int = 5) -> str:
    """The Markdown table `demo --compare` prints, then its totals, computed from its rows."""
    if not rows:
        return "(no object was classified by both classifiers)"
    first, second = _side_title(rows[0].first), _side_title(rows[0].second)
    lines = [
        f"| object | {first} | score | {second} | score | top-1 | top-{top_k} overlap |",
        "|---|---|---:|---|---:|---|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.key} | {row.first.get('label') or '-'} | {_score(row.first)} "
            f"| {row.second.get('label') or '-'} | {_score(row.second)} "
            f"| {'agree' if row.top1_agree else 'differ'} | {row.overlap} |"
        )
    totals = Totals.of(rows)
    share = 100 * totals.agree / totals.pairs
    mean = f"{totals.mean_overlap:.2f}" if totals.mean_overlap is not None else "-"
    lines += [
        "",
        f"top-1 agreement: {totals.agree}/{totals.pairs} ({share:.0f}%); "
        f"mean top-{top_k} overlap: {mean} of {top_k}",
    ]
    return "\n".join(lines)


class Comparer:
    """`demo --compare`'s side of a run: plays the Trigger(s) to the evaluation function from the
    Broker's recording and reads the function's report. With `issuer` (the local OIDC issuer)
    and `audience` (the evaluation function's AUTH_AUDIENCE), each Trigger sends tokens."""

    def __init__(
        self,
        knative_dir: Path,
        function_url: str,
        broker_log: Path,
        issuer: str = "",
        audience: str | None = None,
    ) -> None:
        triggers = triggers_to(knative_dir, Ref("Service", EVALUATION))
        if not triggers:
            raise TopologyError(
                f"{knative_dir}: no Trigger delivers to Service/{EVALUATION}: not the "
                "evaluation overlay"
            )
        self.url = function_url
        self.broker_log = broker_log
        self.knative_dir = knative_dir
        self._tokens: BlockingTokenClient | None = None
        self.client = httpx.Client(timeout=30.0)
        self.players = [
            TriggerPlayer(t, function_url, self.client, self._credentials(t, issuer, audience))
            for t in triggers
        ]

    def _credentials(
        self, trigger: Trigger, issuer: str, audience: str | None
    ) -> TriggerCredentials | None:
        if not issuer or audience is None:
            return None
        from localknative.issuer import BlockingTokenClient, trigger_identity

        if self._tokens is None:
            self._tokens = BlockingTokenClient(issuer, self.client)
        namespace = namespace_of(self.knative_dir) or "default"
        return TriggerCredentials(self._tokens, trigger_identity(namespace, trigger.name), audience)

    def poll(self) -> None:
        entries = read_entries(self.broker_log)
        for player in self.players:
            player.play(entries)

    def failures(self) -> list[str]:
        return [failure for player in self.players for failure in player.failed]

    def report(self) -> dict[str, Any]:
        return fetch_report(self.client, self.url)

    def close(self) -> None:
        self.client.close()
