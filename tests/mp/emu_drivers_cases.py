# Driver-against-chip-model cases, imported by emu_drivers.py once the emulator and the
# driver under test are loaded.

import time

import machine
import world

W = world.get()


def bus():
    return machine.I2C(0, sda=machine.Pin(4), scl=machine.Pin(5), freq=400000)


def rest_cell(v):
    # an ideal capacitor charged to v, relay open: the ADC sees exactly v across AIN0-AIN1
    W.set_cell("rc", v0=v, r_parallel=0, c_farad=1.0, r_series=10.0)


def err_no(f):
    try:
        f()
    except OSError as e:
        return e.errno if hasattr(e, "errno") else e.args[0]
    return None


def case_ads1115_config():
    from drivers.ads1115 import ADS1115

    a = ADS1115(bus(), 0x48, 860)
    out = {"reset": a.read_reg(1)}
    words = [0x0583, 0x3E03, 0x72E3, 0x4D61, 0x1F1F]
    back = []
    for w in words:
        a.write_reg(1, w)
        back.append(a.read_reg(1) & 0x7FFF)
        time.sleep_ms(200)
    out["written"] = words
    out["read"] = back
    a.write_reg(2, 0x1234)
    a.write_reg(3, 0xFEDC)
    out["lo"] = a.read_reg(2)
    out["hi"] = a.read_reg(3)
    # driver-built words for each PGA / MUX / DR reach the chip bit for bit
    built = []
    for pga in (6144, 4096, 2048, 1024, 512, 256):
        for mux in ("AIN0-AIN1", "AIN2-AIN3", "AIN3-GND"):
            a.setup(0, mux, pga)
            a.start(0)
            built.append([a.config_word(mux, pga) & 0x7FFF, W.adc.config])
            time.sleep_ms(2)
    out["built"] = built
    out["bad_pointer"] = err_no(lambda: a.i2c.writeto(0x48, b"\x04"))
    out["write_conv"] = err_no(lambda: a.i2c.writeto(0x48, b"\x00\x12\x34"))
    out["two_bytes"] = err_no(lambda: a.i2c.writeto(0x48, b"\x01\x85"))
    out["absent"] = err_no(lambda: a.i2c.writeto(0x49, b"\x01"))
    out["scan"] = bus().scan()
    out["wrong_pins"] = machine.I2C(0, sda=machine.Pin(8), scl=machine.Pin(9)).scan()
    return out


def case_ads1115_pga():
    from drivers.ads1115 import ADS1115

    a = ADS1115(bus(), 0x48, 860)
    out = {}
    for v in (0.4, -0.4, 1.9):
        rest_cell(v)
        row = []
        for pga in (6144, 4096, 2048, 1024, 512, 256):
            a.setup(0, "AIN0-AIN1", pga)
            uv = a.read_uv(0)
            row.append([pga, uv, a.code, a.clipped])
        out["%.1f" % v] = row
    return out


def case_ads1115_timing():
    from drivers.ads1115 import ADS1115, DATA_RATES

    a = ADS1115(bus(), 0x48, 860)
    rest_cell(0.25)
    out = {"osc": W.adc.osc, "rates": []}
    for k, dr in enumerate(DATA_RATES):
        w = 0x8000 | (0 << 12) | (2 << 9) | 0x0100 | (k << 5) | 3
        a.write_reg(1, w)
        t0 = W.now
        polls = 0
        while not (a.read_reg(1) & 0x8000):
            polls += 1
            time.sleep_us(5)
        out["rates"].append([dr, W.now - t0, polls])
    # reading before OS=1 returns the previous result
    a.setup(0, "AIN0-AIN1", 2048)
    a.setup(1, "AIN2-AIN3", 2048)
    first = a.read_uv(0)  # 0.25 V
    a.start(1)  # sense channel: 0 V (relay open)
    early = a.result()
    time.sleep_ms(5)
    late = a.result()
    out["prev"] = [first, early, late]
    # the driver's own read waits long enough even at the slowest rate
    a2 = ADS1115(bus(), 0x48, 8)
    a2.setup(0, "AIN0-AIN1", 2048)
    t0 = W.now
    uv = a2.read_uv(0)
    out["slow"] = [uv, W.now - t0]
    return out


