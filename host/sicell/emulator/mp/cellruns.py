"""Model-only scenarios on a cell from cells.py (no firmware, no host): constant current to a
cutoff, constant voltage to an end current, galvanostatic cycling and the DESIGN §6 rate test.

Used by tests/test_cells.py under CPython and MicroPython to check the models against the
paper; the emulated board never imports it. Same rules as cells.py: plain Python that runs on
both interpreters.
"""


def run_cc(cell, i_a, v_stop, dt_s, t_max_s=1e7, ir_free=False):
    """Constant current until the voltage crosses v_stop (down for i > 0,
    up for i < 0).  ir_free: compare V + i R_el (IR-corrected) instead.
    Returns (charge_ah, time_s, v_end)."""
    rc = cell.r_el if ir_free else 0.0
    t = 0.0
    v = cell.voltage(i_a) + i_a * rc
    while t < t_max_s:
        cell.advance(i_a, dt_s)
        t += dt_s
        v = cell.voltage(i_a) + i_a * rc
        if i_a > 0.0:
            if v <= v_stop:
                break
        elif v >= v_stop:
            break
    return abs(i_a) * t / 3600.0, t, v


def _current_for(cell, v_set, i_lo, i_hi):
    # voltage() decreases with i: bisection on the instantaneous response
    for _ in range(40):
        mid = 0.5 * (i_lo + i_hi)
        if cell.voltage(mid) > v_set:
            i_lo = mid
        else:
            i_hi = mid
    return 0.5 * (i_lo + i_hi)


def run_cv(cell, v_set, i_stop_a, dt_s, i_max_a, t_max_s=1e6):
    """Hold v_set (lithiation side, current >= 0) until |i| < i_stop_a.
    Returns (charge_ah, time_s, i_end)."""
    t = 0.0
    q = 0.0
    i = i_max_a
    while t < t_max_s:
        i = _current_for(cell, v_set, 0.0, i_max_a)
        if i < i_stop_a:
            break
        cell.advance(i, dt_s)
        t += dt_s
        q += i * dt_s
    return q / 3600.0, t, i


def cycle_galvanostatic(cell, i_a, v_low, v_high, dt_s, n_cycles, rest_s=3600.0):
    """CC lithiation at +i_a to v_low, rest, CC delithiation at -i_a to
    v_high, rest; returns a list of (q_lith_ah, q_delith_ah) per cycle."""
    out = []
    for _ in range(n_cycles):
        ql = run_cc(cell, i_a, v_low, dt_s)[0]
        if rest_s > 0:
            cell.advance(0.0, rest_s)
        qd = run_cc(cell, -i_a, v_high, dt_s)[0]
        if rest_s > 0:
            cell.advance(0.0, rest_s)
        out.append((ql, qd))
    return out


def rate_test(cell, j_list_ma_cm2=(0.1, 1.0, 2.0, 5.0, 10.0), dt_s=None,
              v_low=-0.61, v_high=0.58, j_cv_stop_ma_cm2=1e-3, rest_s=600.0,
              dt_charge_s=30.0):
    """DESIGN §6 rate test: CC-CV lithiation at 0.1 mA/cm2 to v_low, hold to
    1 uA/cm2; delithiation at each current density to v_high with the
    electrolyte I.R removed (ir_free).  dt_s: discharge step (default
    30 s at 0.1 mA/cm2, else 3 s / j).  Returns the delithiation charges (Ah)."""
    area = cell.area
    i_ch = 1e-4 * area
    out = []
    for j in j_list_ma_cm2:
        run_cc(cell, i_ch, v_low, dt_charge_s)
        run_cv(cell, v_low, j_cv_stop_ma_cm2 * 1e-3 * area, dt_charge_s, 10 * i_ch)
        cell.advance(0.0, rest_s)
        dt = dt_s
        if dt is None:
            dt = 30.0 if j <= 0.2 else 3.0 / j
        out.append(run_cc(cell, -j * 1e-3 * area, v_high, dt, ir_free=True)[0])
        cell.advance(0.0, rest_s)
    return out
