"""The front end and the emulated board: Frontend on the emulated bench (calibration,
autorange, safe state, calibration file), virtual time, watchdog and brown-out resets
through emuboot and its control channel.

Frontend cases run tests/mp/emu_frontend.py under the MicroPython unix port (heap 192K);
board cases run the real emuboot.py with a stand-in main.py (tests/mp/boardmain).
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.mputil import ROOT, mp_argv, mp_env, run_mp

EMU = ROOT / "host" / "sicell" / "emulator" / "mp"
FW = ROOT / "firmware"
MP = ROOT / "tests" / "mp"
BOARDMAIN = MP / "boardmain"


def run_case(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **cfg: Any
) -> dict[str, Any]:
    cfgfile = tmp_path / "emu.json"
    cfgfile.write_text(json.dumps(cfg))
    monkeypatch.setenv("SICELL_EMU_CONFIG", str(cfgfile))
    monkeypatch.delenv("SICELL_EMU_CTRL", raising=False)
    res = run_mp(MP / "emu_frontend.py", case, path=[EMU, FW], cwd=tmp_path)
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()
    out: dict[str, Any] = {}
    for line in res.stdout.decode().splitlines():
        if line.startswith("{"):
            out.update(json.loads(line))
    return out


# -- Frontend on the emulated bench ------------------------------------------------------


def test_set_current_each_range_before_and_after_two_point_calibration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = run_case("calibrate", tmp_path, monkeypatch)
    assert r["status"] == "missing"
    worst_before = 0.0
    for rng, fs in enumerate(r["fs"]):
        for want, _cmd, meas, true, v_meas, v_true, at in r[f"before{rng}"]:
            assert at == rng
            # the model's errors: stage gain <= 0.4 %, offset <= 0.2 % FS + 5 nA, sense
            # resistor 0.1 %, ADC 0.05 % + 60 uV, DAC quantisation
            assert abs(true - want) <= 0.007 * fs, (rng, want, true)
            assert abs(meas - true) <= 0.003 * fs, (rng, want, meas, true)
            assert abs(v_meas - v_true) <= 1500
            worst_before = max(worst_before, abs(meas - want) / fs)
        for want, cmd, meas, true, v_meas, v_true, at in r[f"after{rng}"]:
            assert at == rng
            assert abs(meas - want) <= 0.001 * fs, (rng, want, meas)  # reads back the set point
            assert abs(true - want) <= 0.001 * fs, (rng, want, true)  # and that flows
            assert abs(cmd - true) <= 0.0005 * fs  # set_current's return is what flows
            assert abs(v_meas - v_true) <= 300
        for _off, gain in r[f"cal{rng}"]:
            assert abs(gain - 1_000_000) < 6000
    assert worst_before > 0.0015  # calibration had something to correct
    saved = json.loads(r["saved"])
    assert saved["format"] == "sicell-cal" and saved["n_ranges"] == 4
    assert saved["cal"][3] == r["cal3"]


def test_calibration_file_round_trip_and_corrupt_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = run_case("calfile", tmp_path, monkeypatch)
    assert r["missing"] == ["missing", True]
    assert r["files"] == ["calibration.json"]  # the temp file was renamed over it
    assert r["loaded"] == [
        "ok",
        [-123, 1001234],
        [45, 998000],
        [-6789, 1003000],
        [0, 1_000_000],
    ]
    assert len(r["corrupt"]) == 5
    for status, is_default, cal, err in r["corrupt"]:
        assert status == "corrupt" and is_default and cal == [0, 1_000_000] and err
    assert "1200000" in r["gain_limit"]


def test_autorange_select_step_up_down_with_hysteresis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = run_case("autorange", tmp_path, monkeypatch)
    assert r["select"] == [
        [5000, 0],
        [9000, 0],  # 90 % of 10 uA still fits
        [9500, 1],
        [50000, 1],
        [95000, 2],
        [500000, 2],
        [2000000, 3],
        [9000000, 3],
        [-8000, 0],
        [0, 0],
    ]
    seq = r["seq"]
    assert [s[0] for s in seq[:3]] == [2, 2, 2] and not any(s[2] for s in seq[:3])
    assert all(abs(s[1] - 800000) < 8000 for s in seq[:3])
    # compliance-limited (1 Mohm load): small current but the set point pins range 2
    assert [s[0] for s in seq[3:6]] == [2, 2, 2] and not any(s[2] for s in seq[3:6])
    # set point gone: one range down per measure() until range 0
    assert [s[0] for s in seq[6:]] == [1, 0, 0, 0]
    assert [s[2] for s in seq[6:]] == [True, True, False, False]
    assert r["overshoot"][0] is True and r["overshoot"][1] == 1  # 96 % FS -> up
    assert r["after_up"][:2] == [False, 1]  # 9.6 % of the next range: no step back down
    assert "10000001" in r["too_big"] and "10000000" in r["too_big"]
    assert "200000" in r["manual_too_big"]


def test_safe_opens_relay_and_zeroes_dac(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = run_case("safe", tmp_path, monkeypatch)
    assert r["init_relay"] is False and r["init_dac"] == 2048
    assert abs(r["flowing"] + 4_000_000) < 40_000 and r["dac_on"] != 2048
    assert r["after"] == [False, 2048, 0, False]
    assert r["dead_bus"] == [True, False]  # I2C dead: no exception, relay still opens


def test_range_gpios_none_two_and_compliance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = run_case("range_gpio", tmp_path, monkeypatch)
    assert abs(r["one"] - 500_000) < 5_000
    assert r["none"][0] == 0  # no range selected: the current path is open
    assert abs(r["none"][1]) < 150  # ADC offset only (1 uV = 1 nA on the 1 mA range)
    assert abs(r["two"] - 5_500_000) < 60_000  # 1 k || 100 R: Vin / R_parallel
    i_a, v, clipped = r["compliance"]
    assert i_a == pytest.approx(4.5 / (1e6 + 1e3), rel=1e-3)  # output on the 4.5 V rail
    assert v == pytest.approx(-4.4955, abs=1e-3) and clipped


def test_alternative_parts_ads1219_dac8571(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = json.loads((FW / "board.json").read_text())
    cfg["adc"]["part"] = "ads1219"
    cfg["dac"]["part"] = "dac8571"
    (tmp_path / "board.json").write_text(json.dumps(cfg))  # the board's own copy wins
    r = run_case("alt_parts", tmp_path, monkeypatch, adc="ads1219", dac="dac8571")
    assert r["parts"] == ["ads1219", "dac8571"]
    for want, cmd, meas, true, v_meas, v_true, rng in r["rows"]:
        fs = [10000, 100000, 1000000, 10000000][rng]
        assert abs(cmd - want) <= fs / 32768 + 1  # 16-bit DAC quantisation
        assert abs(true - want) <= 0.007 * fs
        assert abs(meas - true) <= 0.003 * fs
        assert abs(v_meas - v_true) <= 500


def test_rc_cell_charged_1ma_for_1s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = run_case("rc_charge", tmp_path, monkeypatch)
    # 1 mF, no leak: dV = -I t / C = -1.000 V (+- the uncalibrated stage error)
    assert r["on_s"] == pytest.approx(1.0, abs=0.01)
    assert r["rest"] == pytest.approx(-1_000_000, rel=0.015)
    assert abs(r["rest"] - r["true_rest"]) < 1500
    assert r["i_dmm"] == 0  # relay open
    v, i, _ = r["under"]
    assert v == pytest.approx(r["rest"] - i * 1e-9 * 250 * 1e6, abs=3000)  # I*R_series


def test_frontend_conversion_time_on_emulated_chips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record_property: Any
) -> None:
    r = run_case("bench", tmp_path, monkeypatch)
    for key in ("measure", "set_current", "both", "hour_1s_ticks_wall_ms", "mem_free"):
        record_property(key, r[key])
    # Virtual time is deterministic; wall-clock speed is a benchmark (bench/bench_tick.py).
    _wall_us, virt_us = r["measure"]
    assert 2 * 1163 < virt_us < 4000  # two 860 SPS conversions plus bus time


# -- emuboot: virtual time, resets, control channel ---------------------------------------


def boot_env(tmp_path: Path, mode: str, **cfg: Any) -> dict[str, str]:
    cfgfile = tmp_path / "emu.json"
    cfgfile.write_text(json.dumps(cfg))
    env = mp_env((EMU, BOARDMAIN, FW), SICELL_EMU_CONFIG=str(cfgfile), SICELL_TEST_MAIN=mode)
    env.pop("SICELL_EMU_CTRL", None)
    return env


# The emulator's own modules share the interpreter's heap (~75 KB, more after a reset), so like
# the launcher, give the stand-in firmware a Pico-sized budget on top of that: 200K alone ran
# out of memory at a boot depending on path lengths in the checkout.
EMUBOOT_HEAP = "300K"


def emuboot(tmp_path: Path, mode: str, **cfg: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        mp_argv(EMU / "emuboot.py", heap=EMUBOOT_HEAP),
        env=boot_env(tmp_path, mode, **cfg),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(s) for s in text.splitlines() if s.startswith("{")]


def test_virtual_time_hour_sleep(tmp_path: Path) -> None:
    res = emuboot(tmp_path, "sleep")
    assert res.returncode == 0, res.stderr
    (out,) = lines(res.stdout)
    assert out["slept_ms"] == 3_600_000
    # ~0.1 mA into R_s + R_p = 1250 ohm (tau = 1 s, settled): -0.125 V +- stage errors
    assert out["v"] == pytest.approx(-0.125, rel=0.03)
    assert "boot 1 cause=PWRON_RESET" in res.stderr
    assert "exit 0 (main returned)" in res.stderr


def test_watchdog_expiry_reboots_with_wdt_reset_and_relay_open(tmp_path: Path) -> None:
    res = emuboot(tmp_path, "wdt", cell="resistor", cell_overrides={"r_ohm": 100.0})
    assert res.returncode == 0, res.stderr
    out = lines(res.stdout)
    before = next(o for o in out if "before" in o)
    after = next(o for o in out if "after" in o)
    assert before["cause"] == 1 and before["before"]["relay"] is True
    assert abs(before["before"]["i_nA"] - 2_000_000) < 20_000
    assert after["boot"] == 2 and after["cause"] == 3  # machine.WDT_RESET
    assert after["after"]["relay"] is False and after["after"]["i_nA"] == 0
    # the watchdog (1000 ms) was started right after boot and never fed
    assert 1_000_000 <= after["t"] <= 1_010_000
    assert "reset cause=WDT_RESET (watchdog expired)" in res.stderr


def test_uncaught_exception_exits_1_with_traceback(tmp_path: Path) -> None:
    res = emuboot(tmp_path, "crash")
    assert res.returncode == 1
    assert "RuntimeError: firmware bug" in res.stderr


def test_control_channel_brownout_freeze_reset(tmp_path: Path) -> None:
    fifo = tmp_path / "ctrl"
    os.mkfifo(fifo)
    env = boot_env(tmp_path, "ctrl", cell="rc", max_boots=4)
    env["SICELL_EMU_CTRL"] = str(fifo)
    proc = subprocess.Popen(
        mp_argv(EMU / "emuboot.py", heap=EMUBOOT_HEAP),
        env=env,
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)

    def read_until(key: str) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            if not sel.select(timeout=1):
                continue
            line = proc.stdout.readline()
            assert line, "emulator ended early"
            got.append(json.loads(line))
            if key in got[-1]:
                return got
        raise AssertionError("timeout waiting for " + key)

    def command(cmd: str) -> None:
        with open(fifo, "w") as f:
            f.write(cmd + "\n")
        assert proc.stdin is not None
        proc.stdin.write("\n")  # let the stand-in main go on (it waits in real time)
        proc.stdin.flush()

    try:
        boot1 = read_until("ready")
        assert boot1[0]["cause"] == 1 and boot1[0]["boot_state"]["relay"] is False
        ready1 = boot1[-1]
        assert ready1["ready"]["relay"] is True
        assert abs(ready1["ready"]["i_nA"] + 3_000_000) < 30_000

        command("brownout 2000")
        boot2 = read_until("ready")
        st = boot2[0]
        assert st["boot"] == 2 and st["cause"] == 1  # power-on reset after the brown-out
        assert st["boot_state"]["relay"] is False and st["boot_state"]["i_nA"] == 0
        assert st["t"] >= ready1["t"] + 2_000_000

        command("freeze 5000")  # firmware stops; the 2 s watchdog bites
        boot3 = read_until("ready")
        assert boot3[0]["boot"] == 3 and boot3[0]["cause"] == 3
        assert boot3[0]["boot_state"]["relay"] is False
        assert 2_000_000 <= boot3[0]["t"] - boot2[0]["t"] <= 2_200_000  # WDT started at boot

        command("reset")
        boot4 = read_until("ready")
        assert boot4[0]["boot"] == 4 and boot4[0]["cause"] == 5  # SOFT_RESET

        command("quit")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sel.close()
    assert proc.stderr is not None
    err = proc.stderr.read()
    for s in (
        "ctrl brownout 2000",
        "reset cause=PWRON_RESET (brownout 2000 ms)",
        "reset cause=WDT_RESET",
        "reset cause=SOFT_RESET",
        "exit 0 (control quit)",
    ):
        assert s in err, err


def test_heap_left_for_the_firmware(tmp_path: Path) -> None:
    res = emuboot(tmp_path, "sleep", heap_info=True)
    assert res.returncode == 0, res.stderr
    free = int(res.stderr.split("heap free=")[1].split()[0])
    assert free > 100_000  # of 200K, after the emulator (cell, chips, clock) is loaded
