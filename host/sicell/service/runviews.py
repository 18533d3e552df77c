"""Reading the service's runs: their facts, records by seq, cycles, dQ/dV and a report.

Everything here only reads run databases (read-only connections, safe beside the session that
writes them). Records carry the cycle model's cycle (first lithiation = 1) and half-cycle
capacity, which :class:`RunRecords` computes incrementally from the run's first sample on
(:mod:`sicell.cyclemodel`, the rule every view uses).
"""

from __future__ import annotations

import bisect
import json
import sqlite3
import threading
import tomllib
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sicell import schema
from sicell import store as store_mod
from sicell.client import Record
from sicell.cyclemodel import CycleModel
from sicell.emulator.registry import write_json_atomic
from sicell.errors import StoreError, UsageError
from sicell.session.outcome import has_reference
from sicell.units import Reference

__all__ = ["RunCache", "RunRecords", "run_facts", "thin"]

MAX_LIMIT = 5000
LIVE_POINTS = 100  # samples per broadcast batch, at most


def _ref_in_meta(meta: dict[str, Any]) -> tuple[bool, float]:
    name = str(meta.get("reference_electrode") or "")
    off = meta.get("reference_offset_v")
    offset = float(off) if isinstance(off, int | float) else 0.0
    return has_reference(Reference(name, offset)), offset


def _schedule_name(meta: dict[str, Any]) -> str | None:
    name = meta.get("schedule_name")
    if isinstance(name, str):
        return name
    text = meta.get("schedule_toml")
    if isinstance(text, str):
        try:
            doc = tomllib.loads(text.lstrip("\ufeff"))
        except tomllib.TOMLDecodeError:
            return None
        n = doc.get("name")
        return n if isinstance(n, str) else None
    return None


def run_facts(db: Path) -> dict[str, Any]:
    """What a run database says about its run (read-only): board, run id, times, end state,
    the service's note, the stored extent."""
    try:
        con = schema.open_run_db(db)
        try:
            meta = schema.read_meta(con)
        finally:
            con.close()
        ext = store_mod.read_extent(db)
    except (sqlite3.Error, OSError) as e:
        raise StoreError(f"{db}: cannot read ({e})") from e
    rid = meta.get("run_id")
    reference, _offset = _ref_in_meta(meta)
    return {
        "name": db.stem,
        "board_id": meta.get("board_id"),
        "run_id": f"{rid:08x}" if isinstance(rid, int) else None,
        "schedule": _schedule_name(meta),
        "reference": reference,
        "started_at": meta.get("started_at"),
        "ended_at": meta.get("ended_at"),
        "end_state": meta.get("end_state"),
        "note": meta.get("service_note"),
        "samples": ext.samples,
        "events": ext.events,
        "last_seq": ext.last_seq,
        "last_t_s": ext.last_t_s,
    }


def thin(items: Sequence[Any], most: int = LIVE_POINTS) -> list[Any]:
    """At most ``most`` of ``items``, evenly spread, the last one always kept."""
    n = len(items)
    if n <= most:
        return list(items)
    step = n / most
    picked = [items[int(k * step)] for k in range(most - 1)]
    picked.append(items[-1])
    return picked


class RunRecords:
    """One run's samples as the API serves them, with the cycle model's cycle and half-cycle
    capacity per sample (computed once, from the first sample on)."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._model: CycleModel | None = None
        self._seq = array("q")
        self._cycle = array("l")
        self._q = array("d")
        self.reference = False
        self.offset_v = 0.0

    def _catch_up(self, con: sqlite3.Connection) -> None:
        if self._model is None:
            steps = {
                int(i): (str(k), None if c is None else float(c))
                for i, k, c in con.execute("SELECT idx, kind, current_a FROM steps")
            }
            self._model = CycleModel(steps)
            self.reference, self.offset_v = _ref_in_meta(schema.read_meta(con))
        last = self._seq[-1] if self._seq else -(2**63)
        rows = con.execute(
            "SELECT seq, step, cycle, flags, charge_ah FROM samples WHERE seq > ? ORDER BY seq",
            (last,),
        )
        m = self._model
        for seq, step, cyc, flags, q in rows:
            m.add(int(step), int(cyc), int(flags), float(q))
            self._seq.append(int(seq))
            self._cycle.append(m.cycle)
            self._q.append(m.half_cycle_ah)

    def _connect(self) -> sqlite3.Connection:
        try:
            return schema.connect_readonly(self.db)
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"{self.db}: cannot read ({e})") from e

    def _at(self, seq: int) -> tuple[int | None, float | None]:
        k = bisect.bisect_left(self._seq, seq)
        if k < len(self._seq) and self._seq[k] == seq:
            return self._cycle[k], self._q[k]
        return None, None

    def records(self, since_seq: int, limit: int) -> dict[str, Any]:
        """Samples with seq > ``since_seq`` (at most ``limit``) and the seq to ask from next."""
        limit = max(1, min(int(limit), MAX_LIMIT))
        with self._lock:
            con = self._connect()
            try:
                self._catch_up(con)
                rows = con.execute(
                    "SELECT seq, t_s, voltage_v, we_v, current_a, step FROM samples "
                    "WHERE seq > ? ORDER BY seq LIMIT ?",
                    (int(since_seq), limit),
                ).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"{self.db}: cannot read ({e})") from e
            finally:
                con.close()
            out = []
            for seq, t, v, we, i, step in rows:
                cyc, q = self._at(int(seq))
                out.append(self._row(int(seq), t, v, we, i, q, int(step), cyc))
        nxt = out[-1]["seq"] if out else int(since_seq)
        return {"records": out, "next": nxt}

    def _row(
        self,
        seq: int,
        t: float,
        v: float,
        e: float,
        i: float,
        q: float | None,
        step: int,
        cycle: int | None,
    ) -> dict[str, Any]:
        return {
            "seq": seq,
            "t_s": t,
            "v": v,
            "e": e if self.reference else None,
            "i": i,
            "q": q,
            "step": step,
            "cycle": cycle,
        }

    def live(self, batch: Sequence[Record]) -> list[dict[str, Any]]:
        """The committed ``batch``'s samples, thinned, in the shape of :meth:`records`."""
        samples = [r for r in batch if r.is_sample]
        if not samples:
            return []
        with self._lock:
            con = self._connect()
            try:
                self._catch_up(con)
            except sqlite3.Error as e:
                raise StoreError(f"{self.db}: cannot read ({e})") from e
            finally:
                con.close()
            out = []
            for r in thin(samples):
                s = store_mod.SampleRecord.from_wire(r.seq, r.values)
                cyc, q = self._at(s.seq)
                we = s.voltage_v + self.offset_v
                out.append(self._row(s.seq, s.t_s, s.voltage_v, we, s.current_a, q, s.step, cyc))
        return out


