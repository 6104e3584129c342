"""Charts as PNG files, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot  # noqa: E402  (after choosing the backend)

from .errors import SrError  # noqa: E402


def save(figure: matplotlib.figure.Figure, path: str | os.PathLike) -> None:
    """Write ``figure`` to ``path`` as PNG.

    Raises:
        SrError: the file cannot be written.
    """
    try:
        figure.savefig(os.fspath(path), format="png")
    except OSError as exc:
        raise SrError(f"{path}: cannot write the plot ({exc.strerror or exc})") from None


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
        save(figure, path)
    finally:
        pyplot.close(figure)


@dataclasses.dataclass(frozen=True)
class Event:
    """Something that happened at stream time ``t`` (seconds), drawn on a quality chart by its ``kind``
    (a key of :data:`EVENT_STYLES`), with an optional ``label`` ("v2")."""

    t: float
    kind: str
    label: str = ""


# How each kind of event is drawn: a vertical line across the chart, or a mark at its top.
EVENT_STYLES = {
    "scene cut": {"color": "0.45", "linestyle": "--", "linewidth": 1.0},
    "training request": {"color": "tab:red", "marker": "v"},
    "model published": {"color": "tab:green", "linestyle": ":", "linewidth": 1.2},
    "model on air": {"color": "tab:green", "linestyle": "-", "linewidth": 1.2},
}


def quality_chart(path: str | os.PathLike, seconds: Sequence[float], series: dict[str, Sequence[float]],
                  title: str, events: Sequence[Event] = (), share: tuple[str, Sequence[float]] | None = None,
                  y_label: str = "Y-PSNR (dB)") -> None:
    """Quality over stream time, as PNG: one line per series (the value of each second, at ``seconds``,
    the starts of the seconds), the ``events`` on it, and under it, when given, ``share`` = (name,
    values in [0, 1] per second) as bars.

    Raises:
        SrError: the file cannot be written.
    """
    rows = 2 if share is not None else 1
    figure, axes = pyplot.subplots(rows, 1, figsize=(10, 6.2 if share else 5), dpi=100, sharex=True, squeeze=False,
                                   gridspec_kw={"height_ratios": [3, 1][:rows]})
    top = axes[0][0]
    try:
        centres = [t + 0.5 for t in seconds]
        for name, values in series.items():
            top.plot(centres, values, marker=".", label=name)
        drawn: set[str] = set()
        for event in sorted(events, key=lambda e: e.t):
            style = dict(EVENT_STYLES.get(event.kind, {"color": "0.3"}))
            label = None if event.kind in drawn else event.kind
            drawn.add(event.kind)
            if "marker" in style:
                top.plot([event.t], [0.97], transform=top.get_xaxis_transform(), linestyle="none",
                         markersize=8, label=label, clip_on=False, **style)
            else:
                top.axvline(event.t, label=label, **style)
            if event.label:
                top.text(event.t, 0.02, f" {event.label}", transform=top.get_xaxis_transform(), rotation=90,
                         fontsize=8, color=style.get("color", "0.3"), va="bottom")
        top.set(ylabel=y_label, title=title)
        top.grid(True, alpha=0.3)
        top.legend(fontsize=8, loc="lower right", ncol=2)
        if share is not None:
            bottom = axes[1][0]
            name, values = share
            bottom.bar(centres, [100 * v for v in values], width=0.9, color="tab:purple")
            bottom.set(ylabel=f"{name} (%)", ylim=(0, 100))
            bottom.grid(True, alpha=0.3)
        axes[-1][0].set_xlabel("stream time (s)")
        figure.tight_layout()
        save(figure, path)
    finally:
        pyplot.close(figure)
