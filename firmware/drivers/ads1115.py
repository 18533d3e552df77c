"""TI ADS1115 16-bit delta-sigma ADC (I2C, default address 0x48), single-shot driver.

Registers (pointer byte P1:P0): 0 conversion (16-bit two's complement, big-endian),
1 config, 2 Lo_thresh, 3 Hi_thresh.  Config word:
    OS[15]     write 1 = start a single conversion; reads 0 while converting
    MUX[14:12] 0 AIN0-AIN1, 1 AIN0-AIN3, 2 AIN1-AIN3, 3 AIN2-AIN3, 4..7 AIN0..3-GND
    PGA[11:9]  full scale +-6.144 / 4.096 / 2.048 / 1.024 / 0.512 / 0.256 V
    MODE[8]    1 = single shot (power-down between conversions)
    DR[7:5]    8 / 16 / 32 / 64 / 128 / 250 / 475 / 860 SPS
    COMP_QUE[1:0] = 11: comparator disabled (ALERT/RDY high-Z)
A conversion: write config with OS=1, sleep 1/DR + 5 % (oscillator tolerance) + 30 us
wake-up, then poll OS until 1 (bounded: OSError(ETIMEDOUT) after two more conversion
times), then read the conversion register.  microvolts = code * FS_mV * 1000 / 32768,
done as (code * (FS_mV / 256) * 125) >> 4 so the product stays a small int on the
RP2040 (< 2**30): 125 uV per code at +-4.096 V, 62.5 uV at +-2.048 V.  ``clipped`` is True
when the code sits at +32767 or -32768; ``span_uv(ch)`` is the channel's full scale.
"""

from micropython import const
import time

_CONV = const(0)
_CONFIG = const(1)

MUX = {'AIN0-AIN1': 0, 'AIN0-AIN3': 1, 'AIN1-AIN3': 2, 'AIN2-AIN3': 3,
       'AIN0-GND': 4, 'AIN1-GND': 5, 'AIN2-GND': 6, 'AIN3-GND': 7}
PGA_MV = (6144, 4096, 2048, 1024, 512, 256)
DATA_RATES = (8, 16, 32, 64, 128, 250, 475, 860)
N_CH = const(4)


class ADS1115:
    def __init__(self, i2c, addr=0x48, data_rate=860):
        self.i2c = i2c
        self.addr = addr
        self.dr_bits = DATA_RATES.index(data_rate)
        conv = 1000000 // data_rate
        self.wait_us = conv + conv // 20 + 30
        self.poll_us = conv // 16 + 20
        self.max_polls = 32
        self._w = [None] * N_CH          # per channel: [pointer, MSB, LSB] config write
        self._m = [0] * N_CH              # per channel: FS_mV / 256
        self._buf = bytearray(2)
        self.code = 0
        self.clipped = False

    def config_word(self, mux, pga_mV, start=True):
        if isinstance(mux, str):
            mux = MUX[mux]
        pga = PGA_MV.index(pga_mV)
        return ((0x8000 if start else 0) | (mux << 12) | (pga << 9) | 0x0100
                | (self.dr_bits << 5) | 0x0003)

    def setup(self, ch, mux, pga_mV):
        w = self.config_word(mux, pga_mV)
        self._w[ch] = bytearray((_CONFIG, w >> 8, w & 0xFF))
        self._m[ch] = pga_mV >> 8

    # -- registers ----------------------------------------------------------------------
    def read_reg(self, reg):
        b = self._buf
        self.i2c.readfrom_mem_into(self.addr, reg, b)
        return (b[0] << 8) | b[1]

    def write_reg(self, reg, value):
        self.i2c.writeto(self.addr, bytes((reg, (value >> 8) & 0xFF, value & 0xFF)))

    # -- conversions --------------------------------------------------------------------
    def start(self, ch):
        self.i2c.writeto(self.addr, self._w[ch])

    def ready(self):
        b = self._buf
        self.i2c.readfrom_mem_into(self.addr, _CONFIG, b)
        return b[0] & 0x80

    def result(self):
        b = self._buf
        self.i2c.readfrom_mem_into(self.addr, _CONV, b)
        c = (b[0] << 8) | b[1]
        if c & 0x8000:
            c -= 0x10000
        self.code = c
        self.clipped = c >= 32767 or c <= -32768
        return c

    def read_code(self, ch):
        self.start(ch)
        time.sleep_us(self.wait_us)
        n = self.max_polls
        while not self.ready():
            n -= 1
            if n <= 0:
                raise OSError(110)       # ETIMEDOUT: the conversion never finished
            time.sleep_us(self.poll_us)
        return self.result()

    def read_uv(self, ch):
        c = self.read_code(ch)
        return (c * self._m[ch] * 125 + 8) >> 4

    def span_uv(self, ch):
        # full scale of channel ch (uV): readings lie within -span .. +span
        return self._m[ch] * 256000
