"""Charts as PNG files, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot  # noqa: E402  (after choosing the backend)

from .errors import SrError  # noqa: E402


def line_chart(path: str | os.PathLike, x: Sequence[float], series: dict[str, Sequence[float]], x_label: str,
               y_label: str, title: str) -> None:
    """Draw one line per series against ``x`` with markers and a legend, and write it as PNG.

    Raises:
        SrError: the file cannot be written.
    """
    figure, axes = pyplot.subplots(figsize=(9, 5.6), dpi=100)
    try:
        for name, values in series.items():
            axes.plot(x, values, marker="o", label=name)
        axes.set(xlabel=x_label, ylabel=y_label, title=title)
        axes.grid(True, alpha=0.3)
        axes.legend()
        figure.tight_layout()
        try:
            figure.savefig(os.fspath(path), format="png")
        except OSError as exc:
            raise SrError(f"{path}: cannot write the plot ({exc.strerror or exc})") from None
    finally:
        pyplot.close(figure)
