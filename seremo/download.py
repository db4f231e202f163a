"""``seremo download``: fetch a public corpus archive, verify it, unpack it.

Verification is by content: the archive's files are checked against checksums
pinned in the package (``seremo/data/NAME-*.sha256``, one ``sha256  name`` line
per file, as ``sha256sum`` writes them), so a truncated, tampered or silently
re-packed archive fails with the first file that differs. ``--sha256`` checks
the archive file itself as well, for mirrors that publish one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from seremo.errors import ConfigError, SeremoError

log = logging.getLogger(__name__)

DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Archive:
    url: str
    folder: str  # the folder inside the archive whose files the checksums cover
    sums: Path  # pinned checksums of those files
    size_mb: float
    licence: str


ARCHIVES = {
    "emodb": Archive(
        url="http://emodb.bilderbar.info/download/download.zip",
        folder="wav",
        sums=DATA / "emodb-wav.sha256",
        size_mb=40.5,
        licence="free for research use; cite Burkhardt et al., Interspeech 2005",
    ),
}


def pinned_sums(path: Path) -> dict[str, str]:
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.lstrip("*")] = digest
    return sums


def fetch(url: str, dest: Path, timeout_s: float = 60.0) -> str:
    """Stream ``url`` to ``dest`` with progress in the log; returns the file's sha256."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp, dest.open("wb") as f:
            total = int(resp.headers.get("Content-Length") or 0)
            done, last = 0, time.monotonic()
            while chunk := resp.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if time.monotonic() - last > 2:
                    last = time.monotonic()
                    pct = f" ({100 * done / total:.0f}%)" if total else ""
                    log.info("downloaded %.1f MB%s", done / 1e6, pct)
    except urllib.error.HTTPError as exc:
        raise SeremoError(f"{url}: the server answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SeremoError(f"{url}: download failed ({reason}); check the address and your connection, "
                          "or download it by hand and pass --url file:///path/to/archive.zip") from None  # fmt: skip
    return digest.hexdigest()


def unpack_verified(archive: Path, out: Path, folder: str, sums: dict[str, str]) -> int:
    """Unpack ``archive`` into ``out``, checking every file of ``folder`` against ``sums``; returns the count."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise SeremoError(f"{archive}: not a zip archive (an error page instead of the corpus?)") from None
    with zf:
        root = out.resolve()
        seen = set()
        for info in zf.infolist():
            target = (out / info.filename).resolve()
            if root not in target.parents and target != root:
                raise SeremoError(f"{archive}: member {info.filename!r} would unpack outside {out}; refusing it")
            parts = Path(info.filename).parts
            if info.is_dir() or len(parts) != 2 or parts[0] != folder:
                continue
            name = parts[1]
            data = zf.read(info)
            expected = sums.get(name)
            if expected is None:
                log.warning("%s: %s has no pinned checksum (not part of the corpus release); unpacked unverified",
                            archive, info.filename)  # fmt: skip
                continue
            if hashlib.sha256(data).hexdigest() != expected:
                raise SeremoError(f"{archive}: {info.filename} fails its checksum; the download is corrupt or "
                                  "the archive changed; delete it and download again")  # fmt: skip
            seen.add(name)
        missing = sorted(set(sums) - seen)
        if missing:
            raise SeremoError(f"{archive}: {len(missing)} of {len(sums)} files of {folder}/ are missing "
                              f"(first: {missing[0]}); the archive is incomplete")  # fmt: skip
        zf.extractall(out)
    return len(seen)


def download(name: str, out: str, url: str | None = None, sha256: str | None = None, keep: bool = False) -> dict:
    """Fetch, verify and unpack the corpus ``name`` into ``out``; returns what was done."""
    try:
        spec = ARCHIVES[name]
    except KeyError:
        raise ConfigError(f"no download for corpus {name!r}; available: {', '.join(sorted(ARCHIVES))}") from None
    dest = Path(out)
    record = dest / "DOWNLOAD.json"
    if record.is_file():
        done = json.loads(record.read_text())
        log.info("%s: already downloaded and verified (%s)", dest, done.get("url"))
        return {**done, "skipped": True}
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / f"{name}.zip.partial"
    source = url or spec.url
    log.info("downloading %s (about %.0f MB; %s)", source, spec.size_mb, spec.licence)
    got = fetch(source, archive)
    if sha256 and got != sha256.lower():
        archive.unlink()
        raise SeremoError(f"{source}: archive sha256 {got} is not the expected {sha256}; delete and retry")
    n = unpack_verified(archive, dest, spec.folder, pinned_sums(spec.sums))
    if keep:
        shutil.move(archive, dest / f"{name}.zip")
    else:
        archive.unlink()
    done = {"corpus": name, "url": source, "archive_sha256": got, "files_verified": n,
            "folder": spec.folder, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    record.write_text(json.dumps(done, indent=2))
    return done
