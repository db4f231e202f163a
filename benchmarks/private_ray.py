"""A local Ray head of the benchmarks' own, for timing commands "on a running Ray".

``ray stop`` would end every Ray process on the machine, a user's included; this head runs
``ray start --block`` in a session of its own (its own temp dir and ports, as ``cluster/local.sh``
does), and leaving the context ends exactly that session.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cold_env() -> dict[str, str]:
    """This process's environment without ``RAY_ADDRESS`` (or a token): a command run with it starts its own Ray."""
    return {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}


@contextlib.contextmanager
def running_ray(cpus: int) -> Iterator[dict[str, str]]:
    """A head node with ``cpus`` CPUs for the duration of the block; yields what a command needs in its
    environment to join it (``RAY_ADDRESS`` and the head's own token, as ``cluster/local.sh`` does)."""
    joins = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    port = _free_port()
    ports = [_free_port() for _ in range(6)]
    with tempfile.TemporaryDirectory(prefix="seremo-bench-ray-") as tmp:
        log = open(Path(tmp) / "head.log", "wb")
        head = subprocess.Popen(
            [RAY, "start", "--head", "--block", "--port", str(port), f"--num-cpus={cpus}", "--num-gpus=0",
             "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", f"{tmp}/ray",
             "--dashboard-agent-listen-port", str(ports[0]), "--dashboard-agent-grpc-port", str(ports[1]),
             "--runtime-env-agent-port", str(ports[2]), "--metrics-export-port", str(ports[3]),
             "--node-manager-port", str(ports[4]), "--object-manager-port", str(ports[5])],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**cold_env(), **joins},
        )  # fmt: skip
        try:
            for _ in range(240):  # `ray start` says so once the node is up
                if b"Ray runtime started" in (Path(tmp) / "head.log").read_bytes():
                    break
                if head.poll() is not None:
                    raise RuntimeError(f"ray start failed: {(Path(tmp) / 'head.log').read_text()[-2000:]}")
                time.sleep(0.5)
            else:
                raise RuntimeError("ray start did not come up within 2 minutes")
            yield {**joins, "RAY_ADDRESS": f"127.0.0.1:{port}"}
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(head.pid, signal.SIGTERM)  # the head's whole session, nothing else
            try:
                head.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait()
            log.close()
