"""The evaluation function's own settings (the runtime's PORT, HOST, LOG_LEVEL, MAX_EVENT_BYTES
and DEDUP_WINDOW apply too)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.env import Env, env_var

GROUP = "Evaluation (functions/evaluation: the two classifiers side by side)"
EVALUATION_MAX_PENDING = env_var(
    "EVALUATION_MAX_PENDING",
    "Most object versions whose first result waits for the other classifier's; one more drops "
    'the oldest (counted in evaluation_unpaired_total{reason="capacity"}).',
    GROUP,
    "10000",
)
EVALUATION_MAX_WAIT = env_var(
    "EVALUATION_MAX_WAIT",
    "Seconds a result waits for its pair before it is dropped "
    '(evaluation_unpaired_total{reason="expired"}).',
    GROUP,
    "600",
)
EVALUATION_KEEP = env_var(
    "EVALUATION_KEEP",
    "How many recent comparisons GET /report lists (the counters count them all).",
    GROUP,
    "1000",
)


@dataclass(frozen=True)
class EvaluationSettings:
    max_pending: int = 10000
    max_wait: float = 600.0
    keep: int = 1000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EvaluationSettings:
        env = Env(environ)
        return cls(
            max_pending=env.integer(EVALUATION_MAX_PENDING, 1, 10_000_000),
            max_wait=env.number(EVALUATION_MAX_WAIT, 0.001),
            keep=env.integer(EVALUATION_KEEP, 0, 1_000_000),
        )
