"""Ray job entrypoint for a whole experiment: `python jobs/pipeline.py --config configs/X.yaml`.

The stages the config lists, skipping finished ones; `--stages a,b` runs a subset.
Also the entrypoint of `ray job submit --working-dir . -- python jobs/pipeline.py --config ...`
and what `seremo submit` runs.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded checkout, not an older install

from seremo.pipeline import job_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(job_main(None))
