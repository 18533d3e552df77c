"""TI ADS1219 24-bit delta-sigma ADC (I2C, address 0x40 with A0 = A1 = DGND).

Commands: RESET 0x06, START/SYNC 0x08, POWERDOWN 0x02, RDATA 0x10 (then read 3
bytes, 24-bit two's complement, big-endian), RREG 0x20 config / 0x24 status (then
read 1 byte), WREG 0x40 + config byte.  Config byte:
    MUX[7:5]  0 AIN0-AIN1, 1 AIN2-AIN3, 2 AIN1-AIN2, 3..6 AIN0..3-AGND, 7 shorted
    GAIN[4]   0 = 1, 1 = 4
    DR[3:2]   20 / 90 / 330 / 1000 SPS
    CM[1]     0 = single shot
    VREF[0]   0 = internal 2.048 V
Status: DRDY[7] = a new result is ready.  A conversion: WREG (only when the channel
changes), START, sleep 1/DR + 5 % + 60 us, poll DRDY, RDATA.
microvolts = code * 2.048e6 / gain / 2**23 = (code * 125) >> (9 + 2 if gain 4), which
keeps |code * 125| < 2**30 (a small int on the RP2040).  ``span_uv(ch)`` is the channel's
full scale: 2.048 V / gain (internal reference).
"""

from micropython import const
import time

_CMD_RESET = const(0x06)
_CMD_START = const(0x08)
_CMD_RDATA = const(0x10)
_CMD_RREG_STATUS = const(0x24)
_CMD_WREG = const(0x40)

MUX = {'AIN0-AIN1': 0, 'AIN2-AIN3': 1, 'AIN1-AIN2': 2, 'AIN0-GND': 3, 'AIN1-GND': 4,
       'AIN2-GND': 5, 'AIN3-GND': 6, 'SHORTED': 7}
DATA_RATES = (20, 90, 330, 1000)
N_CH = const(4)


class ADS1219:
    def __init__(self, i2c, addr=0x40, data_rate=1000):
        self.i2c = i2c
        self.addr = addr
        self.dr_bits = DATA_RATES.index(data_rate)
        conv = 1000000 // data_rate
        self.wait_us = conv + conv // 20 + 60
        self.poll_us = conv // 16 + 20
        self.max_polls = 32
        self._w = [None] * N_CH
        self._shift = [9] * N_CH
        self._cur = -1                   # channel whose config is in the chip
        self._b1 = bytearray(1)
        self._b3 = bytearray(3)
        self._cmd = bytearray(1)
        self.code = 0
        self.clipped = False
        self.command(_CMD_RESET)

    def command(self, c):
        self._cmd[0] = c
        self.i2c.writeto(self.addr, self._cmd)
        if c == _CMD_RESET:
            self._cur = -1

    def config_byte(self, mux, gain=1):
        if isinstance(mux, str):
            mux = MUX[mux]
        if gain not in (1, 4):
            raise ValueError('gain must be 1 or 4')
        return (mux << 5) | (0x10 if gain == 4 else 0) | (self.dr_bits << 2)

    def setup(self, ch, mux, gain=1):
        self._w[ch] = bytearray((_CMD_WREG, self.config_byte(mux, gain)))
        self._shift[ch] = 11 if gain == 4 else 9
        if self._cur == ch:
            self._cur = -1

    def read_config(self):
        self.i2c.readfrom_mem_into(self.addr, 0x20, self._b1)
        return self._b1[0]

    def ready(self):
        self.i2c.readfrom_mem_into(self.addr, _CMD_RREG_STATUS, self._b1)
        return self._b1[0] & 0x80

    def result(self):
        b = self._b3
        self.i2c.readfrom_mem_into(self.addr, _CMD_RDATA, b)
        c = (b[0] << 16) | (b[1] << 8) | b[2]
        if c & 0x800000:
            c -= 0x1000000
        self.code = c
        self.clipped = c >= 0x7FFFFF or c <= -0x800000
        return c

    def read_code(self, ch):
        if self._cur != ch:
            self.i2c.writeto(self.addr, self._w[ch])
            self._cur = ch
        self.command(_CMD_START)
        time.sleep_us(self.wait_us)
        n = self.max_polls
        while not self.ready():
            n -= 1
            if n <= 0:
                raise OSError(110)
            time.sleep_us(self.poll_us)
        return self.result()

    def read_uv(self, ch):
        c = self.read_code(ch)
        s = self._shift[ch]
        return (c * 125 + (1 << (s - 1))) >> s

    def span_uv(self, ch):
        # full scale of channel ch (uV): readings lie within -span .. +span
        return 2048000 >> (self._shift[ch] - 9)
