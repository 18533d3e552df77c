"""Chip drivers, one module per part; make_adc / make_dac build the one board.json names.

Common interface
    ADC: setup(ch, mux, ...) once per channel, read_uv(ch) -> int microvolts (also sets
         .code = raw code and .clipped = code at the full-scale limit); read_uv allocates
         nothing (preallocated buffers, integer math); span_uv(ch) -> the channel's full
         scale in microvolts. Channels: 0 voltage, 1 current, 2 (when board.json gives
         the voltage a wide_pga_mV) the voltage over its wide range.
    DAC: .bits, .mid (midscale code = zero current), .max_code, write(code) (clamped),
         .code = last code written.
Modules are imported lazily so only the fitted parts cost RAM.
"""


def make_adc(i2c, part, p):
    if part == 'ads1115':
        from drivers.ads1115 import ADS1115 as C
        a = C(i2c, p['addr'], p['data_rate'])
        v = p['voltage']
        a.setup(0, v['mux'], v['pga_mV'])
        a.setup(1, p['current']['mux'], p['current']['pga_mV'])
        if 'wide_pga_mV' in v:
            a.setup(2, v['mux'], v['wide_pga_mV'])     # the voltage channel's wide range
    elif part == 'ads1219':
        from drivers.ads1219 import ADS1219 as C
        a = C(i2c, p['addr'], p['data_rate'])
        a.setup(0, p['voltage']['mux'], p['voltage']['gain'])
        a.setup(1, p['current']['mux'], p['current']['gain'])
    else:
        raise ValueError('unknown ADC part ' + str(part))
    return a


def make_dac(i2c, part, p):
    if part == 'mcp4725':
        from drivers.mcp4725 import MCP4725 as C
    elif part == 'dac8571':
        from drivers.dac8571 import DAC8571 as C
    else:
        raise ValueError('unknown DAC part ' + str(part))
    return C(i2c, p['addr'], p['vref_mV'])
