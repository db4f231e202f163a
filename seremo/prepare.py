"""``seremo prepare``: one or more corpora into one manifest, and the account of what it holds."""

from __future__ import annotations

from collections.abc import Sequence

from seremo import manifest, outputs, storage
from seremo.corpora import Prepared, get_loader, prepare_corpora
from seremo.errors import SeremoError
from seremo.labels import get_class_set
from seremo.outcome import Outcome, format_table


def run_stage(entries: Sequence[tuple[str, str, dict[str, str]]], out: str, class_set: str | None) -> Outcome:
    """Prepare one or more corpora (loader, root, options) into the manifest ``out``, with its summary."""
    stem = out.rsplit(".", 1)[0] if "." in out.rsplit("/", 1)[-1] else out
    errors_path = stem + ".errors.parquet"  # beside the manifest: m.parquet -> m.errors.parquet
    for name, _, _ in entries:
        get_loader(name)  # mistyped names are the first thing to hear about, then where the output goes
    if class_set is not None:
        get_class_set(class_set)
    roots = [root for _, root, _ in entries]
    outputs.check_out(out, [r for r in roots if storage.is_dir(r)], [r for r in roots if storage.is_file(r)],
                      what="corpus")  # fmt: skip
    manifest.check_replaceable(out)  # before the work: a user's file there is never replaced
    manifest.check_replaceable(errors_path, "errors table")
    prepared = prepare_corpora(list(entries), class_set=class_set)
    storage.makedirs(storage.parent(out))
    if prepared.table.num_rows == 0 and prepared.errors.num_rows and not prepared.excluded:
        storage.write_parquet(prepared.errors, errors_path)  # the account of why, never a 0-row manifest
        raise SeremoError(_none_readable(entries, prepared.errors, errors_path))
    manifest.write(prepared.table, out)
    storage.write_parquet(prepared.errors, errors_path)
    text = [summary(prepared), f"manifest: {out}"]
    if prepared.errors.num_rows:
        text.append(f"errors:   {errors_path}")
    return Outcome({"rows": prepared.table.num_rows, "errors": prepared.errors.num_rows}, "\n".join(text))


def _none_readable(entries: Sequence[tuple[str, str, dict[str, str]]], errors, errors_path: str) -> str:
    """One line for a prepare where every audio file failed: extract and score fail alike (exit 2)."""
    roots = ", ".join(str(root) for _, root, _ in entries)
    kinds: dict[str, int] = {}
    for k in errors.column("error").to_pylist():
        kinds[k] = kinds.get(k, 0) + 1
    top = ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:3])
    return (f"{roots}: every one of the {errors.num_rows} audio files is unreadable ({top}); "
            f"no manifest written; see {errors_path}")  # fmt: skip


def _by(t, key: str) -> list[list[object]]:
    """Rows, speakers and hours for each value of column ``key`` (labels: null is "(unlabelled)")."""
    keys = ["(unlabelled)" if k is None else k for k in t.column(key).to_pylist()]
    speakers = t.column("speaker").to_pylist()
    durations = [d or 0.0 for d in t.column("duration_s").to_pylist()]
    out = []
    for k in sorted(set(keys)):
        idx = [i for i, v in enumerate(keys) if v == k]
        out.append([k, len(idx), len({speakers[i] for i in idx}), round(sum(durations[i] for i in idx) / 3600, 3)])
    return out


def summary(prepared: Prepared) -> str:
    """The printed account of a prepare: rows, speakers, hours per corpus and per label; left-outs."""
    t = prepared.table
    hours = sum(d for d in t.column("duration_s").to_pylist() if d is not None) / 3600
    text_only = t.column("path").null_count  # transcript rows without audio (e.g. MELD)
    lines = [
        format_table(
            ["rows", "text-only", "speakers", "groups", "hours", "errors"],
            [
                [
                    t.num_rows,
                    text_only,
                    len(set(t.column("speaker").to_pylist())),
                    len(set(t.column("group").to_pylist())),
                    round(hours, 3),
                    prepared.errors.num_rows,
                ]
            ],
        ),
    ]
    if len(set(t.column("corpus").to_pylist())) > 1:
        lines += ["", format_table(["corpus", "rows", "speakers", "hours"], _by(t, "corpus"))]
    lines += ["", format_table(["label", "count", "speakers", "hours"], _by(t, "label"))]
    if prepared.skipped:
        lines += ["", format_table(["left out (not speech)", "files"], sorted(prepared.skipped.items()))]
    if prepared.excluded:
        lines += [
            "",
            format_table(
                ["excluded by class set", "rows"],
                sorted(((k or "(unlabelled)"), v) for k, v in prepared.excluded.items()),
            ),
        ]
    if prepared.errors.num_rows:
        kinds: dict[str, int] = {}
        for k in prepared.errors.column("error").to_pylist():
            kinds[k] = kinds.get(k, 0) + 1
        lines += ["", format_table(["error", "files"], sorted(kinds.items()))]
    return "\n".join(lines)
