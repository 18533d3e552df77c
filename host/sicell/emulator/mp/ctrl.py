"""The board's control channel: World's methods for it (a base class).

Env var SICELL_EMU_CTRL: path of a FIFO (or /dev/fd/N, or a regular file) with line
commands, polled without blocking (select.poll) from the clock whenever virtual time
advances past the next poll instant (every ctrl_poll_ms of virtual time):
    freeze <ms>     the firmware gets no control for ms of virtual time (the watchdog, if
                    running, expires on schedule and resets the board: WDT_RESET)
    brownout <ms>   supply lost for ms: relay de-energised, range switches open, chips lose
                    their state (MCP4725 reloads its EEPROM, DAC8571 zero scale, ADC reset
                    value), the cell rests; then a power-on reset (PWRON_RESET)
    reset           soft reset now (SOFT_RESET)
    noise on|off    ADC noise
    quit            end the emulator (exit 0)
Polls: every ctrl_poll_ms of virtual time at first; the interval doubles while polls come less
than 10 ms of wall time apart (up to 600 s of virtual time) and halves when more than 40 ms
apart, so a racing board polls ~100 times per wall second instead of 20 times per simulated
second.  An idle board's wall-time waits end at once on a control line (idle.py).
"""

_CTRL_MAX_US = 600000000


def _world():
    import world            # loaded already (it imports this module): no cycle at import
    return world


class Ctrl:
    def _ctrl_pace(self):
        """adapt the virtual poll interval to ~10-40 ms of wall time between polls"""
        rt = self.rt
        w = rt.ticks_ms()
        el = rt.ticks_diff(w, self.ctrl_wall)
        self.ctrl_wall = w
        if el < 10:
            if self.ctrl_every < _CTRL_MAX_US:
                self.ctrl_every *= 2
        elif el > 40 and self.ctrl_every > self.ctrl_base:
            self.ctrl_every //= 2
            if self.ctrl_every < self.ctrl_base:
                self.ctrl_every = self.ctrl_base

    def _open_ctrl(self, path):
        import select
        try:
            self.ctrl = open(path, 'r+b')
        except OSError:
            self.ctrl = open(path, 'rb')
        self.ctrl_poll = select.poll()
        self.ctrl_poll.register(self.ctrl, select.POLLIN)
        self.ctrl_next = 0

    def poll_ctrl(self):
        """read pending control lines; returns extra virtual us the firmware stays frozen.
        commands: freeze <ms> | brownout <ms> | reset | noise on|off | quit"""
        if self.ctrl is None:
            return 0
        extra = 0
        while True:
            ev = self.ctrl_poll.poll(0)
            if not ev:
                break
            if ev[0][1] & ~1:            # POLLHUP / POLLERR without data
                if not (ev[0][1] & 1):
                    break
            line = self.ctrl.readline()
            if not line:
                break
            extra += self.command(line.decode().strip())
        return extra

    def command(self, line):
        parts = line.split()
        if not parts:
            return 0
        cmd = parts[0]
        arg = parts[1] if len(parts) > 1 else ''
        self.log('ctrl ' + line)
        if cmd == 'freeze':
            return int(arg) * 1000
        if cmd == 'brownout':
            self.power_fail(int(arg))
        if cmd == 'reset':
            self.raise_reset(_world().SOFT_RESET, 'control reset')
        if cmd == 'noise':
            self.analog.noise = arg == 'on'
            return 0
        if cmd == 'profile':
            if self.profiler is not None:
                self.log(self.profiler.line(self.now * 1e-6))
            return 0
        if cmd == 'quit':
            self.sync()
            raise _world().EmuExit(0, 'control quit')
        self.log('ctrl: unknown command ' + repr(line))
        return 0
