"""Every throughput figure of issue 16 in one command, one run, one machine.

(a) the feature code in a plain loop, per core, and (d) openSMILE eGeMAPS in a loop
    (``extract_throughput.py``, its per-core table);
(b) ``seremo extract`` of the default set against a plain single-process loop over
    the same files (``extract_throughput.py``, its pipeline table; ``--repeat`` copies
    of EmoDB, 5 = 2.06 h of audio);
(c) ``seremo score`` with a 16 kHz and an 8 kHz bundle, prediction fused into the
    CPU tasks and on an actor pool, end to end and inside the job
    (``score_throughput.py``; ``--calls`` stereo 8 kHz calls, 48 = about 2 h).

    python benchmarks/throughput.py [--repeat 5] [--calls 48]

The two scripts run one after the other in their own processes (each starts its
own local Ray on all cores); compare figures from the same run only.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--calls", type=int, default=48)
    p.add_argument("--data", default=None, help="the EmoDB folder (default: ../shared/corpora/emodb)")
    args = p.parse_args()
    data = ["--data", args.data] if args.data else []
    runs = [
        [sys.executable, str(HERE / "extract_throughput.py"), "--repeat", str(args.repeat), "--sets", "seremo",
         "egemaps", "--trials", "1", *data],
        [sys.executable, str(HERE / "score_throughput.py"), "--calls", str(args.calls), *data],
    ]  # fmt: skip
    for argv in runs:
        print(f"$ {' '.join(Path(a).name if a.endswith('.py') else a for a in argv[1:])}", flush=True)
        if subprocess.run(argv).returncode:
            return 1
        print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
