"""`make soak`: the reliability scenarios at size, on one local stack, as a Markdown table.

    python -m benchmarks.bench_soak --objects 1000 --minutes 10

Builds the stack `make demo` starts (real RGW, model server, functions, source, dispatcher),
then runs, in turn: load (`--objects` uploads by 8 writers), resnet SIGKILLed mid-stream, the
model server down 10 s, radosgw restarted, the source SIGKILLed (HTTP way, and AMQP when
RabbitMQ is installed). The fault scenarios get `--objects // 4` uploads each. With
`--minutes`, the load scenario repeats until that much time has passed. Every row counts per
uploaded object: classified, duplicates, dead-lettered (after the scenario's replay), lost; a
row passes only with zero lost, and the exit status is 1 if any row lost an object.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from testkit.live_stack import LiveStack
from testkit.scenarios import (
    ScenarioResult,
    function_killed,
    load,
    markdown_table,
    modelserver_down,
    rgw_restart,
    source_killed,
    warm_up,
)
from testkit.stack import REPO_ROOT, Stack

MODEL_CACHE_DIR = REPO_ROOT / ".cache" / "models"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_soak", description=__doc__)
    parser.add_argument("--objects", type=int, default=1000, help="uploads in the load scenario")
    parser.add_argument(
        "--minutes", type=float, default=0.0, help="repeat the load scenario for this long"
    )
    parser.add_argument("--writers", type=int, default=8, help="concurrent S3 clients")
    args = parser.parse_args(argv)
    faults = max(10, args.objects // 4)
    results: list[ScenarioResult] = []
    with Stack() as stack:
        live = LiveStack.build(stack, model_cache_dir=MODEL_CACHE_DIR)
        try:
            print(f"warm-up: {warm_up(live):.1f} s (RGW adopts the topic's queue)", file=sys.stderr)
            until = time.monotonic() + args.minutes * 60
            rounds = 0
            while True:
                results.append(load(live, args.objects, args.writers))
                rounds += 1
                results[-1].name = f"load #{rounds}"
                if time.monotonic() >= until:
                    break
            results.append(function_killed(live, faults))
            results.append(modelserver_down(live, faults, down=10.0)[0])
            results.append(rgw_restart(live, faults))
            results.append(source_killed(live, faults, way="http"))
            if shutil.which("rabbitmq-server"):
                live.add_amqp_way()
                results.append(source_killed(live, faults, way="amqp"))
            live.rss.sample()
            peak = dict(live.rss.peak)
            dead = live.dead_processes()
        finally:
            live.close()
    print(markdown_table(results))
    print()
    print("| process | peak RSS |")
    print("|---|---:|")
    for name, kib in sorted(peak.items()):
        print(f"| {name} | {kib / 1024:.0f} MiB |")
    if dead:
        print(f"\nprocesses that died: {', '.join(dead)}")
    lost = sum(r.lost for r in results)
    print(f"\n{'PASS' if lost == 0 and not dead else 'FAIL'}: {lost} objects lost")
    return 0 if lost == 0 and not dead else 1


if __name__ == "__main__":
    sys.exit(main())
