"""``seremo submit``: the pipeline of a config as a Ray job on a running cluster.

Goes through the job submission SDK (``JobSubmissionClient``): the checkout is
uploaded as the job's working dir, the validated config travels in the
entrypoint (``python jobs/pipeline.py --config-json ...``), the job's logs are
streamed back and its final status becomes the exit status. With Ray's token
authentication on (``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` or
``~/.ray/auth_token`` on the submitting machine) the SDK sends the token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from seremo import storage
from seremo.errors import ConfigError, SeremoError
from seremo.pipeline import PipelineConfig

log = logging.getLogger(__name__)

# Never uploaded with the working dir (on top of .gitignore, which Ray honours).
EXCLUDES = [".venv", ".git", "runs", ".exp", ".whl", "**/__pycache__", "*.egg-info", ".pytest_cache"]


def checkout_root() -> Path:
    """The source checkout seremo runs from: the folder with ``jobs/`` beside ``seremo/``."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "jobs" / "pipeline.py").is_file():
        raise SeremoError(f"{root}: has no jobs/pipeline.py; run `seremo submit` from a seremo source checkout")
    return root


def check_cluster_paths(cfg: PipelineConfig, source: str) -> None:
    """A job runs in a scratch working dir on the head: relative paths would land there and vanish."""
    for key in ("out", "data_root"):
        value = getattr(cfg, key)
        if value is not None and not storage.is_uri(value) and not Path(value).is_absolute():
            raise ConfigError(
                f"{source}: {key} {value!r} is relative; a job on a cluster needs an absolute path every node "
                f"sees or a URI (pass --{key.replace('_', '-')})"
            )


def job_spec(cfg: PipelineConfig, stages: list[str] | None, working_dir: Path) -> dict[str, Any]:
    """The keyword arguments of ``JobSubmissionClient.submit_job`` for this config."""
    argv = ["python", "jobs/pipeline.py", "--config-json", json.dumps(cfg.model_dump(mode="json"))]
    if stages:
        argv += ["--stages", ",".join(stages)]
    runtime_env: dict[str, Any] = {
        "working_dir": str(working_dir),
        "excludes": EXCLUDES + cfg.job.excludes,
        "env_vars": {"PYTHONUNBUFFERED": "1", **cfg.job.env_vars},
    }
    if cfg.job.pip:
        runtime_env["pip"] = list(cfg.job.pip)
    return {
        "entrypoint": shlex.join(argv),
        "runtime_env": runtime_env,
        "entrypoint_num_cpus": cfg.job.entrypoint_num_cpus,
        "entrypoint_num_gpus": cfg.job.entrypoint_num_gpus,
        "metadata": {"seremo_config": cfg.name},
    }


def client(address: str):
    """A JobSubmissionClient, with an unreachable or unauthorised cluster as one line."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    if not address.startswith(("http://", "https://")):
        raise ConfigError(f"--address {address!r}: seremo submit talks to the dashboard; use http://HEAD:8265")
    try:
        return JobSubmissionClient(address)
    except AuthenticationError:
        raise SeremoError(
            f"{address}: the cluster wants a token; set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN "
            "(or put it in ~/.ray/auth_token; `ray get-auth-token` on the head prints it)"
        ) from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SeremoError(f"cannot reach the Ray dashboard at {address} ({reason}); is the cluster up?") from None


def submit(cfg: PipelineConfig, source: str, address: str, stages: list[str] | None = None,
           wait: bool = True, agent_wait_s: float = 60.0) -> int:  # fmt: skip
    """Submit the pipeline as a Ray job; with ``wait``, stream its logs and return 0 only if it succeeded."""
    from ray.exceptions import AuthenticationError

    check_cluster_paths(cfg, source)
    spec = job_spec(cfg, stages, checkout_root())
    jobs = client(address)
    deadline = time.monotonic() + agent_wait_s
    while True:
        try:
            job_id = jobs.submit_job(**spec)
            break
        except AuthenticationError:
            raise SeremoError(f"{address}: the token was refused; RAY_AUTH_TOKEN must match the cluster's") from None
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()[-1]
            if "No available agent" in reason and time.monotonic() < deadline:  # a head that is still starting
                log.info("the cluster's job agent is not up yet; retrying")
                time.sleep(2)
                continue
            raise SeremoError(f"{address}: the cluster refused the job ({reason})") from None
    print(f"submitted {job_id} to {address}", flush=True)
    if not wait:
        print(f"follow it: ray job logs --address {address} --follow {job_id}")
        return 0
    try:
        asyncio.run(_follow(jobs, job_id))
    except KeyboardInterrupt:
        print(f"\nstopped following; the job goes on (ray job stop --address {address} {job_id} stops it)",
              file=sys.stderr)  # fmt: skip
        return 130
    info = jobs.get_job_info(job_id)
    status = str(info.status.value if hasattr(info.status, "value") else info.status)
    if status == "SUCCEEDED":
        print(f"job {job_id} succeeded", flush=True)
        return 0
    message = (info.message or "").strip().splitlines()  # its first line says why; the rest is a log tail
    print(f"job {job_id} {status.lower()}: {message[0] if message else 'no message'} "
          f"(ray job logs --address {address} {job_id})", file=sys.stderr)  # fmt: skip
    return 1


async def _follow(jobs, job_id: str) -> None:
    async for lines in jobs.tail_job_logs(job_id):
        print(lines, end="", flush=True)
