"""TI DAC8571 16-bit DAC (I2C, address 0x4C with A0 low), output 0..VREF (2.5 V ext.).

Write: control byte, then MSB, LSB.  Control byte [0 0 L1 L0 0 0 0 PD0]: L1:L0 = 01
'write temporary register and load DAC' (0x10) is the normal update; PD0 = 1 powers
the output down.  A read returns MSB, LSB of the DAC register and the control byte.
Power-on reset is zero scale (the Howland then asks for -FS: keep the relay open until
the driver has written midscale).
"""

from micropython import const

_LOAD = const(0x10)


class DAC8571:
    bits = 16
    mid = 32768
    max_code = 65535

    def __init__(self, i2c, addr=0x4C, vref_mV=2500):
        self.i2c = i2c
        self.addr = addr
        self.vref_mV = vref_mV
        self._buf = bytearray(3)
        self._buf[0] = _LOAD
        self.code = -1

    def write(self, code):
        if code < 0:
            code = 0
        elif code > 65535:
            code = 65535
        b = self._buf
        b[1] = code >> 8
        b[2] = code & 0xFF
        self.i2c.writeto(self.addr, b)
        self.code = code
        return code

    def read(self):
        """(dac code, control byte)"""
        b = self.i2c.readfrom(self.addr, 3)
        return (b[0] << 8) | b[1], b[2]
