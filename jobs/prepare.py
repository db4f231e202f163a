"""Ray job entrypoint for the prepare stage: `python jobs/prepare.py --config configs/X.yaml`.

Also the entrypoint of `ray job submit --working-dir . -- python jobs/prepare.py --config ...`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded checkout, not an older install

from seremo.pipeline import job_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(job_main("prepare"))
