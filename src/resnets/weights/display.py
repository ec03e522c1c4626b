"""Rich tables for ``resnets weights list`` and ``resnets weights info``."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from .records import WeightRecord, all_records, bundled_path, default_record, list_weights


def _location(record: WeightRecord) -> Path:
    """Where the record's file is, or will be once downloaded (where loading reads it)."""
    import urllib.parse

    from .hub import cache_path

    if record.url.startswith("bundled:"):
        return bundled_path(record.filename)
    if record.url.startswith("file:"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(record.url).path))
    return cache_path(record.url, record.sha256)


def _cached(record: WeightRecord) -> bool:
    return _location(record).is_file()


def _pct(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def weights_table(pattern: str | None = None) -> Table:
    """One row per record: tag, dataset, published accuracy, size, default, cached."""
    tags = list_weights(pattern)
    if not tags:
        raise ValueError(f"no weights match {pattern!r} (see `resnets weights list`)")
    records = all_records()
    table = Table(title="resnets weights", caption="top-1/top-5: accuracy (%) as published "
                  "(see `resnets weights info TAG` for the source); * = pretrained=True")
    for col in ("tag", "dataset", "top-1", "top-5", "MB", "cached"):
        table.add_column(col, justify="right" if col in ("top-1", "top-5", "MB") else "left")
    for tag in tags:
        rec = records[tag]
        size = f"{rec.size_mb:.1f}" if rec.size_mb else "-"
        star = " *" if default_record(rec.model).tag == tag else ""
        table.add_row(tag + star, rec.dataset, _pct(rec.top1),
                      _pct(rec.top5), size, "yes" if _cached(rec) else "-")
    return table


def record_table(record: WeightRecord) -> Table:
    """Every field of one record, and where its file is (or would be) cached."""
    table = Table(title=record.tag, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    location = _location(record)
    accuracy = f"top-1 {_pct(record.top1)}, top-5 {_pct(record.top5)}"
    classes = record.classes
    rows = [
        ("model", record.model),
        ("default", "yes (pretrained=True loads it)" if default_record(record.model) == record
         else "no"),
        ("url", record.url),
        ("sha256", record.sha256 or "unknown (not checked)"),
        ("size", f"{record.file_size:,} bytes" if record.file_size
         else f"{record.size_mb} MB" if record.size_mb else "unknown"),
        ("cache", f"{location} ({'present' if _cached(record) else 'not downloaded'})"),
        ("license", record.license),
        ("dataset", f"{record.dataset}, {len(classes)} classes ({', '.join(classes[:3])}, ...)"),
        ("preprocessing", record.preprocessing.describe()),
        ("accuracy", f"{accuracy} ({record.accuracy_source})" if record.top1 else "-"),
        ("recipe", record.recipe or "-"),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    return table
