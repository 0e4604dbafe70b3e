"""Pin vLLM-CPU's engine-core process onto its model worker's CPUs (small machines only).

vLLM on CPU binds the model worker's OpenMP threads to some cores and reserves the rest for the
API server (``reserved_cpus`` in its log). But the engine-core process is left unbound, and while
a request runs it busy-waits (``sched_yield``) for the worker's results: on a 2-core machine it
takes the reserved core, the API server gets ~15% of a CPU, and the whole response of a short
generation is written at once after it finished (TTFT 0.8 s instead of 30 ms; an abort arrives
too late to stop anything). Moving the engine core next to the worker gives the API server (and
the guard, and the tests) their core back.

    python vllm_pin_engine.py PID        # PID: the server's process group leader (setsid)

Applies only where ``os.cpu_count() <= GUARD_VLLM_PIN_MAX_CPUS`` (default 4); prints what it did.
Stdlib only, Linux /proc; a no-op (exit 0) where anything is missing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _procs_in_group(pgid: int) -> dict[int, str]:
    out: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            comm = (d / "comm").read_text().strip()
        except OSError:
            continue
        # Fields after the ")" that closes comm: state ppid pgrp ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            out[int(d.name)] = comm
    return out


def _pin(pid: int, cpus: set[int]) -> int:
    pinned = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
            pinned += 1
        except OSError:
            pass  # a thread that just exited
    return pinned


def main() -> int:
    pgid = int(sys.argv[1])
    limit = int(os.environ.get("GUARD_VLLM_PIN_MAX_CPUS", "4"))
    ncpu = os.cpu_count() or 1
    if ncpu > limit or not hasattr(os, "sched_setaffinity"):
        print(f"not pinning: {ncpu} CPUs (> GUARD_VLLM_PIN_MAX_CPUS={limit})")
        return 0
    procs = _procs_in_group(pgid)
    workers = [p for p, c in procs.items() if c.startswith("VLLM::Worker")]
    engines = [p for p, c in procs.items() if c.startswith("VLLM::EngineCor")]
    if not workers or not engines:
        print(f"not pinning: no engine-core/worker pair in process group {pgid}")
        return 0
    cpus: set[int] = set()
    for w in workers:
        cpus |= os.sched_getaffinity(w)
    if cpus == set(range(ncpu)):
        print("not pinning: the worker is not bound to a subset of the CPUs")
        return 0
    for e in engines:
        n = _pin(e, cpus)
        print(f"pinned engine core {e} ({n} threads) to CPUs {sorted(cpus)} of its worker")
    return 0


if __name__ == "__main__":
    sys.exit(main())
