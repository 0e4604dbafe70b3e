"""The chaos run's checker (``loadtests/chaos_vllm.py check``) on made-up timelines: what it calls
a failure must be one. The 20-minute run of 2026-12-07 reported "mid-stream failures after the
first restart" that were streams started after it and cut by the *second* kill: the checker
counted them against the first recovery."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _chaos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chaos_vllm", ROOT / "loadtests/chaos_vllm.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["chaos_vllm"] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


chaos = _chaos()


def _timeline(cut_by_second_kill: bool) -> tuple[list, object, list[tuple[float, int]]]:
    """vLLM killed at t=10 (healthy again at 20) and at t=40 (healthy at 50)."""
    R = chaos.Result
    ok = dict(kind="ok", status=200)
    results = [
        R(start=9.5, end=10.05, kind="error_event", detail="upstream_error", status=200),
        R(start=12.0, end=12.01, kind="http_error", detail="502", status=502),
        R(start=21.0, end=23.0, **ok),
        R(start=41.0, end=41.01, kind="http_error", detail="502", status=502),
        R(start=51.0, end=53.0, **ok),
        R(start=39.5, end=40.05, kind="error_event", detail="upstream_error", status=200),
    ]
    if cut_by_second_kill:  # started well after the first recovery, in flight at the second kill
        results.append(
            R(start=38.0, end=40.08, kind="error_event", detail="upstream_error", status=200)
        )
    ev = chaos.Events(kills=[10.0, 40.0])
    health = [(t / 10, 200 if (t < 100 or 200 <= t < 400 or t >= 500) else 0) for t in range(600)]
    ev.ready = [(t, 503 if (10 < t < 20 or 40 < t < 50) else 200) for t, _ in health]
    return results, ev, health


def test_a_stream_cut_by_the_next_kill_is_not_a_failure_of_the_previous_recovery() -> None:
    results, ev, health = _timeline(cut_by_second_kill=True)
    out = chaos.check(results, ev, health, end_within=1.0, after_health=1.0)
    assert out["failures"] == [], out["failures"]
    first, second = out["per_kill"]
    assert first["in_flight_at_next_event"] == 2 and first["failed_after"] == []
    assert second["in_flight"] == 2  # the second kill's: both ended within 1 s, cleanly
    assert second["in_flight_end_max_s"] <= 0.1


def test_a_failure_during_a_recovery_is_still_reported_with_its_message() -> None:
    results, ev, health = _timeline(cut_by_second_kill=False)
    results.append(
        chaos.Result(
            start=25.0,
            end=25.5,
            kind="error_event",
            detail="upstream_error",
            status=200,
            message="upstream stream broke",
        )
    )
    out = chaos.check(results, ev, health, end_within=1.0, after_health=1.0)
    assert any("after health" in f for f in out["failures"]), out["failures"]
    (failed,) = out["per_kill"][0]["failed_after"]
    assert failed["message"] == "upstream stream broke"
    assert failed["started_after_health_s"] == 5.0
