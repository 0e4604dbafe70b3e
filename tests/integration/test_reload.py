"""Policy and model reloads are validated and atomic: a bad file keeps the old one serving."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard.config import hash_key
from guard.errors import ConfigError
from tests.support.scripted import DONE, Script, chat_events


def write(cfg: Path, threshold: float) -> None:
    cfg.write_text(
        f"upstream: http://upstream.test\nadmin_key_sha256: {hash_key('adm')}\n"
        f"policy:\n  threshold: {threshold}\n  depth: 12\n"
    )


async def test_policy_reload_then_bad_file_keeps_old(harness, tmp_path: Path) -> None:
    cfg = tmp_path / "guard.yaml"
    write(cfg, 0.5)
    h = harness(
        lambda p, r: Script(b"".join(chat_events(["hi"])) + DONE),
        config=str(cfg),
        config_path=str(cfg),
    )
    holder = h.app.state.services.models
    assert holder.current.book.default.threshold == 0.5
    write(cfg, 0.8)
    r = await h.client.post("/admin/reload", headers={"x-guard-admin-key": "adm"})
    assert r.status_code == 200 and r.json()["threshold"] == 0.8
    assert holder.current.book.default.threshold == 0.8
    # An invalid policy: refused with the reason, the old policy keeps serving.
    cfg.write_text("upstream: http://upstream.test\npolicy:\n  threshold: 7\n")
    bad = await h.client.post("/admin/reload", headers={"x-guard-admin-key": "adm"})
    assert bad.status_code == 422 and "threshold" in bad.json()["error"]["message"]
    assert holder.current.book.default.threshold == 0.8
    assert holder.last_error is not None
    assert h.metric("guard_risk_model_reloads_total", {"outcome": "error"}) == 1
    # The file watcher path does the same without raising.
    cfg.write_text("upstream: [broken yaml\n")
    assert holder.poll() is False and holder.current.book.default.threshold == 0.8
    with pytest.raises(ConfigError):
        holder.reload()
