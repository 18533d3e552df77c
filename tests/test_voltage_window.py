"""The cell-voltage window: written once (firmware/board.json), read by the front end over the
ADS1115's ±2.048 V range and, beyond 15/16 of it, its ±4.096 V range; reported in INFO, and
the host's documented limits."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from sicell.client import Board
from sicell.schedule import DEFAULT_LIMITS
from sicell.schedule.model import documented_limits

from tests.mputil import EMU_MP, FW, MP_DIR, needs_mp, run_mp

BOARD_JSON = FW / "board.json"


@functools.cache
def _heap() -> str:
    """The firmware's 192K plus what the emulator's own modules hold (as a board's launcher
    sizes it)."""
    from sicell.emulator.staging import emulator_heap_overhead

    return str(192 * 1024 + emulator_heap_overhead(EMU_MP, {}))


def _case(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **world: Any) -> Any:
    cfgfile = tmp_path / "emu.json"
    cfgfile.write_text(json.dumps(world))
    monkeypatch.setenv("SICELL_EMU_CONFIG", str(cfgfile))
    monkeypatch.delenv("SICELL_EMU_CTRL", raising=False)
    res = run_mp(MP_DIR / "emu_window.py", case, path=[EMU_MP, FW], cwd=tmp_path, heap=_heap())
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()
    return json.loads(res.stdout.decode().strip().splitlines()[-1])


def test_host_documented_limits_are_board_json(tmp_path: Path) -> None:
    cfg = json.loads(BOARD_JSON.read_text())
    lim = cfg["limits"]
    assert documented_limits(BOARD_JSON) == DEFAULT_LIMITS
    assert (DEFAULT_LIMITS.v_min_v, DEFAULT_LIMITS.v_max_v) == (
        lim["v_min_uV"] / 1e6,
        lim["v_max_uV"] / 1e6,
    )
    assert DEFAULT_LIMITS.compliance_v == lim["compliance_uV"] / 1e6
    assert DEFAULT_LIMITS.ranges_a == tuple(r["full_scale_nA"] / 1e9 for r in cfg["ranges"])
    other = tmp_path / "board.json"  # another figure there, another window here
    other.write_text(json.dumps(dict(cfg, limits=dict(lim, v_min_uV=-1_234_000))))
    assert documented_limits(other).v_min_v == -1.234


@needs_mp
def test_voltage_channel_reads_past_the_fine_full_scale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = _case("reach", tmp_path, monkeypatch)
    assert r["window"] == [-2_400_000, 2_400_000]
    assert r["spans"] == [2_048_000, 4_096_000]  # 62.5 µV and 125 µV per code
    wide = []
    for i_na, v_read, v_true, clipped, raw, is_wide in r["rows"]:
        assert not clipped, (i_na, v_read)
        lsb = 125 if is_wide else 62.5
        # ADC offset <= 60 µV, gain error <= 0.05 %, noise ~22 µV rms, half a code
        assert abs(v_read - v_true) <= 60 + 0.0005 * abs(v_true) + 100 + lsb / 2, (i_na, v_read)
        if is_wide:
            assert raw % 125 == 0  # whole codes of 125 µV
        wide.append(is_wide)
    # 1 V fine; 2.2 V wide (read again there); 1.85 V stays wide (above 7/8 of 2.048 V);
    # 1.7 V is the last wide reading, the next is fine again; -2.2 V wide, and -1 V right after
    # it still wide (the fall is seen on that reading; the next one is fine)
    assert wide == [False, True, True, True, False, True, True]
    assert max(abs(v) for _, v, _, _, _, _ in r["rows"]) > 2_100_000  # past ±2.048 V
    v_read, v_true, clipped, adc_clipped = r["beyond"]
    assert v_true < -2_600_000 and -3_000_000 < v_read < -2_500_000  # bent by the clamps
    assert clipped and not adc_clipped  # inside ±4.096 V, outside the inputs' reach


@needs_mp
def test_window_narrows_to_a_smaller_full_scale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = json.loads(BOARD_JSON.read_text())
    cfg["adc"]["part"] = "ads1219"  # ±2.048 V with its internal reference
    (tmp_path / "board.json").write_text(json.dumps(cfg))
    r = _case("narrow", tmp_path, monkeypatch, adc="ads1219")
    assert r["part"] == "ads1219" and r["span"] == 2_048_000
    edge = 2_048_000 - 2_048_000 // 32
    assert r["window"] == [-edge, edge] == r["limits"]  # what the engine and INFO read


@needs_mp
def test_hello_reports_the_window(tmp_path: Path, rt: Path) -> None:
    url = f"emu://rc?seed=1&board=window-{tmp_path.name[-12:]}&owner=1"
    with Board.open(url, hello_timeout=20.0) as b:
        assert b.info is not None
        assert (b.info.v_min_uv, b.info.v_max_uv) == (-2_400_000, 2_400_000)
        assert b.info.compliance_uv == 4_500_000
    assert (DEFAULT_LIMITS.v_min_v, DEFAULT_LIMITS.v_max_v) == (-2.4, 2.4)