class RunCache:
    """Per-run readers kept between calls: records, cycles, dQ/dV, reports (each recomputed
    when the run has grown)."""

    def __init__(self, keep: int = 128) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._records: OrderedDict[Path, RunRecords] = OrderedDict()
        self._cycles: dict[Path, tuple[Any, list[dict[str, Any]]]] = {}
        self._runs: OrderedDict[Path, tuple[Any, Any]] = OrderedDict()
        self._report_lock = threading.Lock()

    def records(self, db: Path) -> RunRecords:
        with self._lock:
            rr = self._records.get(db)
            if rr is None:
                rr = self._records[db] = RunRecords(db)
            self._records.move_to_end(db)
            while len(self._records) > self.keep:
                self._records.popitem(last=False)
            return rr

    @staticmethod
    def _stamp(db: Path) -> tuple[int, int, int | None]:
        ext = store_mod.read_extent(db)
        return ext.samples, ext.events, ext.last_seq

    def cycles(self, db: Path) -> list[dict[str, Any]]:
        """The run's complete cycles: capacities (Ah) and Coulombic efficiency."""
        from sicell.session.summary import cycle_capacities

        stamp = self._stamp(db)
        with self._lock:
            hit = self._cycles.get(db)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        caps, error = cycle_capacities(db)
        if error is not None:
            raise StoreError(f"{db.name}: no cycle table ({error})")
        out = [
            {"cycle": c.cycle, "lith_ah": c.lith_ah, "delith_ah": c.delith_ah, "ce": c.ce}
            for c in caps
        ]
        with self._lock:
            self._cycles[db] = (stamp, out)
        return out

    def _run(self, db: Path) -> Any:
        from sicell.rundata import load_run

        stamp = self._stamp(db)
        with self._lock:
            hit = self._runs.get(db)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        run = load_run(db)
        with self._lock:
            self._runs[db] = (stamp, run)
            while len(self._runs) > 4:
                self._runs.popitem(last=False)
        return run

    def dqdv(self, db: Path, cycle: int) -> dict[str, Any]:
        """dQ/dV of ``cycle``'s half-cycles against E vs Li (cell volts without a reference):
        per half-cycle in ``curves``, and joined (a null between them) in ``v``/``dqdv``."""
        from sicell import analysis

        if not isinstance(cycle, int) or isinstance(cycle, bool) or cycle < 0:
            raise UsageError(f"bad cycle {cycle!r}: expected a whole number >= 0")
        run = self._run(db)
        curves = analysis.dqdv_curves(run, [cycle])
        v: list[float | None] = []
        y: list[float | None] = []
        per = []
        for c in curves:
            xs = [float(x) for x in c.potential_v]
            ys = [float(x) for x in c.dqdv]
            per.append({"kind": c.kind, "v": xs, "dqdv": ys})
            if v:
                v.append(None)
                y.append(None)
            v.extend(xs)
            y.extend(ys)
        unit = curves[0].unit if curves else None
        return {"cycle": cycle, "unit": unit, "v": v, "dqdv": y, "curves": per}

    def report(self, db: Path, out: Path) -> Path:
        """``out/report.html`` for the run, made again only when the run has grown."""
        from sicell.report import write_report

        with self._report_lock:
            stamp = list(self._stamp(db))
            mark = out / ".sicell-source.json"
            html = out / "report.html"
            try:
                same = json.loads(mark.read_text()).get("stamp") == stamp and html.is_file()
            except (OSError, ValueError, AttributeError):  # none yet, or not ours: make it
                same = False
            if same:
                return html
            path = write_report([db], out, title=f"sicell report: {db.stem}")
            write_json_atomic(mark, {"stamp": stamp})
            return path
