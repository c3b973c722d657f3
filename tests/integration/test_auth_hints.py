"""`up --auth`'s printed curl commands, run exactly as printed (bash, real curl) against the
parts they name: the local issuer (`python -m localknative.issuer`) and the receiver with the
AUTH_* `up --auth` gives it (localknative.launch.sender_auth_env on knative/base). The printed
command is answered 200; the same command without its token, 401."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

from localknative.hints import print_usage_hints
from localknative.launch import Endpoints, sender_auth_env
from localknative.topology import load_topology
from localknative.workloads import load_functions, namespace_of
from testkit.rgw import RgwGateway
from tests.fixtures.processes import REPO_ROOT, free_port, python_argv, running
from tests.unit.test_hints import block_of

BASE = REPO_ROOT / "knative" / "base"


def run_bash(lines: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", "\n".join(lines)], capture_output=True, text=True, timeout=30, check=False
    )


def test_the_printed_commands_mint_a_token_the_receiver_accepts(log_dir: Path) -> None:
    issuer_port, receiver_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{issuer_port}"
    receiver = f"http://127.0.0.1:{receiver_port}"
    namespace = namespace_of(BASE) or "default"
    auth_env = sender_auth_env(load_topology(BASE), load_functions(BASE), namespace, issuer)
    env = auth_env["receiver"]
    endpoints = Endpoints(
        rgw=RgwGateway("http://127.0.0.1:1", "access", "secret"),
        grpc="127.0.0.1:1",
        rest="http://127.0.0.1:1",
        functions={"receiver": receiver},
        issuer=issuer,
        audiences={"receiver": env["AUTH_AUDIENCE"]},
        # As start_stack keeps it: the first of the function's allowed senders.
        senders={"receiver": env["AUTH_ALLOWED_SUBJECTS"].split(",")[0]},
    )
    out = io.StringIO()
    print_usage_hints(out, endpoints)
    commands = block_of(out.getvalue(), receiver)
    assert commands[0].startswith("TOKEN=")
    with (
        running(
            "hints-issuer",
            python_argv("-m", "localknative.issuer", "--port", str(issuer_port)),
            log_dir,
            ready_url=f"{issuer}/healthz",
        ),
        running(
            "hints-receiver",
            python_argv("-m", "functions.receiver"),
            log_dir,
            {"PORT": str(receiver_port), **env},
            ready_url=f"{receiver}/health/readiness",
        ) as proc,
    ):
        done = run_bash(commands)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0].strip() == "HTTP/1.1 200 OK", done.stdout
        # The token was what let it in: without it, the same curl is refused.
        bare = [line.replace(' -H "Authorization: Bearer $TOKEN"', "") for line in commands[2:]]
        assert bare != commands[2:]
        refused = run_bash(bare)
        assert refused.stdout.splitlines()[0].strip() == "HTTP/1.1 401 Unauthorized"
        assert "manual-receiver-1" in proc.log_text()
