"""The idle board and the firmware's run state: World's methods for them (a base class).

Idle: when the firmware sleeps while no run is in progress (its engine's state is not
running: idle, loaded, paused, held, done, tripped, stopped, interrupted) and the host has
been quiet for QUIET_MS of wall time (no byte seen waiting on stdin), the sleep first waits
that long in wall time, ended early by a byte from the host or a control line; then virtual
time advances as usual.  While the host talks, virtual time races as during a run (what a
host does between runs - calibration entries, uploads, a new START - is not slowed down, and
a dummy load rests as many virtual seconds as before).  An idle board thus costs next to no
CPU and answers at once, while a run in progress races ahead.  The emulator finds the
firmware's engine by catching the first Engine.tick call (the class attribute is put back at
once); a firmware without an engine module is never idle.  Every change of the run state is
logged ('run state=NAME' with the cell's history), and so is every change between racing and
waiting ('idle: ...' when the first wall-time wait begins, 'active: ...' when host traffic ends
it); the launcher reads both (its linger rule, its status's run_state and board_idle).
Cell history: 'cell cycles=<n> lith_mah=<x> delith_mah=<y> cap=<fraction>': what the cell went
through since this board (world) was built.
Ballast: config ballast_kb of heap held while the firmware boots and freed at its first engine
tick (world.py's config).
"""

import gc
import sys

ST_RUNNING = 2          # firmware engine states (protocol messages.ST_*)
STATE_NAMES = ('IDLE', 'LOADED', 'RUNNING', 'PAUSED', 'DONE', 'TRIPPED', 'HOLD',
               'INTERRUPTED', 'STOPPED')
_POLLIN = 1
_POLLHUP_ERR = 0x18     # POLLHUP | POLLERR
QUIET_MS = 250          # host traffic this recent: the board is not idle (wall ms)


class Idle:
    def _find_engine(self):
        m = sys.modules.get('engine')
        if m is None:
            return
        cls = getattr(m, 'Engine', None)
        if cls is None or cls is self._eng_cls:
            return
        self._eng_cls = cls
        cls.tick = _catcher(self, cls, cls.tick)

    def _state_changed(self, st):
        self.run_state = st
        self.idle_logged = False         # the launcher reads a state line as 'not idle'
        name = STATE_NAMES[st] if 0 <= st < len(STATE_NAMES) else str(st)
        self.log('run state=%s %s' % (name, self.history()))

    def history(self):
        """what the cell went through since this world was built, as 'cell k=v ...'"""
        self.sync()
        st = self.cell.state() if hasattr(self.cell, 'state') else {}
        return 'cell cycles=%d lith_mah=%.6f delith_mah=%.6f cap=%.6f' % (
            st.get('cycles', 0), st.get('lith_ah', 0.0) * 1000.0,
            st.get('delith_ah', 0.0) * 1000.0, st.get('capacity_fraction', 1.0))

    def idle_wait(self, dt_us):
        """wait up to dt_us of wall time; a host byte or a control line ends it early"""
        p = self._idle_poll
        if p is None:
            import select
            p = select.poll()
            p.register(sys.stdin, _POLLIN)
            if self.ctrl is not None:
                p.register(self.ctrl, _POLLIN)
            self._idle_poll = p
        if p is False:               # the host end is gone: plain sleeps
            self.idle_waits += 1
            self.rt.sleep_us(dt_us)
            return
        rt = self.rt
        if 0 <= rt.ticks_diff(rt.ticks_ms(), self.host_seen) < QUIET_MS:
            ms = 0                   # the host is talking: no wait (look for more bytes)
            if self.idle_logged:
                self.idle_logged = False
                self.log('active: host traffic, virtual time races')
        else:
            ms = (dt_us + 999) // 1000
            self.idle_waits += 1
            if not self.idle_logged:
                self.idle_logged = True
                self.log('idle: waiting in wall time')
        for obj, ev in p.poll(ms):
            if obj is self.ctrl:
                self.ctrl_next = self.now    # read it with this advance
                self._recompute_next()
            elif ev & _POLLIN:
                self.host_seen = rt.ticks_ms()
            elif ev & _POLLHUP_ERR:
                self._idle_poll = False      # stdin closed: never spin on it
                rt.sleep_us(dt_us)

    def take_ballast(self):
        """hold ballast_kb of heap until the firmware's first engine tick (see config)"""
        self.ballast = None
        gc.collect()
        n = int(self.cfg['ballast_kb']) * 1024
        if n > 0:
            try:
                self.ballast = bytearray(n)
            except MemoryError:        # a fragmented heap after a reset: boot without it
                self.ballast = None


def _catcher(w, cls, orig):
    # a separate function: MicroPython makes the closure's cells at entry of the function
    # that defines it, which must not be World.sleep's hot path
    def tick(eng):
        cls.tick = orig              # caught: the firmware's own method again
        w.eng = eng
        w.ballast = None             # the firmware has booted: its ring is sized
        return orig(eng)

    return tick
