"""The lab service: one worker thread per board, run databases in a data directory, events.

:class:`Service` owns the boards it is given (serial devices, ``emu://`` URLs) or finds (RP2040
boards on USB, by serial number); each board's :class:`~sicell.service.worker.BoardWorker`
claims its port (``sicell.owner``: a second process never opens it) and is the only code that
opens it. Boards are known by board id; one that comes back under another device name is
found again by the rescan. Every method is thread-safe and returns JSON-able values; errors are
``sicell.errors`` classes with one-line messages (the API turns them into HTTP statuses).

After a restart the service reattaches to the runs ``service.json`` names (the board still
runs that run id) and marks those it cannot in the run database's ``service_note``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, overload

from sicell.client import BoardInfo, Record
from sicell.errors import (
    BoardTimeoutError,
    RunExistsError,
    SicellError,
    StoreError,
    TransportError,
    UnknownBoardError,
    UsageError,
)
from sicell.service.alerts import Alerts
from sicell.service.audit import AuditLog
from sicell.service.boardview import RunRef, provisional_id
from sicell.service.datadir import DataDir, check_name
from sicell.service.hub import Hub, Subscription
from sicell.service.plan import plan_dict, read_schedule
from sicell.service.reattach import RunBook
from sicell.service.runviews import RunCache, run_facts
from sicell.service.worker import BoardWorker
from sicell.session.controls import OPS, status_from_dict
from sicell.session.options import SessionOptions

__all__ = ["CONTROL_OPS", "Service"]

log = logging.getLogger("sicell.service")

CONTROL_OPS = (*OPS, "calibrate")
OP_ALIASES = {"continue": "resume"}
LONG_OPS_S = {"start": 300.0, "calibrate": 900.0}  # requests that may run longer, s more
BOARD_EVENT_S = 0.5  # a board's changes are published at most this often ...
BOARD_REFRESH_S = 5.0  # ... and a logging board's at least this often (the record's age)


class Service:
    """See the module doc; ``start()`` and ``close()`` (the boards keep running)."""

    def __init__(
        self,
        data_dir: Path,
        ports: Sequence[str],
        *,
        scan_serial: bool = False,
        alert_command: str | None = None,
        webhook: str | None = None,
        stall_factor: float = 3.0,
        options: SessionOptions | None = None,
        rescan_s: float = 5.0,
        reattach_grace_s: float = 15.0,
    ) -> None:
        self.data = DataDir(Path(data_dir))
        self.ports = list(ports)
        self.scan_serial = scan_serial
        self.stall_factor = stall_factor
        self.options = options or SessionOptions()
        self.rescan_s = rescan_s
        self.reattach_grace_s = reattach_grace_s
        self.hub = Hub()
        self.audit = AuditLog(self.data.audit_path)
        self.alerts = Alerts(
            self.data, self.hub, self.audit, command=alert_command, webhook=webhook
        )
        self.cache = RunCache()
        self._workers: dict[str, BoardWorker] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._dirty: set[BoardWorker] = set()
        self._sent_at: dict[int, float] = {}
        self._starting: set[str] = set()
        self.book = RunBook(self.data)
        self._ticker: threading.Thread | None = None
        self._t0 = 0.0
        self._grace_done = False

    # ---- lifecycle --------------------------------------------------------------------------
    @overload
    def start(self) -> None: ...

    @overload
    def start(
        self, board_id: str, toml_text: str | bytes, name: str, who: str
    ) -> dict[str, Any]: ...

    def start(
        self,
        board_id: str | None = None,
        toml_text: str | bytes | None = None,
        name: str | None = None,
        who: str = "api",
    ) -> dict[str, Any] | None:
        """``start()`` starts the service; ``start(board_id, toml_text, name, who)`` starts a
        run (:meth:`start_run`)."""
        if board_id is not None:
            if toml_text is None or name is None:
                raise UsageError("starting a run needs the schedule's TOML and a run name")
            return self.start_run(board_id, toml_text, name, who)
        self._start_service()
        return None

    def _start_service(self) -> None:
        self.data.create()
        self.data.load_runs()  # a damaged service.json fails the start, not each board
        self._t0 = time.monotonic()
        for port in self.ports:
            self._add(port, *provisional_id(port))
        if self.scan_serial:
            self._rescan()
        self._ticker = threading.Thread(target=self._tick_loop, name="sicell-service", daemon=True)
        self._ticker.start()

    def close(self) -> None:
        """Stop every worker (runs detach: the boards keep running and keep their records)."""
        self._stop.set()
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            w.stop()
        for w in workers:
            w.join(30.0)
        if self._ticker is not None:
            self._ticker.join(5.0)
        self.alerts.wait()

    def __enter__(self) -> Service:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add(self, port: str, board_id: str, alias: str | None = None) -> BoardWorker:
        with self._lock:
            bid, k = board_id, 2
            while bid in self._workers:
                bid, k = f"{board_id}-{k}", k + 1
            w = BoardWorker(self, port, bid, alias)
            self._workers[bid] = w
        w.start()
        return w

    # ---- what the workers ask (WorkerHost) --------------------------------------------------
    def identified(self, worker: BoardWorker, info: BoardInfo) -> None:
        new = info.board_id
        with self._lock:
            if worker.board_id == new:
                return
            other = self._workers.get(new)
            if other is not None and other is not worker:
                worker.message = f"the same board id as {other.port}"
                return
            self._workers.pop(worker.board_id, None)
            worker.board_id = new
            self._workers[new] = worker

    def reattach_plan(self, worker: BoardWorker, info: BoardInfo) -> tuple[str, Path] | None:
        return self.book.plan(info)

    def run_started(self, worker: BoardWorker, run: RunRef) -> None:
        self.book.started(worker.board_id, worker.port, run)

    def run_ended(self, worker: BoardWorker, run: RunRef, note: str | None) -> None:
        self.book.ended(worker.board_id, run, note)

    def committed(self, worker: BoardWorker, run: RunRef, batch: Sequence[Record]) -> None:
        records = self.cache.records(run.db).live(batch)
        if records:
            self.hub.publish(
                {
                    "type": "records",
                    "board_id": worker.board_id,
                    "run": run.name,
                    "records": records,
                }
            )

    def alert(self, worker: BoardWorker, kind: str, text: str, key: str) -> None:
        run = worker.run
        self.alerts.alert(worker.board_id, kind, text, key, run.name if run else None)

    def relative(self, path: Path) -> str:
        return self.data.relative(path)

    def changed(self, worker: BoardWorker) -> None:
        with self._lock:
            self._dirty.add(worker)

    def claim_port(self, worker: BoardWorker, port: str) -> Any:
        from sicell.owner.registry import claim

        def handler(op: str, args: dict[str, Any]) -> dict[str, Any]:
            return self.socket_request(worker.board_id, op, args)

        return claim(port, "serve", handler, board_id=worker.board_id)

    # ---- housekeeping -----------------------------------------------------------------------
    def _tick_loop(self) -> None:
        last_scan = time.monotonic()
        while not self._stop.wait(BOARD_EVENT_S):
            now = time.monotonic()
            try:
                self._tick(now)
                if self.scan_serial and now - last_scan >= self.rescan_s:
                    last_scan = now
                    self._rescan()
            except Exception:  # broad on purpose: the housekeeping must outlive one bad tick
                log.exception("service housekeeping failed")  # (logged with its traceback)

    def _tick(self, now: float) -> None:
        with self._lock:
            workers = list(self._workers.values())
            dirty, self._dirty = self._dirty, set()
        for w in workers:
            w.tick(now)
            due = w.streaming and now - self._sent_at.get(id(w), 0.0) >= BOARD_REFRESH_S
            if w in dirty or due:
                self._sent_at[id(w)] = now
                self.hub.publish({"type": "board", "board": w.board_dict()})
        if not self._grace_done and now - self._t0 >= self.reattach_grace_s:
            self._grace_done = True
            with self._lock:
                now_logging = [w.run.name for w in self._workers.values() if w.run and w.run.active]
            self.book.mark_unattached(now_logging, self.reattach_grace_s)

    def _rescan(self) -> None:
        from sicell.transport import list_boards

        for p in list_boards():
            sn = (p.serial_number or "").lower()
            if not sn:
                continue
            with self._lock:
                w = self._workers.get(sn)
                by_port = any(x.port == p.device for x in self._workers.values())
            if w is not None:
                if w.port != p.device and not by_port:
                    w.move(p.device)
            elif not by_port:
                self._add(p.device, sn)

    # ---- boards -----------------------------------------------------------------------------
    def _worker(self, board_id: str) -> BoardWorker:
        """The worker of ``board_id`` (or of an emulated board's URL id)."""
        with self._lock:
            w = self._workers.get(board_id)
            if w is None:
                w = next((x for x in self._workers.values() if x.alias == board_id), None)
            known = sorted(self._workers)
        if w is None:
            raise UnknownBoardError(
                f"no board {board_id[:80]!r} in this service; known: {', '.join(known) or 'none'}"
            )
        return w

    def boards(self) -> list[dict[str, Any]]:
        with self._lock:
            workers = [self._workers[k] for k in sorted(self._workers)]
        return [w.board_dict() for w in workers]

    def board(self, board_id: str) -> dict[str, Any]:
        return self._worker(board_id).board_dict()

    def _wait(self, fut: Future[dict[str, Any]], op: str, board_id: str) -> dict[str, Any]:
        """The result of a request handed to the board's worker (``owner.server``'s bounds:
        withdrawn when not taken in time; ``start`` and ``calibrate`` may run longer)."""
        from sicell.owner.server import wait_result

        try:
            return wait_result(fut, op)
        except BoardTimeoutError:
            longer = LONG_OPS_S.get(op)
            if longer is None or fut.cancelled():
                raise
        try:
            return fut.result(longer)
        except FutureTimeout:
            raise BoardTimeoutError(
                f"board {board_id} took {op!r} but did not finish it within {longer:g} s"
            ) from None

    def control(
        self, board_id: str, op: str, args: dict[str, Any] | None, who: str
    ) -> dict[str, Any]:
        """Run one of ``CONTROL_OPS`` on the board (by its worker, on its own link); every call
        goes to the audit log. Only ``calibrate`` takes arguments (checked by the worker)."""
        op = OP_ALIASES.get(op, op)
        args = dict(args or {})
        outcome = "refused"
        try:
            if op not in CONTROL_OPS:
                raise UsageError(f"unknown request {op[:40]!r}; expected one of {CONTROL_OPS}")
            w = self._worker(board_id)
            board_id = w.board_id
            fut = w.controls.submit(op, args if op == "calibrate" else {})
            result = self._wait(fut, op, board_id)
            if "status" in result:
                st = status_from_dict(result["status"])
                outcome = f"ok: {st.state_name}"
            else:
                outcome = "ok"
            return result
        except SicellError as e:
            outcome = f"error: {type(e).__name__}: {e}"
            raise
        finally:
            self.audit.write(who, op, board_id, args, outcome)
            with contextlib.suppress(UnknownBoardError):
                self.changed(self._worker(board_id))

    def plan(self, board_id: str, toml_text: str | bytes) -> dict[str, Any]:
        """The checks START would make, the steps with computed currents; starts nothing."""
        w = self._worker(board_id)
        sch = read_schedule(toml_text)
        info = w.info
        if info is None or not w.online:
            raise TransportError(f"board {board_id} is offline: {w.message or 'not found'}")
        st = status_from_dict(self._wait(w.controls.submit("status"), "status", board_id)["status"])
        return plan_dict(sch, info, st, w.port)

    def start_run(
        self, board_id: str, toml_text: str | bytes, name: str, who: str
    ) -> dict[str, Any]:
        """Start the schedule on the board into ``runs/<name>.db``; the run dict (with the
        board dict under ``board``) once the board took START."""
        data = toml_text.encode() if isinstance(toml_text, str) else bytes(toml_text)
        audit = {"name": name, "schedule_sha256": hashlib.sha256(data).hexdigest()}
        outcome = "refused"
        try:
            check_name(name)
            w = self._worker(board_id)
            board_id = w.board_id
            sch = read_schedule(toml_text, source=name)
            with self._lock:
                if name in self._starting:
                    raise RunExistsError(f"a run named {name!r} is starting; choose another name")
                db = self.data.new_db(name)
                self._starting.add(name)
            try:
                fut = w.controls.submit("start", {"schedule": sch, "name": name, "db": db})
                board = self._wait(fut, "start", board_id)
            finally:
                with self._lock:
                    self._starting.discard(name)
            run = board.get("run") or {}
            outcome = f"ok: run {run.get('run_id')}"
            return {**self.run(name), "board": board}
        except SicellError as e:
            outcome = f"error: {type(e).__name__}: {e}"
            raise
        finally:
            self.audit.write(who, "start", board_id, audit, outcome)

    def socket_request(self, board_id: str, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """A request on the board's control socket (``sicell`` commands of the same user)."""
        who = "local socket"
        if op == "start":
            text = args.get("schedule_toml")
            name = args.get("name")
            if not isinstance(text, str) or not isinstance(name, str):
                raise UsageError("start needs schedule_toml and name (strings)")
            return self.start_run(board_id, text, name, who)
        if op == "progress":
            run = args.get("run")
            return self.progress(board_id, run if isinstance(run, str) else None)
        if op == "plan":
            text = args.get("schedule_toml")
            if not isinstance(text, str):
                raise UsageError("plan needs schedule_toml (a string)")
            return self.plan(board_id, text)
        return self.control(board_id, op, args, who)

    def progress(self, board_id: str, run: str | None = None) -> dict[str, Any]:
        """The board dict, and for run ``run``: whether it ended, then its summary lines and
        the exit code ``sicell run`` gives for it."""
        w = self._worker(board_id)
        out: dict[str, Any] = {"board": w.board_dict()}
        if run is None:
            return out
        check_name(run)
        cur, last = w.run, w.last_result
        if cur is not None and cur.name == run and cur.active:
            out["ended"] = False
        elif last is not None and last["run"] == run:
            out.update(ended=True, summary=last["summary"], exit_code=last["exit_code"])
        else:
            out.update(ended=True, **self._stored_summary(run, w.port))
        return out

    def _stored_summary(self, name: str, port: str) -> dict[str, Any]:
        from sicell.session.outcome import run_outcome

        db = self.data.existing_db(name)
        f = run_facts(db)
        oc = run_outcome(db, None, None, None, port)
        lines = [f"run {f['run_id']} on {f['board_id']}: {f['end_state'] or 'unknown'}"]
        if oc.line:
            lines.append(oc.line)
        lines += [f"database: {db}", f"stored: {f['samples']} samples, {f['events']} events"]
        if f["note"]:
            lines.append(str(f["note"]))
        return {"summary": lines, "exit_code": oc.exit_code}

    # ---- runs -------------------------------------------------------------------------------
    def _run_dict(self, name: str, listed: dict[str, str]) -> dict[str, Any]:
        db = self.data.runs / f"{name}.db"
        try:
            d = run_facts(db)
        except StoreError as e:
            return {"name": name, "db": self.data.relative(db), "status": "error", "note": str(e)}
        d["db"] = self.data.relative(db)
        with self._lock:
            active = next((w for w in self._workers.values() if _logs(w, name)), None)
            note = self.book.note(name)
        if note is not None:
            d["note"] = note
        if active is not None:
            d["status"] = "logging"
            p = active.progress()
            d["state"] = p.state if p is not None else "starting"
        else:
            d["state"] = d.get("end_state")
            if d.get("note"):
                d["status"] = "marked"
            elif name in listed:
                d["status"] = "waiting"  # service.json: a board runs it; not attached yet
            elif d.get("ended_at"):
                d["status"] = "ended"
            else:
                d["status"] = "detached"
        return d

    def runs(self) -> list[dict[str, Any]]:
        """Every run database in ``runs/``: board, run id, times, status (logging, waiting,
        marked, ended, detached), the note of a run the service could not reattach."""
        listed = self.book.listed()
        return [self._run_dict(n, listed) for n in self.data.run_names()]

    def run(self, name: str) -> dict[str, Any]:
        self.data.existing_db(name)
        return self._run_dict(name, self.book.listed())

    def records(self, name: str, since_seq: int, limit: int) -> dict[str, Any]:
        """Samples of run ``name`` with seq > ``since_seq`` (at most ``limit``, ≤ 5000) and
        ``next``, the seq to ask from next time."""
        db = self.data.existing_db(name)
        return {"run": name, **self.cache.records(db).records(since_seq, limit)}

    def cycles(self, name: str) -> list[dict[str, Any]]:
        return self.cache.cycles(self.data.existing_db(name))

    def dqdv(self, name: str, cycle: int) -> dict[str, Any]:
        return self.cache.dqdv(self.data.existing_db(name), cycle)

    def report(self, name: str) -> Path:
        db = self.data.existing_db(name)
        return self.cache.report(db, self.data.report_dir(name))

    def subscribe(self) -> Subscription:
        return self.hub.subscribe()


def _logs(w: BoardWorker, name: str) -> bool:
    """Whether ``w`` logs run ``name`` now."""
    return w.run is not None and w.run.active and w.run.name == name
