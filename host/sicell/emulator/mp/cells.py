"""Physical cell models for the sicell emulator (DESIGN §4, §6): ``resistor``, ``rc`` (the HIL
dummy load) and the four a-Si films vs In-Li in a sulfide electrolyte.

The equations, parameters, interface and measured results are in host/docs/cell-models.md.
One pure-Python module that runs unchanged under CPython 3.11 and the MicroPython unix port:
no f-strings, no dataclasses, no typing. It sits in the emulated board's control loop, so
``advance()`` and ``voltage()`` are a handful of float operations and table lookups; keep the
hot methods lean (MicroPython puts a large frame on the heap; tests/test_cells.py checks).
Sign: i_a > 0 lithiates the working electrode; Si voltages are E_WE(vs Li) - 0.62 V (In-Li).
"""

import math

_exp = math.exp
_log = math.log
_sqrt = math.sqrt

try:
    from array import array as _array

    def _farr(lst):
        return _array("d", lst)
except ImportError:  # pragma: no cover - every supported interpreter has array

    def _farr(lst):
        return lst


E_CE_INLI = 0.62          # In-Li counter electrode potential vs Li, V
AREA_CM2 = 0.567          # 8.5 mm mask
F_CONST = 96485.33212
R_GAS = 8.314462618
T_K = 298.15
V_T = R_GAS * T_K / F_CONST
_2VT = 2.0 * V_T
D_SI_DENSE = 2.3          # g/cm3
MAH_G_LI15SI4 = 3579.0

# ---------------------------------------------------------------- base class


class Cell:
    """Protocol all models follow (current-driven)."""

    name = "cell"

    def reset(self):
        pass

    def advance(self, i_a, dt_s):
        pass

    def voltage(self, i_a):
        return 0.0

    def state(self):
        return {"name": self.name}


# --------------------------------------------------------------- dummy loads


class Resistor(Cell):
    name = "resistor"

    def __init__(self, r_ohm=1000.0):
        self.r = float(r_ohm)

    def reset(self):
        pass

    def advance(self, i_a, dt_s):
        pass

    def voltage(self, i_a):
        return -i_a * self.r

    def state(self):
        return {"name": self.name, "r_ohm": self.r}


class RCCell(Cell):
    """R_s in series with (C || R_p); exact integration for constant current."""

    name = "rc"

    def __init__(self, r_series=250.0, c_farad=1e-3, r_parallel=1000.0, v0=0.0):
        self.rs = float(r_series)
        self.c = float(c_farad)
        if r_parallel is None or r_parallel <= 0 or r_parallel == float("inf"):
            self.rp = 0.0          # 0 = no leak
            self.tau = 0.0
        else:
            self.rp = float(r_parallel)
            self.tau = self.rp * self.c
        self.v0 = float(v0)
        self.reset()

    def reset(self):
        self.u = self.v0           # capacitor voltage, terminal sign
        self.t = 0.0
        self.q = 0.0
        self._dt = -1.0
        self._e = 1.0

    def advance(self, i_a, dt_s):
        if dt_s <= 0:
            return
        self.t += dt_s
        self.q += i_a * dt_s
        if self.rp == 0.0:
            self.u -= i_a * dt_s / self.c
            return
        if dt_s != self._dt:
            self._dt = dt_s
            self._e = _exp(-dt_s / self.tau)
        ui = -i_a * self.rp
        self.u = ui + (self.u - ui) * self._e

    def voltage(self, i_a):
        return self.u - i_a * self.rs

    def exact(self, i_a, t_s, u0=None):
        """Analytic terminal voltage after t_s at constant i_a from u0."""
        u = self.v0 if u0 is None else u0
        if self.rp == 0.0:
            return u - i_a * t_s / self.c - i_a * self.rs
        ui = -i_a * self.rp
        return ui + (u - ui) * _exp(-t_s / self.tau) - i_a * self.rs

    def state(self):
        return {"name": self.name, "u_c": self.u, "t_s": self.t,
                "charge_c": self.q, "r_series": self.rs, "c_farad": self.c,
                "r_parallel": self.rp}


# ------------------------------------------------------------------ Si films

