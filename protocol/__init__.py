"""The sicell wire protocol: framing (framing.py), messages (messages.py), schedules (schedule.py).

Pure Python that runs unchanged under CPython (installed as ``sicell.protocol``) and MicroPython
(copied to the board as the package ``protocol``). Modules import each other relatively.
"""
