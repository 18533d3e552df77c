"""Microchip MCP4725 12-bit DAC (I2C, address 0x60 with A0 low), output 0..VDD (3.3 V).

Fast-write command (two bytes): [0 0 PD1 PD0 D11 D10 D9 D8] [D7..D0], PD = 00 normal
operation (any other PD value pulls the output to GND).  'Write DAC register and
EEPROM' (three bytes, 0x60 | PD << 1, D11..D4, D3..D0 << 4) sets the power-up value;
this board's EEPROM holds midscale (zero current).  A read returns five bytes: status
(RDY/BSY bit 7, POR bit 6, PD bits 2:1), DAC register D11..D4, D3..D0 << 4, EEPROM
[0 PD1 PD0 0 D11..D8] [D7..D0].
"""


class MCP4725:
    bits = 12
    mid = 2048
    max_code = 4095

    def __init__(self, i2c, addr=0x60, vref_mV=3300):
        self.i2c = i2c
        self.addr = addr
        self.vref_mV = vref_mV
        self._buf = bytearray(2)
        self.code = -1

    def write(self, code):
        if code < 0:
            code = 0
        elif code > 4095:
            code = 4095
        b = self._buf
        b[0] = code >> 8               # 0 0 PD1=0 PD0=0 D11..D8
        b[1] = code & 0xFF
        self.i2c.writeto(self.addr, b)
        self.code = code
        return code

    def read(self):
        """(dac code, pd bits, eeprom code, eeprom pd, ready)"""
        b = self.i2c.readfrom(self.addr, 5)
        return ((b[1] << 4) | (b[2] >> 4), (b[0] >> 1) & 3,
                ((b[3] & 0x0F) << 8) | b[4], (b[3] >> 5) & 3, bool(b[0] & 0x80))

    def store_power_up(self, code):
        """write DAC register and EEPROM (the value the DAC wakes up with)"""
        self.i2c.writeto(self.addr, bytes((0x60, (code >> 4) & 0xFF, (code & 0x0F) << 4)))
        self.code = code
