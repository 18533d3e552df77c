"""One thread per board: the only code that opens its port.

Between runs the worker holds the board open and serves control requests from its queue
(:class:`WorkerControls`), polling STATUS for the dashboard. A ``start`` request closes the
idle link and runs a :class:`~sicell.session.RunSession` on the same thread with the same
queue: the session serves the requests between polls and calls back after each durable batch
(records are broadcast from there, and alerts raised from the batch's events). When the port
cannot be opened the board is offline and the worker tries again with a back-off, answering
requests at once with that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from sicell.client import Board, BoardInfo, Record, Status, state_name
from sicell.errors import (
    BoardBusyError,
    Detached,
    PortOwnedError,
    RunMismatchError,
    SicellError,
    StoreError,
    TransportError,
)
from sicell.progress import Progress
from sicell.service.boardview import BoardDisplay, RunRef, board_dict, progress_from_status
from sicell.service.events import EventWatch
from sicell.session import RunSession, SessionOptions
from sicell.session.controls import ControlRequest, Controls, execute, status_from_dict

__all__ = ["BoardWorker", "WorkerControls", "WorkerHost"]

log = logging.getLogger("sicell.service")

IDLE_STATUS_S = 1.0  # STATUS poll of an idle board (the dashboard's numbers)
OFFLINE_RETRY_S = (0.5, 10.0)  # back-off between tries to open an offline board
WORKER_OPS = ("start", "calibrate")  # answered by the worker itself, not by execute()


class WorkerHost(Protocol):
    """What a worker needs from its service."""

    options: SessionOptions
    stall_factor: float

    def identified(self, worker: BoardWorker, info: BoardInfo) -> None: ...

    def reattach_plan(self, worker: BoardWorker, info: BoardInfo) -> tuple[str, Path] | None: ...

    def run_started(self, worker: BoardWorker, run: RunRef) -> None: ...

    def run_ended(self, worker: BoardWorker, run: RunRef, note: str | None) -> None: ...

    def committed(self, worker: BoardWorker, run: RunRef, batch: Sequence[Record]) -> None: ...

    def alert(self, worker: BoardWorker, kind: str, text: str, key: str) -> None: ...

    def changed(self, worker: BoardWorker) -> None: ...

    def claim_port(self, worker: BoardWorker, port: str) -> Any: ...

    def relative(self, path: Path) -> str: ...


class WorkerControls(Controls):
    """The board's request queue. During a run, ``start``/``calibrate`` are refused here (the
    rest go to the session); ``on_stream`` is called once, the first time a run session asks
    for requests (it streams: START was taken, or the run was reattached)."""

    def __init__(self, refuse_in_run: Callable[[ControlRequest], None]) -> None:
        super().__init__()
        self._refuse_in_run = refuse_in_run
        self.on_stream: Callable[[], None] | None = None

    def pending(self) -> Iterator[ControlRequest]:
        cb, self.on_stream = self.on_stream, None
        if cb is not None:
            cb()
        for req in super().pending():
            if req.op not in WORKER_OPS:
                yield req  # (execute() skips one whose asker gave up)
            elif req.future.set_running_or_notify_cancel():
                self._refuse_in_run(req)


class BoardWorker:
    """The thread that owns one board (see the module doc)."""

    def __init__(
        self, host: WorkerHost, port: str, board_id: str, alias: str | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.board_id = board_id
        self.alias = alias  # another name of the board (an emulated board's URL id)
        self.controls = WorkerControls(self._refuse_in_run)
        self.display = BoardDisplay(self._changed)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"sicell-{board_id}", daemon=True)
        self.online = False
        self.info: BoardInfo | None = None
        self.status: Status | None = None
        self.session: RunSession | None = None
        self.run: RunRef | None = None
        self.streaming = False
        self.watch = EventWatch()
        self.last_result: dict[str, Any] | None = None
        self.message: str | None = None
        self._claim: Any = None
        self._claim_port: str | None = None
        self._start_future: Future[dict[str, Any]] | None = None
        self._moved = False

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end; a run session detaches (the board keeps running)."""
        self._stop.set()
        s = self.session
        if s is not None:
            s.request_stop()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._claim is not None and not self._thread.is_alive():
            self._claim.close()
            self._claim = None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def move(self, port: str) -> None:
        """The board came back under another port name: detach and reattach there."""
        with self._lock:
            if port == self.port:
                return
            log.info("board %s moved from %s to %s", self.board_id, self.port, port)
            self.port = port
            self._moved = True
            s = self.session
        if s is not None:
            s.request_stop()

    def _changed(self) -> None:
        self.host.changed(self)

    # ---- the thread -------------------------------------------------------------------------
    def _main(self) -> None:
        delay = 0.0
        while not self._stop.is_set():
            if delay:
                self._wait_offline(delay)
                if self._stop.is_set():
                    break
            try:
                self._claim_current_port()
                delay = self._serve()
            except (TransportError, PortOwnedError) as e:
                self._offline(str(e))
                delay = min(max(delay * 2, OFFLINE_RETRY_S[0]), OFFLINE_RETRY_S[1])
            except SicellError as e:
                self._offline(str(e))
                delay = OFFLINE_RETRY_S[1]
            except Exception as e:  # broad on purpose: one board's bug must not end the service
                # (logged with its traceback; the board shows it and is tried again later)
                log.exception("board %s: worker failed", self.board_id)
                self._offline(f"bug in sicell: {type(e).__name__}: {e}")
                delay = OFFLINE_RETRY_S[1]
        self.controls.refuse_all(TransportError(f"board {self.board_id}: the service stopped"))

    def _claim_current_port(self) -> None:
        port = self.port
        if self._claim is not None and self._claim_port == port:
            return
        if self._claim is not None:
            self._claim.close()
            self._claim = None
        self._claim = self.host.claim_port(self, port)
        self._claim_port = port

    def _offline(self, why: str) -> None:
        with self._lock:
            self.online = False
            self.message = why
        self._changed()

    def _wait_offline(self, delay: float) -> None:
        end = time.monotonic() + delay
        while not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            req = self.controls.wait(min(left, 0.25))
            if req is not None and req.future.set_running_or_notify_cancel():
                req.future.set_exception(
                    TransportError(f"board {self.board_id} is offline: {self.message}")
                )

    def _serve(self) -> float:
        """Open the board; reattach to its run, or serve it idle until a start."""
        with self._lock:
            self._moved = False
            port = self.port
        board = Board.open(port, hello_timeout=self.host.options.hello_timeout_s)
        try:
            info = board.info
            assert info is not None
            with self._lock:
                self.info = info
                self.online = True
                self.message = None
            self.host.identified(self, info)
            if self._claim is not None:
                self._claim.update(board_id=info.board_id)
            plan = self.host.reattach_plan(self, info)
            if plan is None:
                req = self._idle(board)
                if req is None:
                    return 0.0
        finally:
            board.close()
        if plan is not None:
            return self._run(plan[0], plan[1], None, None)
        assert req is not None
        return self._run(req.args["name"], req.args["db"], req.args["schedule"], req.future)

    def _idle(self, board: Board) -> ControlRequest | None:
        """Serve requests on the idle board; return a start request (None: stopping)."""
        last = 0.0
        while not self._stop.is_set() and not self._moved:
            now = time.monotonic()
            if now - last >= IDLE_STATUS_S:
                self._note_status(board.status())
                last = now
            req = self.controls.wait(0.2)
            if req is None:
                continue
            if req.op in WORKER_OPS and not req.future.set_running_or_notify_cancel():
                continue  # the asker gave up before the worker took it
            if req.op == "start":
                st = self.status
                if st is not None and st.has_run:
                    req.future.set_exception(self._busy(st))
                    continue
                return req
            if req.op == "calibrate":
                from sicell.service.calibrate import calibrate

                try:
                    req.future.set_result(calibrate(board, req.args))
                except SicellError as e:
                    req.future.set_exception(e)
                    if isinstance(e, TransportError):
                        raise
                continue
            result = execute(board, req)
            if result is not None and "status" in result:
                self._note_status(status_from_dict(result["status"]))
        return None

    def _busy(self, st: Status) -> BoardBusyError:
        return BoardBusyError(
            f"board {self.board_id} is {st.state_name} with run {st.run_id:08x}; stop it "
            "first (or let it end)"
        )

    def _note_status(self, st: Status) -> None:
        with self._lock:
            self.status = st
        self._changed()

    def _refuse_in_run(self, req: ControlRequest) -> None:
        """During a run: ``start``/``calibrate`` are answered busy."""
        run = self.run
        what = f"logging run {run.name}" if run is not None else "starting a run"
        req.future.set_exception(
            BoardBusyError(f"board {self.board_id} is {what}; stop it first (or let it end)")
        )

    # ---- a run ------------------------------------------------------------------------------
    def _run(self, name: str, db: Path, sch: Any, future: Future[dict[str, Any]] | None) -> float:
        """Run a new schedule (``sch``) or reattach to the run of ``db`` (``sch`` None);
        returns how long to wait before the board is opened again."""
        resume = sch is None
        kw: dict[str, Any] = {
            # the name a lab gave the board (an emulated board's URL id), else its id: it
            # labels the summary, the report's legends and the export
            "name": self.alias or self.board_id,
            "display": self.display,
            "options": self.host.options,
            "controls": self.controls,
            "on_commit": self._on_commit,
        }
        run_id = 0
        if resume:
            session = RunSession.resume(db, self.port, **kw)
            label, ref, run_id = _stored_run(db)
        else:
            from sicell.session.outcome import has_reference

            kw["extra_meta"] = {"service_run_name": name, "schedule_name": sch.name}
            session = RunSession.new(sch, self.port, db, **kw)
            label, ref = sch.name, has_reference(sch.reference)
        run = RunRef(name, run_id, db, label, None, ref)
        with self._lock:
            self.session = session
            self.run = run
            self.status = None  # (the idle board's: the run's progress shows from now on)
            self.streaming = False
            self._start_future = future
            self.watch = EventWatch()
            self.display.reset()
        self.controls.on_stream = self._streaming
        try:
            summary = session.run()
        except Detached as e:  # the service closes, or the board moved to another port
            self._fail_start(e)
            return 0.0
        except RunMismatchError as e:
            self._fail_start(e)
            self.message = str(e)
            self.host.run_ended(self, replace(run, active=False), f"not reattached: {e}")
            return 0.0
        except TransportError as e:  # the board went before the run streamed
            self._fail_start(e)
            raise
        except SicellError as e:
            streamed = self.streaming
            self._fail_start(e)
            self.message = str(e)
            if resume and not streamed:  # this database cannot be resumed: say so, once
                self.host.run_ended(self, replace(run, active=False), f"not reattached: {e}")
                return 0.0
            if streamed:  # (the disk filled up: the board keeps the records)
                log.warning("board %s: run %s: %s", self.board_id, name, e)
                return OFFLINE_RETRY_S[1]
            return 0.0
        except BaseException as e:
            self._fail_start(e)
            raise
        else:
            outcome = summary.outcome
            self.last_result = {
                "run": name,
                "summary": summary.lines(),
                "exit_code": outcome.exit_code if outcome is not None else 0,
                "state": summary.state,
            }
        finally:
            self.controls.on_stream = None
            with self._lock:
                self.session = None
                self.streaming = False
                if self.run is not None:
                    self.run = replace(self.run, active=False)
            self._changed()
        self.host.run_ended(self, replace(self.run or run, active=False), None)
        return 0.0

    def _fail_start(self, e: BaseException) -> None:
        fut, self._start_future = self._start_future, None
        if fut is not None and not fut.done():
            fut.set_exception(e)
        if not self.streaming:
            with self._lock:
                self.run = None

    def _streaming(self) -> None:
        """The session streams: START was taken (or the run was reattached)."""
        s = self.session
        if s is None or self.run is None:
            return
        started = None
        if s.store is not None:
            v = s.store.meta().get("started_at")
            started = v if isinstance(v, str) else None
        if self.display.progress is None and s.book.board_state is not None:
            self.display.progress = Progress(self.board_id, state=state_name(s.book.board_state))
        with self._lock:
            self.run = replace(self.run, run_id=s.run_id, started_at=started)
            self.streaming = True
            self.watch.begin(s, time.monotonic())
            run = self.run
        self.host.run_started(self, run)
        fut, self._start_future = self._start_future, None
        if fut is not None and not fut.done():
            fut.set_result(self.board_dict())
        self._changed()

    def _on_commit(self, batch: Sequence[Record]) -> None:
        run = self.run
        if run is None:
            return
        for kind, text, key in self.watch.committed(batch, run.name, time.monotonic()):
            self.host.alert(self, kind, text, key)
        try:
            self.host.committed(self, run, batch)
        except StoreError as e:  # a reader's failure must not stop the logging
            log.warning("board %s: records not broadcast: %s", self.board_id, e)
        self._changed()

    # ---- what the service asks --------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Periodic checks from the service's housekeeping thread (a stalled board)."""
        run = self.run
        p = self.display.progress
        if run is None or not self.streaming or p is None:
            return
        hit = self.watch.stalled(now, p, run.name, self.host.stall_factor)
        if hit is not None:
            self.host.alert(self, *hit)
            self._changed()

    @property
    def reconnecting(self) -> bool:
        """The run's link was lost and the session is opening the port again (its board is
        gone mid-run, not at the run's end or at a detach)."""
        s = self.session
        return (
            s is not None
            and self.streaming
            and s.board is None
            and not s.book.finished()
            and not self._stop.is_set()
        )

    def progress(self) -> Progress | None:
        """The numbers to show: the run's progress, or STATUS between runs."""
        with self._lock:
            if self.session is not None:
                return self.display.progress or Progress(self.board_id)  # (state "starting")
            st = self.status
            last = self.display.progress
            run = self.run
        if st is None:
            return last
        p = progress_from_status(self.board_id, st)
        if last is not None and run is not None and st.run_id == run.run_id:
            # the run ended: its last figures, with the state and the meter now
            return replace(last, state=p.state, voltage_v=p.voltage_v, current_a=p.current_a)
        return p

    def board_dict(self) -> dict[str, Any]:
        p = self.progress()
        run = self.run
        state = p.state if p is not None else "unknown"
        badges = self.watch.badges(state)
        if self.reconnecting:
            badges.append(("reconnecting", f"link lost; reconnecting to {self.port}"))
        age = self.watch.age(time.monotonic()) if self.streaming else None
        return board_dict(
            board_id=self.board_id,
            alias=self.alias,
            port=self.port,
            online=self.online,
            progress=p,
            run=run,
            rel_db=self.host.relative(run.db) if run is not None else "",
            last_record_age_s=age,
            badges=badges,
            message=self.message or self.display.message,
            cv_phase=self.watch.cv_phase,
        )


def _stored_run(db: Path) -> tuple[str, bool, int]:
    """(schedule name, has a reference, run id) of a stored run."""
    from sicell.service.runviews import run_facts

    try:
        facts = run_facts(db)
    except StoreError:
        return "?", False, 0
    rid = facts.get("run_id")
    return (
        str(facts.get("schedule") or "?"),
        bool(facts.get("reference")),
        int(rid, 16) if isinstance(rid, str) else 0,
    )
