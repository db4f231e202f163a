"""Connecting to Ray: a cluster when an address is given, else an embedded local instance."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from seremo.errors import SeremoError

log = logging.getLogger(__name__)


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start or join Ray once per process.

    ``address`` (or ``RAY_ADDRESS``) joins a running cluster; without either a
    local instance is started with ``num_cpus`` (default: all cores). Inside a
    Ray job (``ray job submit``) Ray is already connected and this is a no-op.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=True)
        except (ConnectionError, TimeoutError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SeremoError(
                f"cannot reach the Ray cluster at {address} ({reason}); is it running? "
                "(`ray status --address ...` tells; leave --address and RAY_ADDRESS unset for a local Ray)"
            ) from None
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    # Ray Data prints its own progress bars; keep its per-operator INFO logs out of the way.
    for name in ("ray.data", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, as one line, where ``ray.init`` would retry a dead address for minutes."""
    import socket
    from urllib.parse import urlsplit

    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.hostname is None or parts.port is None:
        raise SeremoError(f"{address}: not a Ray address; use HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:10001 or auto")
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=timeout_s).close()
    except OSError as exc:
        raise SeremoError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); is it running? "
            "(`ray status` on the head tells; leave --address and RAY_ADDRESS unset for a local Ray)"
        ) from None


@contextlib.contextmanager
def single_stage_data_context() -> Iterator[None]:
    """Ray Data settings for a pipeline that is one fused map+write operator.

    Ray Data reserves part of the cluster for each operator so that multi-stage
    pipelines cannot starve one another. With a single fused operator there is
    nothing to protect, and on a small cluster the reservation only idles CPUs
    (measured on 2 cores: tasks ran one at a time). Restored on exit.
    """
    from ray.data import DataContext

    ctx = DataContext.get_current()
    before = ctx.op_resource_reservation_enabled
    ctx.op_resource_reservation_enabled = False
    try:
        yield
    finally:
        ctx.op_resource_reservation_enabled = before
