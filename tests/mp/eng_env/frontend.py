# Test front end for firmware/main.py under tests/test_link.py (shadows firmware/frontend.py):
# the fake RC cell of eng_fakefe on the real ticks_ms clock.
import time

import eng_fakefe


class _RealClock:
    @property
    def t(self):
        return time.ticks_ms()


class Frontend(eng_fakefe.Frontend):
    def __init__(self, cfg=None, i2c=None):
        super().__init__(cfg, i2c, clock=_RealClock(), model="rc", r_ohm=250, c_uf=1000000, v0_uv=0)
