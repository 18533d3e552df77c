"""Per-range calibration of the front end, stored as ``calibration.json`` in the current
directory (the board's flash root; always a relative path).

Channels per range (messages.CH_*): 0 = voltage measurement (offset in uV), 1 = current
measurement (offset in nA), 2 = current set point / DAC (offset in nA).  Every entry is the forward
model of the hardware, ``output = input * gain + offset`` with gain in ppm of 1
(1_000_000 = unity):
    ch 0: raw reading uV = true uV * gain + offset  ->  true = (raw - offset) / gain
    ch 1: raw reading nA = true nA * gain + offset  ->  true = (raw - offset) / gain
    ch 2: actual nA = commanded nA * gain + offset  ->  command = (want - offset) / gain
``two_point`` derives (offset, gain_ppm) from two measured points.

File format: {"format": "sicell-cal", "version": 1, "n_ranges": N,
              "cal": [[[offset, gain_ppm] x 3 channels] x N ranges]}
Written atomically (``calibration.json.tmp`` then os.rename).  A missing or corrupt
file gives unity defaults and never raises: ``status`` is 'ok', 'missing' or 'corrupt'
(``error`` says why), ``is_default`` is True while nothing was loaded or set.

Gains must stay within +-10 % of unity (hardware further off than that is broken),
which keeps ``correct()`` in small-int arithmetic on the RP2040 (no allocation).
"""

import json
import os

FILE = 'calibration.json'
N_CH = 3
UNITY = 1000000
MAX_DEV = 100000          # |gain_ppm - 1e6| limit


def inv_dev(gain_ppm):
    """k such that x / gain ~= x + x * k / 1e6 (precomputed for correct())"""
    return (10 ** 12 + gain_ppm // 2) // gain_ppm - UNITY


def correct(raw, off, k):
    """(raw - off) / gain with k = inv_dev(gain); integer only: every product stays inside the
    RP2040's small ints (|x| < 2**30) for |raw - off| up to ~5e8 and |k| <= 111112 (gain within
    MAX_DEV). k is split in thousands so a * k is never formed: a * (k // 1000) * 1000 + a * (k %
    1000) is a * k, and floor division by 1000 takes the first part whole."""
    d = raw - off
    if k == 0:
        return d
    a = d // 1000
    kh = k // 1000
    return d + a * kh + (a * (k - kh * 1000)) // 1000 + ((d - a * 1000) * k) // 1000000


def two_point(x1, y1, x2, y2):
    """(offset, gain_ppm) of y = x * gain + offset through two points"""
    if x1 == x2:
        raise ValueError('two_point: x1 == x2')
    g = (y2 - y1) / (x2 - x1)
    return int(round(y1 - x1 * g)), int(round(g * UNITY))


class Calibration:
    def __init__(self, n_ranges, path=FILE, load=True):
        self.n = n_ranges
        self.path = path
        self.status = 'missing'
        self.error = ''
        self.is_default = True
        self._defaults()
        if load:
            self.load()

    def _defaults(self):
        self.off = [[0] * N_CH for _ in range(self.n)]
        self.gain = [[UNITY] * N_CH for _ in range(self.n)]
        self.k = [[0] * N_CH for _ in range(self.n)]
        self.gf = [[1.0] * N_CH for _ in range(self.n)]     # gain as a float
        self.inv = [[1.0] * N_CH for _ in range(self.n)]    # 1 / gain as a float

    def load(self):
        try:
            f = open(self.path)
        except OSError:
            self._defaults()
            self.status = 'missing'
            self.error = ''
            self.is_default = True
            return False
        try:
            try:
                d = json.load(f)
            finally:
                f.close()
            if d.get('format') != 'sicell-cal' or d.get('n_ranges') != self.n:
                raise ValueError('wrong format or number of ranges')
            rows = d['cal']
            if len(rows) != self.n:
                raise ValueError('wrong number of ranges')
            self._defaults()
            for r in range(self.n):
                if len(rows[r]) != N_CH:
                    raise ValueError('wrong number of channels')
                for c in range(N_CH):
                    off, gain = rows[r][c]
                    self.set(r, c, off, gain)
            self.status = 'ok'
            self.error = ''
            self.is_default = False
            return True
        except Exception as e:          # corrupt: never crash at boot
            self._defaults()
            self.status = 'corrupt'
            self.error = '%s: %s' % (type(e).__name__, e)
            self.is_default = True
            return False

    def get(self, rng, ch):
        return self.off[rng][ch], self.gain[rng][ch]

    def set(self, rng, ch, offset, gain_ppm):
        if not (0 <= rng < self.n and 0 <= ch < N_CH):
            raise ValueError('no such range/channel')
        offset = int(offset)
        gain_ppm = int(gain_ppm)
        if not (isinstance(offset, int) and -UNITY * 10 <= offset <= UNITY * 10):
            raise ValueError('offset out of range')
        if gain_ppm < UNITY - MAX_DEV or gain_ppm > UNITY + MAX_DEV:
            raise ValueError('gain_ppm %d outside 1e6 +- %d' % (gain_ppm, MAX_DEV))
        self.off[rng][ch] = offset
        self.gain[rng][ch] = gain_ppm
        self.k[rng][ch] = inv_dev(gain_ppm)
        self.gf[rng][ch] = gain_ppm / UNITY
        self.inv[rng][ch] = UNITY / gain_ppm
        self.is_default = False

    def reset(self, rng=None):
        """unity calibration for one range (or all)"""
        for r in (range(self.n) if rng is None else (rng,)):
            for c in range(N_CH):
                self.off[r][c] = 0
                self.gain[r][c] = UNITY
                self.k[r][c] = 0
                self.gf[r][c] = 1.0
                self.inv[r][c] = 1.0

    def to_dict(self):
        return {'format': 'sicell-cal', 'version': 1, 'n_ranges': self.n,
                'cal': [[[self.off[r][c], self.gain[r][c]] for c in range(N_CH)]
                        for r in range(self.n)]}

    def save(self):
        tmp = self.path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(self.to_dict(), f)
        try:
            os.rename(tmp, self.path)
        except OSError:                 # FAT cannot rename onto an existing file
            try:
                os.remove(self.path)
            except OSError:
                pass
            os.rename(tmp, self.path)
        self.status = 'ok'
        self.error = ''
