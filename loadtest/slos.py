"""Where each class's SLOs come from: ``--slo`` flags first, else the gateway's ``GET /v1/sla``.

The gateway publishes its classes as ``{"classes": [{"name": ..., "ttft_target_ms": ...,
"tpot_target_ms": ..., "e2el_target_ms": ...}, ...]}``. A server without that route (plain
vLLM) has no SLOs to offer: goodput and SLO attainment are then left empty, and the
output says so, unless ``--slo`` supplies them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from loadtest.config import SLO


@dataclass(frozen=True, slots=True)
class SLOSet:
    """The SLO of every class of the run (classes without one are absent), and its source."""

    by_class: Mapping[str, SLO]
    source: str  # "--slo", "GET /v1/sla", or "none"

    def of(self, sla_class: str) -> SLO | None:
        return self.by_class.get(sla_class)


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def parse_sla(data: Any) -> dict[str, SLO]:
    """The SLOs in a ``GET /v1/sla`` body; unknown shapes give an empty mapping."""
    classes = data.get("classes") if isinstance(data, dict) else None
    found: dict[str, SLO] = {}
    for entry in classes if isinstance(classes, list) else ():
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        slo = SLO(
            _number(entry.get("ttft_target_ms")),
            _number(entry.get("tpot_target_ms")),
            _number(entry.get("e2el_target_ms")),
        )
        if not slo.empty:
            found[entry["name"]] = slo
    return found


def resolve(
    flags: Iterable[tuple[str, SLO]],
    served: Mapping[str, SLO] | None,
    classes: Iterable[str],
    default_class: str | None = None,
) -> SLOSet:
    """SLOs for ``classes``: ``--slo`` wins; else the server's; else none.

    ``default_class`` is the server's class for requests sent without a service tier (the
    ``default`` label of a run without ``--mix``).
    """
    flags = list(flags)
    names = list(classes)
    if flags:
        everyone = dict(flags).get("*")
        by_class = {n: slo for n in names if (slo := dict(flags).get(n, everyone)) is not None}
        return SLOSet(by_class, "--slo")
    if served:
        by_class = {}
        for name in names:
            key = default_class if name not in served and default_class else name
            if key in served:
                by_class[name] = served[key]
        return SLOSet(by_class, "GET /v1/sla")
    return SLOSet({}, "none")
