"""The JSON the API answers, as pydantic models: FastAPI documents them in /openapi.json."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class LabelView(BaseModel):
    name: str
    score: float | None = Field(None, description="null when the model reports only classes")
    class_id: int | None = None


class ResultView(BaseModel):
    kind: str = Field(description="classification, compliance or evaluation")
    function: str | None = Field(description="who produced it (the event's source)")
    model: str | None
    labels: list[LabelView] = Field(description="best first")
    latency_ms: float | None = Field(description="what the function measured")
    flagged: bool | None = Field(description="a compliance verdict, when the result has one")
    verdict: str | None
    score: float | None
    timings: dict[str, float] = Field(description="milliseconds per stage, when the data says")
    event_id: str
    received_at: float = Field(description="epoch seconds, when the service got it")
    extra: dict[str, Any] = Field(description="fields of the result this service does not know")


class DeadLetterView(BaseModel):
    function: str | None = Field(description="the subscriber that failed, when known")
    error: str | None
    event_id: str
    event_type: str
    received_at: float


class Card(BaseModel):
    """One object version and everything said about it."""

    bucket: str
    key: str
    version: str = Field(description="the version id, else the ETag, else empty")
    version_id: str | None
    etag: str | None
    first_seen: float | None
    last_seen: float | None
    flagged: bool
    dead_lettered: bool
    results: list[ResultView]
    dead_letters: list[DeadLetterView]
    thumbnail: str = Field(description="path of its thumbnail on this service")


class ResultsAnswer(BaseModel):
    count: int
    objects: list[Card]


class PairAgreement(BaseModel):
    functions: list[str]
    compared: int
    agree: int


class Agreement(BaseModel):
    objects: int = Field(description="object versions with a classification")
    compared: int = Field(description="of those, classified by at least two functions")
    agree: int = Field(description="of those, with the same top-1 label from every function")
    rate: float | None = Field(description="agree / compared")
    pairs: list[PairAgreement]


class Accepted(BaseModel):
    stored: int = Field(description="new records (0 for a redelivery)")
    kind: str


class Problem(BaseModel):
    error: str
    message: str
