"""A zero-cost I2C bus for the bench's ceiling (SICELL_EMU_CANNED=1; never in normal use).

Replaces machine.I2C's transfers: writes are taken and ignored, reads return canned register
bytes (ADS1115: conversion ready; the conversion register a fixed code per input pair; the
DACs read back zeros).  No bus time, no chip model, no cell: what is left is the firmware
itself, the virtual clock and the link.  The fixed codes are a constant cell voltage and a
current equal to the firmware's set point (the last DAC code, read back through the DAC's
own scale), so a constant-current step runs until its duration guard.
"""

_state = {'mux': 0, 'code': 0x800, 'bits': 12}


def install(machine):
    st = _state

    def writeto(self, addr, buf, stop=True):
        n = len(buf)
        if addr == 0x48 and n == 3 and buf[0] == 1:
            st['mux'] = (buf[1] >> 4) & 7
        elif addr == 0x60 and n >= 2:                     # MCP4725 fast / register write
            st['code'] = ((buf[0] & 0x0F) << 8) | buf[1] if n == 2 else (buf[1] << 4) | (buf[2] >> 4)
        return n

    def readfrom_mem_into(self, addr, mem, buf, addrsize=8):
        if mem == 1:
            buf[0] = 0x85
            buf[1] = 0x83
            return
        if st['mux'] == 3:                                # AIN2-AIN3: sense voltage
            c = (st['code'] - 0x800) * 8 * 33 // 41       # 3.3 V DAC half-scale -> 4.096 V FS
        else:
            c = 0x0C00                                    # 0.384 V
        c &= 0xFFFF
        buf[0] = c >> 8
        if len(buf) > 1:
            buf[1] = c & 0xFF

    def readfrom(self, addr, n, stop=True):
        return bytes(n)

    machine.I2C.writeto = writeto
    machine.I2C.readfrom_mem_into = readfrom_mem_into
    machine.I2C.readfrom = readfrom
