"""The loaded risk model and the policies built on it, swapped atomically on reload.

A reload validates the new file completely before anything changes; a bad file keeps the old
model in service and says why. Workers watch the model and config files and reload on change, so
a reload (admin endpoint, or a new file rolled out) reaches every worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guard.config import Settings, load_settings
from guard.decision.policy import PolicyBook, RiskModelLike
from guard.errors import ConfigError, GuardError, RiskModelError
from guard.observability.metrics import Metrics


@dataclass(frozen=True, slots=True)
class Loaded:
    model: RiskModelLike
    book: PolicyBook
    version: str
    path: str


def _load_model(path: str | None) -> Any:
    from guard.risk import load_risk_model  # the pure core; imported here to keep start-up lean

    return load_risk_model(path)


def model_version(model: Any) -> str:
    meta = getattr(model, "meta", None)
    return str(getattr(meta, "version", "unknown"))


class ModelHolder:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        model: RiskModelLike | None = None,
        config_path: str | None = None,
        config_overrides: Mapping[tuple[str, ...], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.config_overrides = dict(config_overrides or {})
        self.metrics = metrics
        self.config_path = config_path
        self.last_error: str | None = None
        # Called with the new settings after every successful reload (e.g. to swap API keys).
        self.on_reload: list[Callable[[Settings], None]] = []
        path = settings.risk_model
        if model is None:
            model = _load_model(path)
        self._info_labels: tuple[str, str, str] | None = None  # the series at 1 now
        self.current = Loaded(
            model, PolicyBook(settings, model), model_version(model), path or "(shipped default)"
        )
        self._stamp = self._file_stamp()
        self._publish()

    def _publish(self) -> None:
        cur = self.current
        pol = cur.book.default
        info = self.metrics.risk_model_info
        labels = (cur.version, str(pol.depth), f"{pol.threshold:g}")
        prev = self._info_labels
        if prev is not None and prev != labels:
            # The model in use is the series at 1. Multiprocess mode cannot remove a series
            # (prometheus_client warns and keeps it), so the old one is set to 0 there.
            if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                info.labels(*prev).set(0)
            else:
                info.remove(*prev)
        info.labels(*labels).set(1)
        self._info_labels = labels
        self.metrics.risk_model_loaded.set(1)

    def _file_stamp(self) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        def stamp(p: str | None) -> tuple[int, int] | None:
            if not p:
                return None
            try:
                st = os.stat(p)
            except OSError:
                return None
            return (st.st_mtime_ns, st.st_size)

        return stamp(self.settings.risk_model), stamp(self.config_path)

    def reload(self) -> Loaded:
        """Reload model (and policy config, when serving from a file); keep the old on error."""
        try:
            settings = self.settings
            if self.config_path is not None:
                # Same sources as at start: the file, the environment, the command line.
                fresh = load_settings(self.config_path, overrides=self.config_overrides)
                # The listen address and upstream need a restart; policies, model and keys do not.
                settings = settings.model_copy(
                    update={
                        "policy": fresh.policy,
                        "policies": fresh.policies,
                        "risk_model": fresh.risk_model or settings.risk_model,
                        "api_keys": fresh.api_keys,
                        "admin_key_sha256": fresh.admin_key_sha256,
                    }
                )
            model = _load_model(settings.risk_model)
            book = PolicyBook(settings, model)
        except (GuardError, OSError, ValueError) as exc:
            self.last_error = str(exc)
            self.metrics.risk_model_reloads.labels("error").inc()
            if isinstance(exc, GuardError):
                raise
            raise RiskModelError(f"reload failed: {exc}") from None
        self.settings = settings
        self.current = Loaded(
            model, book, model_version(model), settings.risk_model or "(shipped default)"
        )
        self.last_error = None
        self._stamp = self._file_stamp()
        self.metrics.risk_model_reloads.labels("ok").inc()
        self._publish()
        for listener in self.on_reload:
            listener(settings)
        return self.current

    def poll(self) -> bool:
        """Reload if the model or config file changed on disk; True if a reload happened."""
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp  # a bad file is reported once, not every poll
        try:
            self.reload()
        except (GuardError, ConfigError):
            return False
        return True

    def touch(self) -> None:
        """Make other workers see a change (they poll file stamps)."""
        for p in (self.settings.risk_model, self.config_path):
            if p and Path(p).exists():
                os.utime(p)
        self._stamp = self._file_stamp()
