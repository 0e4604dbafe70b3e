"""Moved to tests/support/guard_proc.py (kept for tests/e2e/test_demo.py)."""

from tests.support.guard_proc import ROOT, free_port, guard_server

__all__ = ["ROOT", "free_port", "guard_server"]