_N = 100                  # OCV table intervals in x
_LITH_COMPS = ((0.55, 0.08, 0.06), (0.265, 0.030, 0.40),
               (0.11, 0.018, 0.44), (0.02, 0.012, 0.10))
_DELI_COMPS = ((0.08, 0.020, 0.08), (0.29, 0.035, 0.42),
               (0.48, 0.045, 0.42), (0.65, 0.080, 0.08))
_E_LIT0 = 1.2             # table value at x = 0 (logistic sum -> inf)
_E_DEL0 = 2.0
_E_MIN = -0.5             # clamp of the extrapolated OCV, V vs Li
_E_MAX = 3.0


def _x_of_e(comps, e):
    s = 0.0
    for ek, sk, wk in comps:
        z = (e - ek) / sk
        if z > 60.0:
            continue
        if z < -60.0:
            s += wk
        else:
            s += wk / (1.0 + _exp(z))
    return s


def ocv_x(branch, e):
    """Lithiation fraction on a branch ('lit'/'del') at potential e (V vs Li)."""
    return _x_of_e(_LITH_COMPS if branch == "lit" else _DELI_COMPS, e)


def _build_table(comps, e0):
    """E at x = k/N, k = 0..N, by bisection of the monotone x(E)."""
    tab = [0.0] * (_N + 1)
    tab[0] = e0
    for k in range(1, _N + 1):
        xt = k / _N
        lo = -0.4
        hi = 2.5
        if _x_of_e(comps, lo) < xt:
            tab[k] = lo          # not reachable above lo (x = 1 end)
            continue
        for _ in range(48):
            mid = 0.5 * (lo + hi)
            if _x_of_e(comps, mid) >= xt:
                lo = mid
            else:
                hi = mid
        tab[k] = 0.5 * (lo + hi)
    return tab


def _make_tables():
    el = _build_table(_LITH_COMPS, _E_LIT0)
    ed = _build_table(_DELI_COMPS, _E_DEL0)
    r = range(_N)
    # hot-path form on interval k (w in [0, 1), h in [0, 1]):
    #   E = A[k] + w B[k] + h (C[k] + w D[k])
    return (_farr([ed[k] for k in r]),
            _farr([ed[k + 1] - ed[k] for k in r]),
            _farr([el[k] - ed[k] for k in r]),
            _farr([(el[k + 1] - el[k]) - (ed[k + 1] - ed[k]) for k in r]))


_TA, _TB, _TC, _TD2 = _make_tables()


def ocv(x, h):
    """OCV vs Li at lithiation fraction x and hysteresis h (1 = lithiation)."""
    f = x * _N
    k = int(f)
    if k < 0:
        k = 0
    elif k >= _N:
        k = _N - 1
    w = f - k
    e = _TA[k] + w * _TB[k] + h * (_TC[k] + w * _TD2[k])
    return _E_MIN if e < _E_MIN else (_E_MAX if e > _E_MAX else e)


_COMMON = {
    "area_cm2": AREA_CM2,
    "q_max_mah_g": 3435.0,       # capacity of x = 1 (not all reachable)
    "r_el_ohm_cm2": 150.0,
    "j0_ma_cm2": 1.0,
    "kappa_h": 25.0,
    "eps0": 0.10,
    "n_ce": 2.0,
    "beta_f": 3.0,               # film resistance x (1 + beta (1 - x_s))
    "e_ce": E_CE_INLI,
}

# one row a film: name, then the values of _FILM_KEYS in order
_FILM_KEYS = ("loading_mg_cm2", "thickness_um", "porous", "d_eff_cm2_s",
              "rho_f_ohm_cm2_um", "fade", "g_r_ohm_cm2", "eps_inf")
_FILM_ROWS = (
    # name            mg/cm2  um    porous  D_eff  rho_f  fade    g_r  eps_inf
    ("thin-porous",   0.21, 1.55, True,  1e-9,  4.8, 6.5e-4, 0.0, 0.0010),
    ("thin-dense",    0.22, 0.93, False, 5e-10, 4.8, 1.9e-3, 2.0, 0.0020),
    ("thick-porous",  0.74, 4.73, True,  1e-9,  4.8, 6.5e-4, 0.0, 0.0010),
    ("thick-dense",   0.70, 3.00, False, 5e-10, 4.8, 7.0e-3, 8.0, 0.0030),
)
_FILMS = {row[0]: dict(zip(_FILM_KEYS, row[1:])) for row in _FILM_ROWS}

