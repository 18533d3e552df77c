"""Board configuration: loads board.json (the ONE board config: I2C bus and pins, fitted
ADC/DAC parts and addresses, range GPIOs and sense resistors, relay, LED, voltage
window, compliance, watchdog timeout, autorange thresholds).

Search order: ``board.json`` in the current directory (the board's flash root; an
emulated board may carry its own there), then the copy beside this module.
``load()`` returns the parsed dict; ``adc(cfg)`` / ``dac(cfg)`` return (part, settings)
of the fitted chip.
"""

import json

_FILE = 'board.json'


def _here():
    try:
        f = __file__
    except NameError:
        return ''
    i = f.rfind('/')
    return f[:i + 1] if i >= 0 else ''


def load(path=None):
    paths = (path,) if path else (_FILE, _here() + _FILE)
    err = None
    for p in paths:
        try:
            with open(p) as f:
                cfg = json.load(f)
        except OSError as e:
            err = e
            continue
        _strip(cfg)
        check(cfg)
        return cfg
    raise OSError('board.json not found: %s' % (err,))


def _strip(d):
    # drop the '_doc' notes: they only cost RAM on the board
    for k in [k for k in d if k[:1] == '_']:
        del d[k]
    for v in d.values():
        if isinstance(v, dict):
            _strip(v)


def check(cfg):
    """raise ValueError when the config is unusable (missing keys, bad ranges)"""
    for k in ('i2c', 'adc', 'dac', 'ranges', 'relay', 'limits'):
        if k not in cfg:
            raise ValueError('board.json: missing ' + k)
    last = 0
    for r in cfg['ranges']:
        fs = r['full_scale_nA']
        if fs <= last or r['sense_ohm'] <= 0:
            raise ValueError('board.json: ranges must grow, sense_ohm > 0')
        last = fs
    adc(cfg)
    dac(cfg)


def adc(cfg):
    a = cfg['adc']
    return a['part'], a[a['part']]


def dac(cfg):
    d = cfg['dac']
    return d['part'], d[d['part']]
