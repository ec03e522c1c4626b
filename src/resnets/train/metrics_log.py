"""Per-epoch metrics as JSONL and CSV, and a PNG of the curves, rewritten every epoch.

The CSV columns and the figure default to classification's; other trainers (``train-sr``)
pass their own ``columns`` and a ``figure(rows)`` function.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from ..files import atomic_write

_log = logging.getLogger(__name__)

COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
           "train_clean_loss", "train_clean_acc", "lr", "images_per_s", "epoch_time_s")


class MetricsLog:
    def __init__(self, run_dir: Path, enabled: bool = True, columns: Sequence[str] = COLUMNS,
                 figure: Callable[[list[dict]], object] | None = None) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self.columns = tuple(columns)
        self.figure = figure  # rows -> a matplotlib Figure; None: loss and error curves
        self.rows: list[dict] = []
        path = run_dir / "metrics.jsonl"
        if path.exists():
            self.rows = read_rows(path)

    def truncate(self, epochs: int) -> None:
        """Forget rows after ``epochs`` (a resumed run rewrites what it replays)."""
        self.rows = [r for r in self.rows if r["epoch"] <= epochs]


    def append(self, row: dict) -> None:
        self.rows.append(row)
        if not self.enabled:
            return
        atomic_write(self.run_dir / "metrics.jsonl", lambda p: p.write_text(
            "".join(json.dumps(r) + "\n" for r in self.rows)))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write(self.run_dir / "metrics.csv", lambda p: p.write_text(buf.getvalue()))
        self.plot()

    def plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig = self.figure(self.rows) if self.figure is not None else self._classification()
        atomic_write(self.run_dir / "curves.png", lambda p: fig.savefig(p, format="png", dpi=90))
        plt.close(fig)

    def _classification(self):
        import matplotlib.pyplot as plt

        epochs = [r["epoch"] for r in self.rows]
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
        for key, style in (("train", "--"), ("val", "-"), ("test", ":")):
            pts = [(r["epoch"], r[f"{key}_loss"], r[f"{key}_acc"]) for r in self.rows
                   if f"{key}_loss" in r]
            if pts:
                e, loss, acc = zip(*pts, strict=True)
                ax_loss.plot(e, loss, style, label=key)
                ax_acc.plot(e, [100 - a for a in acc], style, label=key)
        ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
        ax_acc.set(xlabel="epoch", ylabel="error (%)", title="top-1 error")
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
            ax.legend()
        if epochs:
            ax_loss.set_xlim(min(epochs) - 0.5 if len(epochs) == 1 else min(epochs), max(epochs))
        fig.tight_layout()
        return fig


def progress_bar(disabled: bool):
    """The live progress bar of a training epoch (``rich``), off when ``disabled``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), disable=disabled, transient=False)


def read_rows(path: Path) -> list[dict]:
    """The rows of a ``metrics.jsonl``. A damaged last line (a write cut off by a crash) is
    dropped with a warning, so the run can resume; damage anywhere else is an error naming
    the file and the line."""
    lines = path.read_text(errors="replace").splitlines()
    numbered = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
    rows = []
    for k, (number, line) in enumerate(numbered):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                raise ValueError("not a row with an epoch number")
        except ValueError as e:
            if k == len(numbered) - 1:
                _log.warning("%s: line %d is damaged (%s) and was dropped; it is written "
                             "again when its epoch ends", path, number, _reason(e))
                break
            raise ValueError(f"{path} line {number} is damaged ({_reason(e)}): fix or delete "
                             "that line") from None
        rows.append(row)
    return rows


def _reason(e: ValueError) -> str:
    return str(e).split(":")[0] if isinstance(e, json.JSONDecodeError) else str(e)