SI_NAMES = tuple(row[0] for row in _FILM_ROWS)
CELL_NAMES = ("rc", "resistor") + SI_NAMES
_ALIASES = {
    "porous-thin": "thin-porous", "porous-thick": "thick-porous",
    "dense-thin": "thin-dense", "dense-thick": "thick-dense",
    "nonporous-thin": "thin-dense", "nonporous-thick": "thick-dense",
    "thin-nonporous": "thin-dense", "thick-nonporous": "thick-dense",
    "dummy": "rc", "r": "resistor",
}

# nominal reversible fraction of q_max at 0.1 mA/cm2, used only for the
# reported nominal capacity (film_params cap_*): x ~ 0.96 reachable, minus
# the first-cycle side reaction, checked by the tests.
_NOMINAL_FRACTION = 0.92


def canonical_name(name):
    n = str(name).strip().lower().replace("_", "-")
    return _ALIASES.get(n, n)


def film_params(name, **overrides):
    """Area, mass, thickness, density, nominal capacity and model parameters."""
    n = canonical_name(name)
    if n not in _FILMS:
        raise ValueError("unknown film " + repr(name))
    p = dict(_COMMON)
    p.update(_FILMS[n])
    for k in overrides:
        if k not in p:
            raise TypeError("unknown parameter " + repr(k) + " for " + n)
        p[k] = overrides[k]
    _derive(p, n)
    return p


def _derive(p, n):
    area = p["area_cm2"]
    load = p["loading_mg_cm2"]
    th = p["thickness_um"]
    p["name"] = n
    p["mass_g"] = load * area * 1e-3
    p["density_g_cm3"] = load * 1e-3 / (th * 1e-4)
    p["porosity"] = max(0.0, 1.0 - p["density_g_cm3"] / D_SI_DENSE)
    q = p["q_max_mah_g"] * _NOMINAL_FRACTION
    p["cap_mah_g"] = q
    p["cap_mah_cm2"] = q * load * 1e-3
    p["cap_ah"] = p["cap_mah_cm2"] * area * 1e-3
    p["cap_mah_cm3"] = p["cap_mah_cm2"] / (th * 1e-4)
    # lithiated volume: dense-Si volume x (1 + 3 q/q(Li15Si4)) (~4x at full)
    v_lit = load * 1e-3 / D_SI_DENSE * (1.0 + 3.0 * q / MAH_G_LI15SI4)
    p["cap_mah_cm3_lithiated"] = p["cap_mah_cm2"] / max(v_lit, th * 1e-4)
    p["i_0p1_a"] = 1e-4 * area          # 0.1 mA/cm2 in A
    p["r_el_ohm"] = p["r_el_ohm_cm2"] / area
    return p


class _Lcg:
    def __init__(self, seed):
        self.s = (int(seed) * 2654435761 + 12345) & 0x7FFFFFFF

    def u(self):
        """uniform in [-1, 1)"""
        self.s = (self.s * 1103515245 + 12345) & 0x7FFFFFFF
        return self.s / 1073741824.0 - 1.0


_SEED_SPREAD = (("loading_mg_cm2", 0.02), ("r_el_ohm_cm2", 0.10),
                ("rho_f_ohm_cm2_um", 0.05), ("j0_ma_cm2", 0.15),
                ("d_eff_cm2_s", 0.15), ("fade", 0.10), ("g_r_ohm_cm2", 0.10),
                ("eps_inf", 0.20))


