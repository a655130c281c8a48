"""The capacity knee from sweep points."""

from __future__ import annotations

from typing import Any

from loadtest.sweep import knee, passes


def point(rps: float, attainment: float | None, achieved: float, failed: int = 0) -> dict[str, Any]:
    row = {"slo_attainment": attainment, "rejected_429": failed, "rejected_503": 0, "errors": 0,
           "request_throughput": achieved}
    return {"rps": rps, "sent_rps": rps, "per_class": {"a": row}, "overall": row}


def test_knee_with_slos_is_the_last_rate_before_the_first_miss() -> None:
    points = [point(5, 1.0, 5), point(10, 0.995, 10), point(20, 0.9, 15), point(50, 1.0, 20)]
    assert knee(points, 0.99) == 10  # 50 passing after 20 failed does not count
    assert knee(points, 0.999) == 5
    assert knee([point(5, 0.5, 5)], 0.99) is None


def test_without_slos_a_rate_passes_when_the_server_keeps_up() -> None:
    assert passes(point(10, None, 9.5), 0.99)
    assert not passes(point(10, None, 7.0), 0.99)  # the queue stretched the run
    assert not passes(point(10, None, 10.0, failed=1), 0.99)