def case_ads1115_wrong():
    from drivers.ads1115 import ADS1115

    rest_cell(0.4)
    a = ADS1115(bus(), 0x48, 860)
    a.setup(0, "AIN0-AIN1", 2048)
    good = a.read_uv(0)
    a.setup(0, "AIN0-GND", 2048)  # wrong MUX: single-ended working electrode
    wrong_mux = [a.read_uv(0), a.clipped]
    a.setup(0, "AIN1-AIN3", 2048)  # wrong pair
    wrong_pair = a.read_uv(0)
    # a driver that builds the config with MUX one bit too low (bits 11:9 instead of 14:12)
    w = (0x8000 | (0 << 12) | (3 << 9) | 0x0100 | (7 << 5) | 3) | (4 << 11)
    a.write_reg(1, w)
    time.sleep_ms(3)
    c = a.result()
    # single shot bit forgotten: MODE=0 continuous, the driver waits for OS forever
    a.write_reg(1, (0 << 12) | (2 << 9) | (7 << 5) | 3)
    time.sleep_ms(3)
    cont_os = a.read_reg(1) >> 15
    return {
        "good": good,
        "wrong_mux": wrong_mux,
        "wrong_pair": wrong_pair,
        "shifted_code": c,
        "continuous_os": cont_os,
    }


def case_ads1219():
    # run with SICELL_EMU_CONFIG {"adc": "ads1219"}
    from drivers.ads1219 import ADS1219, DATA_RATES

    W.set_cell("rc", v0=0.4, r_parallel=0, c_farad=1.0, r_series=10.0)

    i2c = bus()
    a = ADS1219(i2c, 0x40, 1000)
    out = {}
    back = []
    for c in (0x00, 0x3C, 0x5A, 0xF0, 0x1C):
        i2c.writeto(0x40, bytes((0x40, c)))
        back.append(a.read_config())
    out["config"] = back
    rows = []
    for v in (0.4, -0.4, 0.6):
        W.set_cell("rc", v0=v, r_parallel=0, c_farad=1.0, r_series=10.0)
        for gain in (1, 4):
            a.setup(0, "AIN0-AIN1", gain)
            uv = a.read_uv(0)
            rows.append([v, gain, uv, a.code, a.clipped])
    out["conv"] = rows
    # timing and DRDY
    times = []
    for k, dr in enumerate(DATA_RATES):
        i2c.writeto(0x40, bytes((0x40, k << 2)))
        a._cur = -1
        a.command(0x08)
        t0 = W.now
        early = a.ready()
        while not a.ready():
            time.sleep_us(20)
        times.append([dr, W.now - t0, early])
        a.result()
    out["times"] = times
    out["drdy_after_read"] = a.ready()
    out["rdata_2bytes"] = err_no(lambda: i2c.readfrom_mem(0x40, 0x10, 2))
    out["bad_cmd"] = err_no(lambda: i2c.writeto(0x40, b"\x30"))
    a.setup(0, "AIN2-GND", 1)  # wrong MUX: the sense top node vs ground, ~2.9 V
    out["wrong_mux"] = [a.read_uv(0), a.clipped]
    return out


def case_mcp4725():
    from drivers.mcp4725 import MCP4725

    i2c = bus()
    d = MCP4725(i2c, 0x60, 3300)
    out = {"power_up": [W.dac.code, d.read()]}
    rows = []
    for code in (0, 1, 2048, 3000, 4095, 5000, -3):
        c = d.write(code)
        rows.append([code, c, W.dac.vout(), d.read()[0]])
    out["codes"] = rows
    # PD bits set (a wrong driver bit): output pulled to GND
    i2c.writeto(0x60, bytes((0x10 | 0x08, 0x00)))
    out["pd"] = [W.dac.vout(), d.read()[1]]
    out["odd_len"] = err_no(lambda: i2c.writeto(0x60, b"\x08\x00\x01"))
    out["reserved"] = err_no(lambda: i2c.writeto(0x60, b"\x80\x00\x00"))
    d.write(1234)
    d.store_power_up(2048)
    out["eeprom"] = d.read()
    out["eeprom_busy"] = err_no(lambda: d.store_power_up(2048))
    return out


