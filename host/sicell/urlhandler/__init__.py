"""pyserial URL handlers shipped by sicell (``emu://`` lives in protocol_emu.py)."""
