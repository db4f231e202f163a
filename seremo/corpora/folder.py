"""A folder-per-label tree: ``<root>/<label>/<file>`` or ``<root>/<label>/<speaker>/<file>``.

Any audio extension seremo decodes is read. The label folder's name goes
through ``seremo.labels.canonical`` ("Anger" -> angry) and is kept in
``source_label``. The speaker is the speaker folder when there is one; else
the one group of the ``speaker_regex`` option, searched in the file name;
else ``unknown`` for every row, with a warning, since speaker-independent
evaluation then cannot be done. A tree mixing both depths is an error, and
with speaker folders present ``speaker_regex`` is ignored (with a warning).
The corpus is the root folder's name; utterance ids are ``<corpus>/<path
under root without extension>``; speakers are kept as written and are the
groups.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pyarrow as pa

from seremo.audio import AUDIO_EXTS
from seremo.corpora._common import require_dir, table, walk
from seremo.errors import ConfigError, CorpusError
from seremo.labels import CANONICAL, canonical

log = logging.getLogger(__name__)

NAME = "folder"
UNKNOWN = "unknown"


def _regex(speaker_regex: str) -> re.Pattern:
    try:
        pattern = re.compile(speaker_regex)
    except re.error as exc:
        raise ConfigError(
            f"folder: speaker_regex {speaker_regex!r} is not a valid regex ({exc})"
        ) from None
    if pattern.groups != 1:
        raise ConfigError(
            f"folder: speaker_regex {speaker_regex!r} must have exactly one (group) capturing the "
            f"speaker; it has {pattern.groups}"
        )
    return pattern


def prepare(root: str | Path, *, speaker_regex: str | None = None) -> pa.Table:
    """Manifest of every audio file in ``<root>/<label>/[<speaker>/]<file>``."""
    root = require_dir(root, NAME)
    corpus = root.absolute().name or NAME
    pattern = _regex(speaker_regex) if speaker_regex else None
    files = walk(root, AUDIO_EXTS)
    depths = {len(p.relative_to(root).parts) for p in files}
    for path in files:
        depth = len(path.relative_to(root).parts)
        if depth not in (2, 3):
            raise CorpusError(
                path,
                "is not in a label folder; expected <root>/<label>/<file> or <root>/<label>/<speaker>/<file>",
            )
        if depth == 2 and 3 in depths:
            raise CorpusError(
                path,
                "lies directly in its label folder while other files are in speaker folders; "
                "use one layout, <label>/<file> or <label>/<speaker>/<file>",
            )
    if pattern is not None and 3 in depths:
        log.warning(
            "%s: speaker folders found, so speaker_regex %r is not used", root, speaker_regex
        )
    if files and depths == {2} and pattern is None:
        log.warning(
            "%s: no speaker folders and no speaker_regex, so every row has speaker %r and "
            "speaker-independent evaluation is impossible; pass --opt speaker_regex=... "
            "(a regex whose one group is the speaker in the file name) or use "
            "<label>/<speaker>/<file> folders",
            root,
            UNKNOWN,
        )

    labels: dict[str, str] = {}
    rows = []
    for path in files:
        parts = path.relative_to(root).parts
        folder = parts[0]
        if folder not in labels:
            label = canonical(folder)
            if label is None:
                raise CorpusError(
                    root / folder,
                    f"label folder {folder!r} is not an emotion; name label folders with one of: "
                    f"{' '.join(CANONICAL)} (or a common spelling such as anger, happiness, fear)",
                )
            labels[folder] = label
        if len(parts) == 3:
            speaker = parts[1]
        elif pattern is not None:
            m = pattern.search(path.name)
            if not m or not m.group(1):
                raise CorpusError(
                    path, f"file name does not match speaker_regex {pattern.pattern!r}"
                )
            speaker = m.group(1)
        else:
            speaker = UNKNOWN
        rows.append(
            {
                "utterance_id": f"{corpus}/{Path(*parts).with_suffix('').as_posix()}",
                "path": str(path),
                "corpus": corpus,
                "speaker": speaker,
                "group": speaker,
                "label": labels[folder],
                "source_label": folder,
            }
        )
    return table(rows, root, NAME, "<root>/angry/spk1_001.wav")
