"""sicell: host side of the open battery tester (transport, client, store, analysis, emulator)."""

import serial

__version__ = "0.1.0"

# Make ``serial.serial_for_url("emu://<cell>")`` work for any pyserial user once sicell is
# imported, the way pyserial's own loop:// and socket:// handlers are found.
if "sicell.urlhandler" not in serial.protocol_handler_packages:
    serial.protocol_handler_packages.append("sicell.urlhandler")
