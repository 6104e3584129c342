"""The Prometheus text exposition format (version 0.0.4), as the srtools servers answer ``/metrics``.

A scrape is a list of metric families, each with a ``# HELP`` and a ``# TYPE`` line and its samples,
one per set of labels. Names follow Prometheus' conventions: ``srtools_`` and the server, the
quantity, and its base unit (``_seconds``, ``_bytes``); counters end in ``_total``. Every sample of
a live server carries the label ``stream``. Counters only ever grow while a server runs (a restart
starts them over, which Prometheus' ``rate()`` takes in its stride); gauges are current values.
conf/prometheus.yml in the srtools sources is an example scrape configuration.
"""

from __future__ import annotations

import math
from typing import Mapping

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
KINDS = ("counter", "gauge")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Exposition:
    """Metric families collected for one scrape, written out by :meth:`text`.

    Args:
        labels: labels every sample carries (e.g. the stream), before its own.
    """

    def __init__(self, **labels: str):
        self.labels = labels
        self._families: dict[str, tuple[str, str, list[tuple[dict[str, str], float]]]] = {}

    def add(self, name: str, kind: str, help_text: str, value: float | None,
            labels: Mapping[str, str] | None = None) -> None:
        """A sample of family ``name`` (declared by its first sample); a None value is left out, while
        the family is still declared.

        Raises:
            ValueError: a kind other than counter or gauge, a counter not named ``..._total``, or a
                family declared again with another kind.
        """
        if kind not in KINDS:
            raise ValueError(f"{name}: kind {kind!r}, expected one of {KINDS}")
        if kind == "counter" and not name.endswith("_total"):
            raise ValueError(f"{name}: a counter's name ends in _total")
        family = self._families.setdefault(name, (kind, help_text, []))
        if family[0] != kind:
            raise ValueError(f"{name}: declared as a {family[0]}, added as a {kind}")
        if value is not None:
            family[2].append(({**self.labels, **(labels or {})}, value))

    def counter(self, name: str, help_text: str, value: float | None, **labels: str) -> None:
        self.add(name, "counter", help_text, value, labels)

    def gauge(self, name: str, help_text: str, value: float | None, **labels: str) -> None:
        self.add(name, "gauge", help_text, value, labels)

    def text(self) -> str:
        """The scrape: the families in the order they were declared."""
        lines = []
        for name, (kind, help_text, samples) in self._families.items():
            lines.append(f"# HELP {name} {help_text.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                label_text = ",".join(f'{key}="{_escape_label(str(val))}"' for key, val in labels.items())
                lines.append(f"{name}{{{label_text}}} {_number(value)}" if label_text else f"{name} {_number(value)}")
        return "\n".join(lines) + "\n"