def case_dac8571():
    # run with SICELL_EMU_CONFIG {"dac": "dac8571"}
    from drivers.dac8571 import DAC8571

    i2c = bus()
    d = DAC8571(i2c, 0x4C, 2500)
    out = {"power_up": [W.dac.code, W.dac.vout()]}
    rows = []
    for code in (0, 1, 32768, 40000, 65535, 70000):
        c = d.write(code)
        rows.append([code, c, W.dac.vout(), d.read()[0]])
    out["codes"] = rows
    out["bad_ctrl"] = err_no(lambda: i2c.writeto(0x4C, b"\x90\x12\x34"))
    out["even_len"] = err_no(lambda: i2c.writeto(0x4C, b"\x10\x12"))
    i2c.writeto(0x4C, b"\x00\x11\x11")  # temp register only: output unchanged
    out["temp_only"] = W.dac.code
    i2c.writeto(0x4C, b"\x20\x00\x00")  # load from temp
    out["loaded"] = W.dac.code
    i2c.writeto(0x4C, b"\x11\x40\x00")  # power down
    out["pd"] = W.dac.vout()
    return out


def case_machine_time():
    out = {}
    # Timer: periodic callbacks fire in virtual time, one-shot once
    hits = []
    t = machine.Timer(period=100, callback=lambda tm: hits.append(W.now))
    one = []
    machine.Timer(mode=machine.Timer.ONE_SHOT, period=250, callback=lambda tm: one.append(1))
    time.sleep(1)
    t.deinit()
    time.sleep(1)
    out["timer"] = [len(hits), len(one), hits[0] if hits else None]
    # Pin semantics
    p = machine.Pin(15, machine.Pin.OUT, value=1)
    out["relay_on"] = W.relay_closed()
    p.low()
    out["relay_low"] = W.relay_closed()
    p.high()
    p.init(machine.Pin.IN)
    out["relay_input"] = W.relay_closed()
    q = machine.Pin(3, machine.Pin.IN, machine.Pin.PULL_UP)
    out["pull_up"] = q.value()
    out["led"] = machine.Pin("LED").id
    # ticks wrap at 2**30 and ticks_diff handles it
    a = time.ticks_add(time.ticks_ms(), 2**30 - 10)
    out["ticks"] = [time.ticks_diff(a, time.ticks_ms()), time.ticks_add(2**30 - 1, 1)]
    out["gmtime"] = list(time.gmtime(1735689600)[:6])
    out["time"] = time.time() - 1735689600
    t0 = W.now
    machine.lightsleep(500)
    out["lightsleep"] = W.now - t0
    out["unique_id"] = len(machine.unique_id())
    out["freq"] = machine.freq()
    try:
        machine.WDT(timeout=10000)
        out["wdt_max"] = None
    except ValueError:
        out["wdt_max"] = "ValueError"
    try:
        machine.I2C(0, sda=machine.Pin(5), scl=machine.Pin(4))
        out["bad_pins"] = None
    except ValueError as e:
        out["bad_pins"] = str(e)
    return out


def case_realtime():
    import utime

    w0 = utime.ticks_ms()
    v0 = W.now
    time.sleep_ms(300)
    return {"wall_ms": utime.ticks_diff(utime.ticks_ms(), w0), "virt_us": W.now - v0}


def case_noise_continuous():
    from drivers.ads1115 import ADS1115

    rest_cell(0.01)
    a = ADS1115(bus(), 0x48, 860)
    a.setup(0, "AIN0-AIN1", 256)  # LSB 7.8 uV, noise ~22 uV rms at 860 SPS
    noisy = [a.read_uv(0) for _ in range(20)]
    W.command("noise off")
    quiet = [a.read_uv(0) for _ in range(20)]
    # continuous mode (MODE=0): the conversion register follows the input by itself
    a.write_reg(1, (0 << 12) | (2 << 9) | (7 << 5) | 3)
    time.sleep_ms(5)
    c1 = a.result()
    rest_cell(-0.2)
    time.sleep_ms(5)
    c2 = a.result()
    return {"noisy": noisy, "quiet": quiet, "cont": [c1, c2], "n": W.adc.conversions}
