"""Connecting to Ray: a cluster when an address is given, else an embedded local instance."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import sys
import threading
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
        from ray.exceptions import AuthenticationError

        watching = _exit_when_refused(address)
        try:
            ray.init(address=address, log_to_driver=True)
        except AuthenticationError as exc:
            raise SeremoError(_token_refused(address, str(exc).strip().splitlines()[0])) from None
        except (ConnectionError, TimeoutError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if _AUTH_REFUSED.is_set() or "token" in reason.lower():
                raise SeremoError(_token_refused(address, reason)) from None
            # The port answered (check_reachable), so the cluster runs: it did not let this client in.
            raise SeremoError(
                f"{address}: the Ray cluster answers but refused this client ({reason}); most often a "
                "missing or wrong token (RAY_AUTH_MODE=token and RAY_AUTH_TOKEN set to the cluster's; "
                f"`ray get-auth-token` on the head prints it), else another Ray version (this is ray {ray.__version__})"
            ) from None
        finally:
            watching.set()
    else:
        # A local instance turns token auth on by itself and says so on every run: nothing to act on.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    # seremo draws its own progress line; keep Ray's per-operator INFO logs out of the way.
    for name in ("ray.data", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "bars disabled": by us


ERROR_PREFIX = "seremo: error: "  # the CLI sets its verb's ("seremo extract: error: ")


def _exit_when_refused(address: str) -> threading.Event:
    """Inside ``ray.init`` Ray's client retries a refused token for about 20 s before it gives up; the stderr
    filter sees the refusal at once. Where it runs (a console run), say so in one line and end the process
    (exit 2) then: nothing has been written yet. Set the returned event once ``ray.init`` is done."""
    done = threading.Event()
    if _REAL_STDERR is None:
        return done

    def watch() -> None:
        while not done.is_set():
            if _AUTH_REFUSED.wait(0.1) and not done.is_set():
                line = ERROR_PREFIX + _token_refused(address, "the cluster answered Unauthenticated") + "\n"
                os.write(_REAL_STDERR, line.encode())
                os._exit(2)

    threading.Thread(target=watch, name="seremo-auth-watch", daemon=True).start()
    return done


def check_shared_output(out: str, shared: bool, how: str) -> None:
    """On a multi-node cluster, a stage whose workers write must write where every node can read.

    A local ``out`` would land on each worker's own disk; it is refused in one line
    unless declared shared (``how`` names the flag or key that declares it).
    """
    import ray

    from seremo.storage import is_uri

    if is_uri(out) or shared:
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) > 1:
        raise SeremoError(
            f"{out}: is a local path but the cluster has {len(nodes)} nodes, so each would write to its own "
            f"disk; use a URI (s3://..., gs://...), or a path every node mounts and {how}"
        )


def _token_refused(address: str, reason: str) -> str:
    return (f"{address}: the Ray cluster refused this client's token ({reason}); set RAY_AUTH_MODE=token and "
            "RAY_AUTH_TOKEN to the cluster's token (`ray get-auth-token` on the head prints it)")  # fmt: skip


# --------------------------------------------------------------------------- native noise

# Lines Ray's C++ core writes straight to this process's stderr that a user cannot act on.
NATIVE_NOISE = (
    re.compile(rb"has constructor arguments in the object store and max_restarts > 0"),
    re.compile(rb"Failed to get cluster ID from GCS server: Unauthenticated"),
)
_AUTH_REFUSED = threading.Event()  # the GCS refused our token (seen on stderr by the filter)
_STDERR_WAS_TERMINAL = False  # what fd 2 was before the filter made it a pipe
_REAL_STDERR: int | None = None  # the terminal's (or caller's) stderr behind the filter, once it is installed


def stderr_is_terminal() -> bool:
    """Whether the user sees stderr on a terminal (also behind :func:`filter_native_stderr`)."""
    return _STDERR_WAS_TERMINAL or sys.stderr.isatty()


def filter_native_stderr() -> None:
    """Route fd 2 through a filter that drops :data:`NATIVE_NOISE` lines (console runs only).

    Ray's core logs from C++ to the process's stderr, past Python's logging;
    the only way to keep its noise off a user's terminal is below Python. Text
    that is not a whole line yet (a progress bar's carriage returns) passes at once.
    """
    if getattr(filter_native_stderr, "installed", False):
        return
    filter_native_stderr.installed = True  # type: ignore[attr-defined]
    global _STDERR_WAS_TERMINAL, _REAL_STDERR
    _STDERR_WAS_TERMINAL = os.isatty(2)
    read_end, write_end = os.pipe()
    real = _REAL_STDERR = os.dup(2)
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)

    def keep(line: bytes) -> bool:
        if b"InvalidAuthToken" in line or b"Unauthenticated" in line:
            _AUTH_REFUSED.set()
        return not any(p.search(line) for p in NATIVE_NOISE)

    def pump() -> None:
        pending = b""
        while chunk := os.read(read_end, 65536):
            *lines, pending = (pending + chunk).split(b"\n")
            out = b"".join(line + b"\n" for line in lines if keep(line))
            if pending and not pending.startswith(b"["):  # C++ log lines start with "[": wait for the rest
                out, pending = out + pending, b""
            if out:
                os.write(real, out)
        if pending and keep(pending):
            os.write(real, pending)

    thread = threading.Thread(target=pump, name="seremo-stderr", daemon=True)
    thread.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(real, 2)  # drops this process's last write end: the pump drains and ends
        thread.join(timeout=2)

    atexit.register(restore)


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


def items_per_task(n_items: int, most: int, tasks_per_cpu: int = 8) -> int:
    """Items per Ray task when the user sets none: about ``tasks_per_cpu`` tasks per CPU of the
    cluster, at most ``most`` items each.

    A job ends with its slowest last task, so small jobs get small tasks (the CPUs finish
    together); large ones get ``most`` a task, so that each writes few, larger parts.
    """
    import ray

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return max(1, min(most, -(-n_items // (tasks_per_cpu * cpus))))


def dataset_of(blocks: list) -> object:
    """A Ray Dataset of these in-memory Arrow blocks, one task input each, as they are.

    ``ray.data.from_arrow`` runs one Ray task per block to read its metadata before
    any work starts (1.2 s for 84 blocks on 2 cores, and it makes the workers import
    Ray Data then); ``from_blocks`` reads it here from the tables themselves.
    """
    import ray

    return ray.data.from_blocks(blocks)


@contextlib.contextmanager
def data_context(*, single_stage: bool = False) -> Iterator[None]:
    """Ray Data settings for seremo's jobs, restored on exit (a Dataset snapshots them when made).

    Ray Data's own progress bars are off: they count blocks per operator on several
    redrawn lines, where seremo draws one line of inputs committed (``seremo.progress``).
    ``single_stage``: for a pipeline that is one fused map+write operator, the
    per-operator resource reservation is off too; it keeps multi-stage pipelines from
    starving one another, and with one operator only idles CPUs (measured on 2 cores:
    tasks ran one at a time).
    """
    from ray.data import DataContext

    ctx = DataContext.get_current()
    before = (ctx.op_resource_reservation_enabled, ctx.enable_progress_bars)
    ctx.enable_progress_bars = False
    if single_stage:
        ctx.op_resource_reservation_enabled = False
    try:
        yield
    finally:
        ctx.op_resource_reservation_enabled, ctx.enable_progress_bars = before