class SiFilm(Cell):
    """Amorphous-Si thin film vs In-Li in a sulfide solid electrolyte."""

    def __init__(self, name, seed=0, **overrides):
        n = canonical_name(name)
        p = film_params(n)
        if seed:
            rng = _Lcg(seed)
            for k, spread in _SEED_SPREAD:
                p[k] = p[k] * (1.0 + spread * rng.u())
        for k in overrides:
            if k not in p:
                raise TypeError("unknown parameter " + repr(k) + " for " + n)
            p[k] = overrides[k]
        _derive(p, n)
        self.name = n
        self.seed = seed
        self.p = p
        area = p["area_cm2"]
        self.area = area
        self.r_el = p["r_el_ohm_cm2"] / area
        self.r_f = p["rho_f_ohm_cm2_um"] * p["thickness_um"] / area
        self._rfb = self.r_f * p["beta_f"]
        self.i0x2 = 2.0 * p["j0_ma_cm2"] * 1e-3 * area
        self.q0 = p["q_max_mah_g"] * p["mass_g"] * 3.6      # As at x = 1
        l_cm = p["thickness_um"] * 1e-4
        self.tau_d = l_cm * l_cm / p["d_eff_cm2_s"]
        self.tau1 = self.tau_d / (math.pi * math.pi)
        self.e_ce = p["e_ce"]
        self.reset()

    # -- state -----------------------------------------------------------
    def reset(self):
        p = self.p
        self.x = 0.0
        self.d = 0.0
        self.h = 0.0
        self.q = self.q0
        self.r_grow = 0.0
        self.n = 0.0
        self.cycles = 0
        self.eps = p["eps_inf"] + p["eps0"]
        self.q_lith = 0.0         # As, total lithiation charge
        self.q_deli = 0.0         # As, total delithiation charge
        self.q_side = 0.0         # As, side-reaction charge
        self._acc = 0.0           # lithiation charge since the last ageing step
        self._lith_since = 0.0    # lithiation charge since the last cycle count
        self._qd_mark = 0.0       # q_deli at the last cycle count
        self._sign = 0
        self._dt = -1.0
        self._ed = 1.0
        self._vi = None
        self._eta = 0.0
        self._irf = 0.0
        self._derived()

    def _derived(self):
        self._inv_q = 1.0 / self.q
        self._kd = self._inv_q * self.tau_d / 3.0
        self._kh = self.p["kappa_h"] * self._inv_q
        self._r = self.r_el + self.r_f + self.r_grow
        self._rfb = self.r_f * self.p["beta_f"]
        self._kx = (1.0 - self.eps) * self._inv_q
        self._vi = None            # invalidate eta cache
        self._rev_min = 1e-4 * self.q

    def _age(self):
        # lithiation -> delithiation reversal: age by the lithiation charge
        # passed since the previous reversal, dn = q_lith / Q
        p = self.p
        acc = self._acc
        dn = acc * self._inv_q
        self.q_lith += acc
        self.q_side += acc * self.eps
        self._lith_since += acc
        self._acc = 0.0
        self.n += dn
        f = p["fade"] * dn
        if f > 0.5:
            f = 0.5
        self.q = max(self.q * (1.0 - f), 1e-3 * self.q0)
        self.r_grow += p["g_r_ohm_cm2"] * dn / self.area
        self.eps = p["eps_inf"] + p["eps0"] * _exp(-self.n / p["n_ce"])
        self._derived()

    # -- hot path ----------------------------------------------------------
    # MicroPython note: a function whose locals + value stack exceed 11 words
    # gets its frame from the heap on every call, and with a heap full of
    # short-lived floats that allocation scans the whole garbage region
    # (2 us at 192K, 25 us at 4M per call).  advance(), voltage() and
    # _set_eta() are written to stay under that limit: few locals, locals
    # reused, shallow expressions.  Check with the 4M-heap timing in the tests.
    def advance(self, i_a, dt_s):
        if i_a > 0.0:
            q = i_a * dt_s
            self._acc += q
            self.x += q * self._kx           # (1 - eps) / Q
            if self._sign <= 0:
                self._start_lith()
            if self.h < 1.0:
                self.h = 1.0 - (1.0 - self.h) * _exp(-self._kh * q)
                if self.h > 0.9999999:
                    self.h = 1.0
        elif i_a < 0.0:
            q = i_a * dt_s
            if self._sign > 0:
                self._sign = -1
                if self._acc > self._rev_min:
                    self._age()
            self.q_deli -= q
            self.x += q * self._inv_q
            if self.h > 0.0:
                self.h = self.h * _exp(self._kh * q)
                if self.h < 1e-7:
                    self.h = 0.0
        if dt_s != self._dt:
            self._new_dt(dt_s)
        q = i_a * self._kd
        self.d = q + (self.d - q) * self._ed

    def _start_lith(self):
        # a cycle starts with a lithiation (DESIGN §5); count it when at least
        # 5 % of Q went each way since the last count, so a CV loop dithering
        # the current sign does not count cycles
        self._sign = 1
        m = 0.05 * self.q
        if self.cycles == 0 or (self._lith_since + self._acc >= m
                                and self.q_deli - self._qd_mark >= m):
            self.cycles += 1
            self._lith_since = -self._acc
            self._qd_mark = self.q_deli

    def _new_dt(self, dt_s):
        if dt_s < 0.0:
            raise ValueError("negative dt")
        self._dt = dt_s
        self._ed = _exp(-dt_s / self.tau1)

    def voltage(self, i_a):
        if i_a != self._vi:
            self._set_eta(i_a)
        x = self.x + self.d
        if x > 0.0:
            if x < 1.0:
                k = int(x * 100.0)           # _N
                w = x * 100.0 - k
            else:                           # over-lithiated: extrapolate
                w = x * 100.0 - 99.0
                k = 99
                x = 1.0
        else:                               # over-delithiated: extrapolate
            w = x * 100.0
            k = 0
            x = 0.0
        w = self.h * (_TC[k] + w * _TD2[k]) + _TA[k] + w * _TB[k]
        if w < -0.5:                        # _E_MIN, _E_MAX
            w = -0.5
        elif w > 3.0:
            w = 3.0
        return w + self._irf * x - self._eta

    def _set_eta(self, i_a):
        # cached instantaneous part: i (R_el + R_f (1 + beta) + R_grow)
        # + 2 V_T asinh(i / 2 i0) + E_CE; the x_s-dependent film term is
        # added back in voltage() as + i R_f beta x_s.
        y = i_a / self.i0x2
        if -0.1 < y < 0.1:
            y = y * (1.0 - y * y * (0.16666666666666666 - 0.075 * y * y))
        elif y > 0.0:
            y = _log(y + _sqrt(y * y + 1.0))
        else:
            y = -_log(_sqrt(y * y + 1.0) - y)
        self._irf = i_a * self._rfb
        self._eta = i_a * self._r + self._irf + _2VT * y + self.e_ce
        self._vi = i_a

    # -- extras ------------------------------------------------------------
    def voltage_ir_free(self, i_a):
        """Terminal voltage with the electrolyte I.R_el added back."""
        return self.voltage(i_a) + i_a * self.r_el

    def ocv(self):
        return ocv(self.x + self.d, self.h) - self.e_ce

    def state(self):
        x = self.x
        return {
            "name": self.name, "seed": self.seed,
            "x": x, "soc": x, "x_surface": x + self.d, "h": self.h,
            "cycles": self.cycles, "n_equiv": self.n,
            "capacity_ah": self.q / 3600.0,
            "capacity_fraction": self.q / self.q0,
            "nominal_capacity_ah": self.p["cap_ah"],
            "r_ohm": self._r, "r_el_ohm": self.r_el, "r_film_ohm": self.r_f,
            "r_grow_ohm": self.r_grow,
            "r_ct_ohm": V_T * 2.0 / self.i0x2,
            "tau_d_s": self.tau_d,
            "side_fraction": self.eps,
            "lith_ah": (self.q_lith + self._acc) / 3600.0,
            "delith_ah": self.q_deli / 3600.0,
            "side_ah": (self.q_side + self._acc * self.eps) / 3600.0,
            "ocv_v": self.ocv(),
        }


# ------------------------------------------------------------------ factory


def make_cell(name, seed=0, **overrides):
    n = canonical_name(name)
    if n == "rc":
        return RCCell(**overrides)
    if n == "resistor":
        return Resistor(**overrides)
    if n in _FILMS:
        return SiFilm(n, seed, **overrides)
    raise ValueError("unknown cell " + repr(name) + "; known: " + ", ".join(CELL_NAMES))
