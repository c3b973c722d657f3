"""Fault scenarios on the local stack, shared by tests/reliability (small) and `make soak` (big).

Each scenario drives the real processes of `make demo` through a `testkit.live_stack.LiveStack`:

- `faults`: load, and a process killed or stopped while events flow; each returns a
  `ScenarioResult` (`tally`): per uploaded object, classified, classified more than once
  (duplicates), dead-lettered, lost. A scenario passes only with zero lost.
- `duplicates`: the same CloudEvent twice through the channel.
- `bad_input`: bad and awkward objects through the whole pipeline.
- `hostile`: bad and hostile events straight at the functions, and memory under them.
"""

from testkit.scenarios.bad_input import CLASSIFIED, BadCase, BadOutcome, bad_cases, bad_input
from testkit.scenarios.duplicates import (
    DuplicateCheck,
    SecondNotification,
    duplicate_delivery,
    event_id_routed_to,
    second_notification,
)
from testkit.scenarios.faults import (
    RetryAccount,
    function_killed,
    load,
    modelserver_down,
    retry_account,
    rgw_restart,
    source_killed,
)
from testkit.scenarios.hostile import (
    HostileAnswer,
    MemoryCheck,
    bad_event,
    hostile_events,
    memory_under_bad_events,
)
from testkit.scenarios.tally import (
    SETTLE_TIMEOUT,
    SLOW_SETTLE_TIMEOUT,
    ScenarioResult,
    markdown_table,
    tally,
    warm_up,
)

__all__ = [
    "CLASSIFIED",
    "SETTLE_TIMEOUT",
    "SLOW_SETTLE_TIMEOUT",
    "BadCase",
    "BadOutcome",
    "DuplicateCheck",
    "HostileAnswer",
    "MemoryCheck",
    "RetryAccount",
    "ScenarioResult",
    "SecondNotification",
    "bad_cases",
    "bad_event",
    "bad_input",
    "duplicate_delivery",
    "event_id_routed_to",
    "function_killed",
    "hostile_events",
    "load",
    "markdown_table",
    "memory_under_bad_events",
    "modelserver_down",
    "retry_account",
    "rgw_restart",
    "second_notification",
    "source_killed",
    "tally",
    "warm_up",
]
