"""TF Serving's request batching (`--enable_batching`, `--batching_parameters_file`).

Concurrent Predicts for one onnxruntime session are queued and run together, as TF Serving's
BasicBatchScheduler does:

- A task (one request's pixels) joins the newest open batch if it still fits `max_batch_size`,
  else it opens a new batch. At most `max_enqueued_batches` batches may wait (accepted, not yet
  running); a task that would need one more is refused with `BatchQueueFull` (TF Serving's
  UNAVAILABLE "The batch scheduling queue to which this task was submitted is full"; HTTP 503).
- `num_batch_threads` threads each take the oldest batch once it is full, once
  `batch_timeout_micros` passed since it opened, or at once when the timeout is 0 (the default
  here): an idle server then runs a lone request without waiting, and requests that arrive while
  every thread is busy pile up into the next batch.
- `allowed_batch_sizes` (strictly increasing, the last equal to `max_batch_size`) pads a batch
  with copies of its first row up to the next allowed size; padded rows are discarded.
- A request larger than `max_batch_size` is split into tasks that fit (TF Serving's
  `enable_large_batch_splitting`), so multi-image requests keep working whatever the file says.

The file is BatchingParameters in protobuf text format, e.g. `max_batch_size { value: 8 }`.
`tensorflow-protobuf` does not ship session_bundle_config.proto, so the message is declared here
with the same field names and numbers and parsed by `google.protobuf.text_format`, whose errors
name the line and the field.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message,
    message_factory,
    text_format,
    wrappers_pb2,
)

from common.env import ConfigError

log = logging.getLogger("modelserver.batching")

QUEUE_FULL_MESSAGE = "The batch scheduling queue to which this task was submitted is full"

# BatchingParameters' wrapped int64 fields, by field number (session_bundle_config.proto).
_INT64_FIELDS = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches")
_THREADS_FIELD = "num_batch_threads"


class BatchQueueFull(RuntimeError):
    """The batching queue holds `max_enqueued_batches` batches already (UNAVAILABLE / 503)."""


@dataclass(frozen=True)
class BatchingParameters:
    """The scheduler's knobs; the defaults apply to fields the file leaves out.

    max_batch_size 64 is the largest request the server accepts anyway; batch_timeout_micros 0
    batches only what queued while the session was busy (no added latency when idle); 10
    enqueued batches is TF Serving's default; one batch thread per `intra_op_threads` cores.
    """

    max_batch_size: int = 64
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 0  # 0: CPUs // intra_op_threads, at least 1 (see `threads`)
    allowed_batch_sizes: tuple[int, ...] = ()

    def threads(self, intra_op_threads: int) -> int:
        if self.num_batch_threads:
            return self.num_batch_threads
        return max(1, (os.cpu_count() or 1) // max(1, intra_op_threads))

    def padded_size(self, size: int) -> int:
        return next((s for s in self.allowed_batch_sizes if s >= size), size)


def _message_class() -> type[message.Message]:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="modelserver/batching_parameters.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    fields = descriptor_pb2.FieldDescriptorProto
    declared = proto.message_type.add(name="BatchingParameters")
    wrapped = [*(_INT64_FIELDS), _THREADS_FIELD, "thread_pool_name"]
    for number, name in enumerate(wrapped, start=1):
        kind = "StringValue" if name == "thread_pool_name" else "Int64Value"
        declared.field.add(
            name=name,
            number=number,
            type=fields.TYPE_MESSAGE,
            label=fields.LABEL_OPTIONAL,
            type_name=f".google.protobuf.{kind}",
        )
    declared.field.add(
        name="allowed_batch_sizes", number=6, type=fields.TYPE_INT64, label=fields.LABEL_REPEATED
    )
    # Accepted for TF Serving files; inputs here have fixed shapes, so there is nothing to pad.
    declared.field.add(
        name="pad_variable_length_inputs",
        number=7,
        type=fields.TYPE_BOOL,
        label=fields.LABEL_OPTIONAL,
    )
    pool.Add(proto)
    found = pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    return message_factory.GetMessageClass(found)


def parse_batching_parameters(text: str, where: str = "batching parameters") -> BatchingParameters:
    """BatchingParameters text format -> checked parameters; ConfigError says what is wrong."""
    parsed: Any = _message_class()()
    try:
        text_format.Parse(text, parsed)
    except text_format.ParseError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    values: dict[str, Any] = {
        name: int(getattr(parsed, name).value)
        for name in (*_INT64_FIELDS, _THREADS_FIELD)
        if parsed.HasField(name)
    }
    values["allowed_batch_sizes"] = tuple(int(s) for s in parsed.allowed_batch_sizes)
    params = BatchingParameters(**values)
    _check(params, where)
    return params


def read_batching_parameters(path: Path) -> BatchingParameters:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"--batching_parameters_file {path}: {exc.strerror}") from None
    return parse_batching_parameters(text, f"--batching_parameters_file {path}")


def _check(params: BatchingParameters, where: str) -> None:
    minimums = {
        "max_batch_size": 1,
        "batch_timeout_micros": 0,
        "max_enqueued_batches": 1,
        _THREADS_FIELD: 1,
    }
    for name, minimum in minimums.items():
        value = getattr(params, name)
        if value < minimum and not (name == _THREADS_FIELD and value == 0):
            raise ConfigError(f"{where}: {name} must be >= {minimum}, got {value}")
    sizes = params.allowed_batch_sizes
    if sizes:
        if any(s < 1 for s in sizes) or any(b <= a for a, b in itertools.pairwise(sizes)):
            raise ConfigError(
                f"{where}: allowed_batch_sizes must be positive and strictly increasing, "
                f"got {list(sizes)}"
            )
        if sizes[-1] != params.max_batch_size:
            raise ConfigError(
                f"{where}: the last entry of allowed_batch_sizes ({sizes[-1]}) must equal "
                f"max_batch_size ({params.max_batch_size})"
            )


# --- the scheduler ------------------------------------------------------------------------------

Outputs = Sequence[npt.NDArray[Any]]
RunBatch = Callable[[npt.NDArray[Any]], Outputs]


@dataclass
class _Task:
    inputs: npt.NDArray[Any]
    done: threading.Event = field(default_factory=threading.Event)
    outputs: Outputs = ()
    error: BaseException | None = None


@dataclass
class _Batch:
    opened: float
    tasks: list[_Task] = field(default_factory=list)
    size: int = 0


class Batcher:
    """Runs `run_batch` (inputs stacked on axis 0 -> outputs with the same leading axis) on
    batches of concurrent `run` calls; `run` blocks until its own rows come back."""

    def __init__(self, name: str, run_batch: RunBatch, params: BatchingParameters, threads: int):
        self.name = name
        self.params = params
        self._run_batch = run_batch
        self._ready = threading.Condition()
        self._queue: deque[_Batch] = deque()
        self._closed = False
        self._workers = [
            threading.Thread(target=self._work, name=f"batch-{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for worker in self._workers:
            worker.start()

    def run(self, inputs: npt.NDArray[Any]) -> list[npt.NDArray[Any]]:
        limit = self.params.max_batch_size
        tasks = [_Task(inputs[start : start + limit]) for start in range(0, len(inputs), limit)]
        with self._ready:
            if self._closed:
                raise BatchQueueFull(f"{QUEUE_FULL_MESSAGE} (the server is stopping)")
            self._enqueue(tasks)
            self._ready.notify_all()
        for task in tasks:
            task.done.wait()
            if task.error is not None:
                raise task.error
        if len(tasks) == 1:
            return list(tasks[0].outputs)
        return [np.concatenate(parts) for parts in zip(*(t.outputs for t in tasks), strict=True)]

    def _enqueue(self, tasks: list[_Task]) -> None:
        """Place every task or none (the whole request is refused when the queue is full)."""
        limit = self.params.max_batch_size
        room = limit - self._queue[-1].size if self._queue else 0
        opened = 0
        for task in tasks:
            if len(task.inputs) <= room:
                room -= len(task.inputs)
            else:
                opened += 1
                room = limit - len(task.inputs)
        if len(self._queue) + opened > self.params.max_enqueued_batches:
            raise BatchQueueFull(
                f"{QUEUE_FULL_MESSAGE} ({self.params.max_enqueued_batches} batches of up to "
                f"{limit} waiting for model {self.name})"
            )
        now = time.monotonic()
        for task in tasks:
            if not self._queue or self._queue[-1].size + len(task.inputs) > limit:
                self._queue.append(_Batch(now))
            batch = self._queue[-1]
            batch.tasks.append(task)
            batch.size += len(task.inputs)

    def _next_batch(self) -> _Batch | None:
        timeout = self.params.batch_timeout_micros / 1e6
        with self._ready:
            while True:
                if self._queue:
                    first = self._queue[0]
                    wait = first.opened + timeout - time.monotonic()
                    closed_to_new = len(self._queue) > 1 or first.size >= self.params.max_batch_size
                    if wait <= 0 or closed_to_new or self._closed:
                        return self._queue.popleft()
                    self._ready.wait(wait)
                elif self._closed:
                    return None
                else:
                    self._ready.wait()

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._execute(batch)

    def _execute(self, batch: _Batch) -> None:
        tasks = batch.tasks
        inputs = tasks[0].inputs if len(tasks) == 1 else np.concatenate([t.inputs for t in tasks])
        padded = self.params.padded_size(len(inputs))
        if padded > len(inputs):
            filler = np.repeat(inputs[:1], padded - len(inputs), axis=0)
            inputs = np.concatenate([inputs, filler])
        try:
            outputs = self._run_batch(inputs)
        except BaseException as exc:  # handed to every waiting request, which re-raises it
            for task in tasks:
                task.error = exc
                task.done.set()
            return
        offset = 0
        for task in tasks:
            rows = len(task.inputs)
            task.outputs = [output[offset : offset + rows] for output in outputs]
            offset += rows
            task.done.set()

    def close(self) -> None:
        """Run what is queued, then stop the threads."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for worker in self._workers:
            worker.join(timeout=10)
