"""Alerts: a trip, an interruption, a stalled board or a host-loss event, sent once per event.

Each event has a key (the run, the record's seq, the kind); a key already sent is never sent
again, also after a restart (the keys are kept in ``<data>/alerts.json`` before anything is
sent). An alert is published to the listeners at once, then the configured command runs
(``sh -c``, with ``SICELL_ALERT_KIND/BOARD/RUN/TEXT/AT/KEY`` in its environment: nothing of
the event is put into the command line) and/or its JSON is POSTed to the webhook, in a
background thread. Both outcomes go to the audit log.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import urllib.error
import urllib.request
from typing import Any

from sicell.service.audit import AuditLog
from sicell.service.datadir import DataDir
from sicell.service.hub import Hub
from sicell.session.runmeta import now_iso

__all__ = ["KINDS", "Alerts"]

log = logging.getLogger("sicell.service")

KINDS = ("trip", "interrupted", "stalled", "host_loss")
KEEP_KEYS = 10000  # the newest keys kept (an old run's events do not come back)
COMMAND_TIMEOUT_S = 60.0
WEBHOOK_TIMEOUT_S = 10.0


class Alerts:
    def __init__(
        self,
        data: DataDir,
        hub: Hub,
        audit: AuditLog,
        *,
        command: str | None = None,
        webhook: str | None = None,
    ) -> None:
        self.data = data
        self.hub = hub
        self.audit = audit
        self.command = command
        self.webhook = webhook
        self._sent: dict[str, None] = dict.fromkeys(data.load_alert_keys())
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def was_sent(self, key: str) -> bool:
        with self._lock:
            return key in self._sent

    def alert(self, board_id: str, kind: str, text: str, key: str, run: str | None = None) -> bool:
        """Send the alert ``key`` unless it was sent before; True when sent now."""
        with self._lock:
            if key in self._sent:
                return False
            self._sent[key] = None
            while len(self._sent) > KEEP_KEYS:
                del self._sent[next(iter(self._sent))]
            try:
                self.data.save_alert_keys(list(self._sent))
            except OSError as e:  # sent all the same (a restart might send it again)
                log.warning("alert %s: the sent keys were not saved: %s", key, e)
        event = {
            "type": "alert",
            "board_id": board_id,
            "kind": kind,
            "text": text,
            "at": now_iso(),
            "run": run,
            "key": key,
        }
        self.hub.publish(event)
        if self.command or self.webhook:
            t = threading.Thread(
                target=self._dispatch, args=(event,), name=f"sicell-alert-{kind}", daemon=True
            )
            with self._lock:
                self._threads = [x for x in self._threads if x.is_alive()]
                self._threads.append(t)
            t.start()
        return True

    def _dispatch(self, event: dict[str, Any]) -> None:
        if self.command:
            self.audit.write(
                "service",
                "alert-command",
                event["board_id"],
                _brief(event),
                self._run_command(event),
            )
        if self.webhook:
            self.audit.write(
                "service", "alert-webhook", event["board_id"], _brief(event), self._post(event)
            )

    def _run_command(self, event: dict[str, Any]) -> str:
        assert self.command is not None
        env = dict(os.environ)
        for k in ("kind", "board_id", "run", "text", "at", "key"):
            name = "BOARD" if k == "board_id" else k.upper()
            env[f"SICELL_ALERT_{name}"] = "" if event.get(k) is None else str(event[k])
        try:
            proc = subprocess.run(
                ["/bin/sh", "-c", self.command],
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"timed out after {COMMAND_TIMEOUT_S:g} s"
        except OSError as e:
            return f"could not run: {e}"
        return f"exit {proc.returncode}"

    def _post(self, event: dict[str, Any]) -> str:
        assert self.webhook is not None
        req = urllib.request.Request(
            self.webhook,
            data=json.dumps(event).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=WEBHOOK_TIMEOUT_S) as resp:
                return f"HTTP {resp.status}"
        except urllib.error.HTTPError as e:
            return f"HTTP {e.code}"
        except (urllib.error.URLError, OSError, ValueError) as e:
            return f"failed: {e}"

    def wait(self, timeout: float = 30.0) -> None:
        """Wait for the commands and webhooks under way (at close, and in tests)."""
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(timeout)


def _brief(event: dict[str, Any]) -> dict[str, Any]:
    return {k: event.get(k) for k in ("kind", "run", "key", "text")}
