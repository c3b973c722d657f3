"""Sender authentication: what verifying a token costs per event, with the JWKS cached.

    .venv/bin/python -m benchmarks.bench_auth

Two figures, side by side in one run:

- the verification alone, in-process: `SenderAuth.check` on a valid token (RS256, ES256), the
  key already cached, median of many calls: a new token each time (the full check) and the
  same token again (answered from the accepted-token cache);
- the receiver as a process, events/s on one core (wrk, as `bench_receiver`; best of 3
  interleaved rounds), with AUTH_* unset and with it set (the local issuer's JWKS, one valid
  token reused: Knative's dispatcher also reuses a token until five minutes before it expires).

Needs `wrk` (Debian package).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.bench_receiver import requests_per_second, wrk_script
from benchmarks.support import free_port, machine, python, served, table
from common.auth import AuthSettings, SenderAuth
from localknative.issuer import TOKEN_PATH, Issuer

AUDIENCE = "serving.knative.dev/service/rgw-inference/receiver"
SUBJECT = "system:serviceaccount:rgw-inference:receiver-oidc-messaging.knative.dev-subscription"
CALLS = 2000
ROUNDS = 3
ALGORITHMS = ("RS256", "ES256")


def check_microseconds(algorithm: str, repeated: bool) -> float:
    """Median µs of one `check` of a valid token, keys cached (no HTTP: the cache is filled
    from the issuer object directly): a new token each call (the full verification), or the
    same token again (what Knative's senders do; answered from the accepted-token cache)."""
    issuer = Issuer("https://issuer.bench", algorithm)
    settings = AuthSettings(audience=AUDIENCE, issuer=issuer.url, jwks_url=issuer.url + "/jwks")
    from common.jwks import KeyCache, KeySource

    keys = KeyCache(
        KeySource(issuer.url, settings.jwks_url),
        settings.algorithms,
        600,
        30,
        fetch=lambda _: issuer.jwks(),
    )
    auth = SenderAuth(settings, keys)
    auth.start()
    count = 1 if repeated else CALLS
    headers = [f"Bearer {issuer.mint(SUBJECT, AUDIENCE)}" for _ in range(count)]

    async def run() -> list[float]:
        samples = []
        for index in range(CALLS):
            header = headers[index % count]
            started = time.perf_counter()
            refusal = await auth.check(header)
            samples.append(time.perf_counter() - started)
            assert refusal is None, refusal
        return samples

    return statistics.median(asyncio.run(run())) * 1e6


def receiver_rps(script: Path, extra_env: dict[str, str]) -> float:
    port = free_port()
    env = {"PORT": str(port), "LOG_LEVEL": "INFO", **extra_env}
    return requests_per_second([python(), "-m", "functions.receiver"], port, env, script)


def main() -> int:
    if not shutil.which("wrk"):
        sys.stderr.write("wrk not found: apt-get install wrk\n")
        return 1
    full = {alg: check_microseconds(alg, repeated=False) for alg in ALGORITHMS}
    again = {alg: check_microseconds(alg, repeated=True) for alg in ALGORITHMS}
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as issuers:
        plain = wrk_script(Path(tmp))
        scripts: dict[str, tuple[Path, dict[str, str]]] = {"unset": (plain, {})}
        for algorithm in ALGORITHMS:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            argv = [python(), "-m", "localknative.issuer", "--port", str(port)]
            argv += ["--algorithm", algorithm]
            issuers.enter_context(served(f"issuer-{algorithm}", argv, {}, url + "/healthz"))
            answer = httpx.post(url + TOKEN_PATH, json={"sub": SUBJECT, "aud": AUDIENCE})
            lines = plain.read_text().splitlines()
            token = answer.json()["token"]
            lines.insert(2, f'wrk.headers["Authorization"] = "Bearer {token}"')
            script = Path(tmp) / f"{algorithm}.lua"
            script.write_text("\n".join(lines) + "\n")
            scripts[algorithm] = (script, {"AUTH_AUDIENCE": AUDIENCE, "AUTH_ISSUER": url})
        # Interleaved rounds, best of each: on a shared machine a neighbour's burst then
        # lowers one round, not one column.
        for _ in range(ROUNDS):
            for name, (script, env) in scripts.items():
                best[name] = max(best.get(name, 0.0), receiver_rps(script, env))
    off = best["unset"]
    rows = [["receiver, AUTH_AUDIENCE unset", f"{off:.0f}", "", "", "", ""]]
    for algorithm in ALGORITHMS:
        on = best[algorithm]
        rows.append(
            [
                f"receiver, token verified ({algorithm})",
                f"{on:.0f}",
                f"{on / off:.2f}",
                f"{(1 / on - 1 / off) * 1e6:+.0f} µs",
                f"{full[algorithm]:.0f} µs",
                f"{again[algorithm]:.1f} µs",
            ]
        )
    print(f"Sender authentication benchmark ({machine()})\n")
    print(
        table(
            [
                "receiver (one core, wrk -c16)",
                "events/s",
                "vs unset",
                "cost per event (from events/s)",
                "check, new token (median)",
                "check, same token again (median)",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
