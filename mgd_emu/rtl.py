"""What the reference RTL (rtl/) needs from a chip: a Verilog header, golden
vectors with directed corner cases, and the activation lookup table.

`export_rtl(trace, out)` cuts one synapse's golden vectors out of a trace
(export.write_golden, kept in out/golden/), and writes out/synapse/: the
header `mgd_chip.vh` (the synapse's widths, modes and constants as
`define`s), and one stream of `$readmemh` vectors for rtl/mgd_synapse.v: the
vectors cut from the run first, then directed corner cases (exact rounding
ties, one LSB either side of each saturation limit, full scale, zero,
wrap-around, stochastic rounding at several fractional positions). Each
segment of the stream starts with a `load` row that sets the registers; the
manifest says which rows are which segment and what each covers.

Expected responses of the corner cases come from `SynapseModel`, an exact
integer model of the synapse (the same arithmetic as the emulator's kernels,
in Python ints); `export_rtl` also replays every segment through the
emulator's own kernel (export.replay) before writing, so the three (model,
kernel, RTL) are held to the same bits.
"""
from __future__ import annotations

import contextlib
import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__, safe_io
from .fixedpoint import OVERFLOWS, ROUNDINGS, Format
from .trace import TraceError

RTL_FORMAT = "mgd-emu-rtl-vectors"
RTL_VERSION = 1
MASK64 = (1 << 64) - 1
# Design errors the RTL can be compiled with (rtl/mgd_synapse.v's FAULT), to see the vectors catch them.
FAULTS = {"none": 0, "round-half-up": 1, "saturate-off-by-one": 2, "stochastic-uses-state": 3}


class RtlError(TraceError):
    """A chip or trace that the reference RTL cannot take, said in one line."""


# ================================================================ integers

def xorshift64star(state: int) -> tuple[int, int]:
    """(next state, output word) of xorshift64*, as blocks/prng.py and rtl/mgd_xorshift64s.v."""
    x = state
    x ^= x >> 12
    x ^= (x << 25) & MASK64
    x ^= x >> 27
    return x, (x * 0x2545F4914F6CDD1D) & MASK64


def lfsr32(state: int) -> tuple[int, int]:
    """(next state, code bit) of the 32-bit Galois LFSR (mask 0x80200003)."""
    bit = state & 1
    state >>= 1
    return (state ^ 0x80200003 if bit else state), bit


@dataclass(frozen=True)
class Reg:
    """A register format as integers: width, fraction bits, signed, rounding
    (0 truncate, 1 nearest-even, 2 stochastic), overflow (0 saturate, 1 wrap)."""

    width: int
    frac: int
    signed: int
    rounding: int = 1
    overflow: int = 0

    @staticmethod
    def of(fmt: Format) -> "Reg":
        return Reg(fmt.width, fmt.frac_bits, int(fmt.signed), ROUNDINGS.index(fmt.rounding),
                   OVERFLOWS.index(fmt.overflow))

    @property
    def lo(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        return (1 << (self.width - self.signed)) - 1

    def signed_code(self, word: int) -> int:
        """The code of a `width`-bit word (two's complement when signed)."""
        word &= (1 << self.width) - 1
        return word - (1 << self.width) if self.signed and word >> (self.width - 1) else word


def requant(x: int, frac_in: int, reg: Reg, rnd: int = 0, fault: int = 0) -> tuple[int, dict]:
    """(code, what happened) of the exact value x * 2^-frac_in written to `reg`.

    Exact integer arithmetic, the rules of fixedpoint.requantize_code and of
    rtl/mgd_requant.v: d = frac_in - frac dropped bits, q = x >> d, low = the
    dropped bits; nearest-even rounds up iff low > 2^(d-1) or low = 2^(d-1)
    and q odd, stochastic iff (rnd >> (64 - d)) < low; then saturate or wrap.
    fault: 1 ties round half up, 2 the upper saturation limit is one LSB low
    (the design errors the corner vectors must catch). `what`: d, low, the
    rounded q before overflow, and the flags tie, up, over, under.
    """
    d = frac_in - reg.frac
    up = False
    low = 0
    if d <= 0:
        q = x << (-d)
    else:
        q, low = x >> d, x & ((1 << d) - 1)
        half = 1 << (d - 1)
        if reg.rounding == 1:
            up = low >= half if fault == 1 else (low > half or (low == half and q & 1 == 1))
        elif reg.rounding == 2:
            up = (rnd >> (64 - d)) < low
        q += int(up)
    hi = reg.hi - (1 if fault == 2 else 0)
    over, under = q > hi, q < reg.lo
    if reg.overflow == 0:
        code = hi if over else reg.lo if under else q
    else:
        code = reg.signed_code(q)
    what = dict(d=d, low=low, q=q, tie=d > 0 and low == 1 << (d - 1), up=up, over=over, under=under)
    return code, what


# ================================================================ the synapse

@dataclass
class SynapseParams:
    """Everything rtl/mgd_synapse.v is parameterised by, from a chip."""

    c: Reg          # C~ on the broadcast line (formats.cost_change)
    p: Reg          # perturbation
    a: Reg          # presynaptic activity (node mode)
    k: Reg          # correlator gain kappa
    e: Reg          # learning rate (eta, gamma)
    theta: Reg      # the parameter (weight or bias)
    g: Reg          # integrator
    v: Reg          # velocity
    node: int       # e = C~ p kappa a (1) or C~ p kappa (0)
    momentum: int
    depth: int      # correlator delay line stages
    kappa: int      # codes
    eta: int
    gamma: int

    # Full-width intermediate formats, as the RTL sizes them (width, frac).
    @property
    def corr(self):
        wa, fa = (self.a.width + 1, self.a.frac) if self.node else (2, 0)
        return self.c.width + self.p.width + self.k.width + 3 + wa, self.c.frac + self.p.frac + self.k.frac + fa

    @property
    def g_sum(self):
        we, fe = self.corr
        fx = max(self.g.frac, fe)
        return max(self.g.width + 1 + fx - self.g.frac, we + fx - fe) + 1, fx

    @property
    def step(self):
        return self.e.width + self.g.width + 2, self.e.frac + self.g.frac

    @property
    def v_sum(self):
        ws, fs = self.step
        fgv, wgv = self.e.frac + self.v.frac, self.e.width + self.v.width + 2
        fm = max(fgv, fs)
        return max(wgv + fm - fgv, ws + fm - fs) + 1, fm

    @property
    def th_sum(self):
        ws, fs = (self.v.width + 1, self.v.frac) if self.momentum else self.step
        ft = max(self.theta.frac, fs)
        return max(self.theta.width + 1 + ft - self.theta.frac, ws + ft - fs) + 1, ft

    def defines(self) -> dict:
        """The header's `define names (without MGD_) and values."""
        out = {}
        for name, r in (("C", self.c), ("P", self.p), ("A", self.a), ("K", self.k), ("E", self.e)):
            out.update({f"W_{name}": r.width, f"F_{name}": r.frac, f"S_{name}": r.signed})
        for name, r in (("TH", self.theta), ("G", self.g), ("V", self.v)):
            out.update({f"W_{name}": r.width, f"F_{name}": r.frac, f"S_{name}": r.signed,
                        f"R_{name}": r.rounding, f"O_{name}": r.overflow})
        out.update(NODE=self.node, MOMENTUM=self.momentum, DEPTH=self.depth,
                   KAPPA=self.kappa & ((1 << self.k.width) - 1), ETA=self.eta & ((1 << self.e.width) - 1),
                   GAMMA=self.gamma & ((1 << self.e.width) - 1))
        return out


def synapse_params(chip, manifest: dict) -> SynapseParams:
    """The synapse's parameters from its chip and its golden-vector manifest
    (export.write_golden); refuses, in one line, a synapse the RTL does not model."""
    f = chip.formats
    what = f"chip {chip.name}"
    if manifest.get("integrator") != "digital":
        raise RtlError(f"{what}: the reference RTL models the digital integrator (integrator.kind = "
                       f"\"digital\"); this chip's is {manifest.get('integrator')!r}")
    momentum = manifest.get("optimizer") == "momentum"
    kind = "bias" if manifest["is_bias"] else "weight"
    stim = {c["name"]: c for c in manifest["stimulus"]}
    node = "presynaptic" in stim
    a = Reg(stim["presynaptic"]["width"], stim["presynaptic"]["frac_bits"], int(stim["presynaptic"]["signed"])) \
        if node else Reg(1, 0, 0)
    K = manifest["constants"]
    missing = [k for k in ("kappa", "eta") + (("gamma",) if momentum else ()) if k not in K]
    if missing:
        raise RtlError(f"{what}: the RTL needs fixed-point constants; formats."
                       f"{'correlator_gain' if 'kappa' in missing else 'learning_rate'} is float")
    v = Reg.of(f.velocity) if momentum else Reg(2, 0, 1)
    P = SynapseParams(
        c=Reg.of(f.cost_change), p=Reg.of(f.perturbation), a=a,
        k=Reg(K["kappa"]["width"], K["kappa"]["frac_bits"], int(K["kappa"]["signed"])),
        e=Reg(K["eta"]["width"], K["eta"]["frac_bits"], int(K["eta"]["signed"])),
        theta=Reg.of(getattr(f, kind)), g=Reg.of(f.integrator), v=v, node=int(node), momentum=int(momentum),
        depth=int(manifest["delay_line"]["depth"]), kappa=int(K["kappa"]["code"]), eta=int(K["eta"]["code"]),
        gamma=int(K["gamma"]["code"]) if momentum else 0)
    # The chip file's own check (spec: every full-width intermediate within 53
    # bits) makes the emulator's float64 arithmetic exact, so the integer model
    # and the RTL, which size their sums and products with spare sign bits,
    # hold the same values; and at most 53 bits are ever dropped in one rounding
    # (mgd_requant needs at most 64).
    return P


class SynapseModel:
    """The synapse of rtl/mgd_synapse.v, one clock edge per `step`, in exact integers."""

    def __init__(self, P: SynapseParams, fault: int = 0):
        self.P, self.fault = P, fault
        self.theta = self.g = self.v = 0
        self.sr = {"theta": 1, "g": 1, "v": 1}
        self.pline = [0] * P.depth     # oldest first
        self.aline = [0] * P.depth
        self.log = []                  # (register, requant `what`) of each write

    def correlate(self, c, p_d, a_d):
        P = self.P
        return c * p_d * P.kappa * (a_d if P.node else 1)

    def integrate(self, g, e, rnd):
        P = self.P
        _, fx = P.g_sum
        _, fe = P.corr
        return requant((g << (fx - P.g.frac)) + (e << (fx - fe)), fx, P.g, rnd, self.fault)

    def update(self, theta, s, v, rnd_v, rnd_theta):
        """(theta', v', whats) of an update edge with integrator value s."""
        P = self.P
        _, fs = P.step
        step = P.eta * s
        whats = {}
        if P.momentum:
            _, fm = P.v_sum
            fgv = P.e.frac + P.v.frac
            v, whats["v"] = requant(((P.gamma * v) << (fm - fgv)) + (step << (fm - fs)), fm, P.v, rnd_v,
                                    self.fault)
            step, fs = v, P.v.frac
        _, ft = P.th_sum
        theta, whats["theta"] = requant((theta << (ft - P.theta.frac)) - (step << (ft - fs)), ft, P.theta,
                                        rnd_theta, self.fault)
        return theta, v, whats

    def step(self, row: dict) -> tuple[int, int, int]:
        """One clock edge; row: the stimulus codes of the cycle. Returns (theta, g, v)."""
        P = self.P
        p_now = row["perturbation"] if row["gate"] else 0
        a_now = row.get("presynaptic", 0)
        p_d = self.pline[0] if P.depth else p_now
        a_d = self.aline[0] if P.depth else a_now
        if P.depth:
            self.pline = self.pline[1:] + [p_now]
            self.aline = self.aline[1:] + [a_now]
        if row["load"]:
            self.theta, self.g, self.v = row["load_theta"], row["load_integrator"], row.get("load_velocity", 0)
            for r in ("theta", "g", "v"):
                self.sr[r] = row.get(f"load_sr_{r}", self.sr[r])
            return self.theta, self.g, self.v
        s = self.g
        if row["broadcast_valid"]:
            rnd = 0
            if P.g.rounding == 2:
                self.sr["g"], rnd = xorshift64star(self.sr["g"])
            s, what = self.integrate(self.g, self.correlate(row["broadcast"], p_d, a_d), rnd)
            self.log.append(("integrator", what))
        if row["update_edge"]:
            rnd_v = rnd_t = 0
            if P.momentum and P.v.rounding == 2:
                self.sr["v"], rnd_v = xorshift64star(self.sr["v"])
            if P.theta.rounding == 2:
                self.sr["theta"], rnd_t = xorshift64star(self.sr["theta"])
            self.theta, v, whats = self.update(self.theta, s, self.v, rnd_v, rnd_t)
            if P.momentum:
                self.v = v
                self.log.append(("velocity", whats["v"]))
            self.log.append(("theta", whats["theta"]))
            self.g = 0
        else:
            self.g = s
        return self.theta, self.g, self.v


# ================================================================ the stream

class Stream:
    """Rows of the synapse stream, simulated by a SynapseModel as they are added."""

    def __init__(self, P: SynapseParams, stim_names: list[str]):
        self.P = P
        self.names = stim_names
        self.model = SynapseModel(P)
        self.rows, self.resp, self.segments = [], [], []
        self.unreachable = []     # corner cases no stimulus reaches: {case, why}
        self._hold = dict(perturbation=0, gate=0, presynaptic=0)

    def row(self, **kw):
        r = {n: 0 for n in self.names}
        r.update({k: v for k, v in self._hold.items() if k in r})
        r.update(kw)
        self.rows.append(r)
        self.resp.append(self.model.step(r))

    def load(self, case, description, theta=0, g=0, v=0, p=0, gate=0, a=0, kind="corner", fill=None):
        """Start a segment: a load row, then depth - 1 rows that fill the
        delay line with `gate ? p : 0` (and a), nothing measured, no update.
        fill: the (p, gate, a) of each of those rows instead."""
        self._close()
        fill = fill or [(p, gate, a)] * max(self.P.depth, 1)
        m = self.model
        self.segments.append(dict(case=case, kind=kind, description=description, start=len(self.rows)))
        self._log0 = len(m.log)
        for n, (pp, gg, aa) in enumerate(fill):
            self._hold = dict(perturbation=pp, gate=gg, presynaptic=aa)
            if n == 0:
                self.row(load=1, load_theta=theta, load_integrator=g, load_velocity=v,
                         **{f"load_sr_{r}": m.sr[r] for r in ("theta", "g", "v")})
            else:
                self.row()
        self._hold = dict(perturbation=p, gate=gate, presynaptic=a)

    def _close(self):
        if self.segments and "stop" not in self.segments[-1]:
            seg = self.segments[-1]
            seg["stop"] = len(self.rows)
            seg["covers"] = _coverage(self.model.log[self._log0:])

    def finish(self):
        self._close()


def _coverage(log) -> dict:
    """Counts of what the segment's register writes exercised."""
    out = {}
    for reg, w in log:
        keys = []
        if w["tie"] and not (w["over"] or w["under"]):
            keys.append("tie_even" if (w["q"] - int(w["up"])) % 2 == 0 else "tie_odd")
        if w["over"]:
            keys.append("over_max")
        if w["under"]:
            keys.append("under_min")
        if w["d"] > 0 and w["low"] != 0 and not (w["over"] or w["under"]):
            keys.append("rounded_up" if w["up"] else "rounded_down")
        for k in keys:
            out[f"{reg}.{k}"] = out.get(f"{reg}.{k}", 0) + 1
    return out


def _e_candidates(P: SynapseParams, a: int):
    """(C~ codes, p codes, e = C~ p kappa a) over a grid of stimulus codes
    (every code of formats of up to 12 / 9 bits, an even spread above)."""
    def codes(r, most):
        if r.width <= most:
            return np.arange(r.lo, r.hi + 1, dtype=np.int64)
        return np.unique(np.concatenate([np.linspace(r.lo, r.hi, 1 << most).astype(np.int64),
                                         np.arange(-64, 65, dtype=np.int64).clip(r.lo, r.hi)]))
    c, p = codes(P.c, 12), codes(P.p, 9)
    C, Pp = np.meshgrid(c, p, indexing="ij")
    C, Pp = C.ravel(), Pp.ravel()
    return C, Pp, C * Pp * P.kappa * (a if P.node else 1)


def _pick(mask, n, *arrays, key=None):
    """Up to n entries of `arrays` where mask holds, spread over the candidates
    (or the n smallest by `key`)."""
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return []
    if key is not None:
        idx = idx[np.argsort(key[idx], kind="stable")][:n]
    elif len(idx) > n:
        idx = idx[np.linspace(0, len(idx) - 1, n).astype(int)]
    return [tuple(int(a[i]) for a in arrays) for i in idx]


def _closest(low, want, size):
    """Sort key: the fraction `low` nearest `want`, then the smallest |size|
    (an update that keeps the register away from its limits)."""
    a = np.abs(size).astype(np.float64)
    return np.abs(low - want).astype(np.float64) + a / (2.0 * a.max() + 1.0)


def corner_cases(st: Stream, samples: int = 24):
    """Append the directed corner cases of the synapse to stream `st`."""
    P = st.P
    a_full = P.a.hi if P.node else 1
    C, Pp, E = _e_candidates(P, a_full)
    _, fx = P.g_sum
    _, fe = P.corr
    sh_e, d_g = fx - fe, fx - P.g.frac
    low_g = (E << sh_e) & ((1 << d_g) - 1) if d_g > 0 else np.zeros_like(E)
    # ---- integrator: G <- q_G(G + e)
    if d_g > 0:
        half = 1 << (d_g - 1)
        ties = _pick(low_g == half, 4, C, Pp, key=np.abs(E))
        if not ties and P.g.rounding == 1:
            st.unreachable.append(dict(case="integrator_tie", why=(
                f"no C~ * p * kappa{' * a' if P.node else ''} on the searched grid ({len(E)} pairs of C~ and p "
                f"codes{', every pair' if P.c.width <= 12 and P.p.width <= 9 else ''}) ends halfway between two "
                f"integrator codes")))
        for g0 in (0, 1, -2, 3):
            for c, p in ties:
                st.load("integrator_tie", "G + e exactly halfway between two integrator codes (q even and odd)",
                        g=g0, p=p, gate=1, a=a_full)
                st.row(broadcast=c, broadcast_valid=1)
                st.row(broadcast=-c, broadcast_valid=1)
        if P.g.rounding == 2:
            for k in range(1, 8):
                want = k << (d_g - 3) if d_g >= 3 else (k * (1 << d_g)) // 8
                near = _pick(low_g > 0, 1, C, Pp, key=_closest(low_g, want, E))
                for c, p in near:
                    st.load("integrator_stochastic", f"stochastic rounding of G + e at fraction {k}/8 of an LSB",
                            g=0, p=p, gate=1, a=a_full)
                    for _ in range(samples):
                        st.row(broadcast=c, broadcast_valid=1)
    # One LSB steps (exact when possible) up to and across each limit of G.
    lsb = 1 << (fx - P.g.frac)
    for sign, lim, case in ((1, P.g.hi, "integrator_max"), (-1, P.g.lo, "integrator_min")):
        exact = _pick((E << sh_e) == sign * lsb, 1, C, Pp)
        steps = exact or _pick(np.sign(E) == sign, 1, C, Pp, key=np.abs((E << sh_e) - sign * lsb))
        for c, p in steps:
            st.load(case, "G one LSB at a time to its limit, one LSB past it (saturate or wrap), and back",
                    g=lim - 2 * sign, p=p, gate=1, a=a_full)
            for _ in range(4):
                st.row(broadcast=c, broadcast_valid=1)
            st.row(broadcast=-c, broadcast_valid=1)
    big = _pick(E == E.max(), 1, C, Pp) + _pick(E == E.min(), 1, C, Pp)
    for c, p in big:
        st.load("integrator_full_scale", "the largest |C~ p kappa| into G until it saturates or wraps",
                g=0, p=p, gate=1, a=a_full)
        for _ in range(min(64, 2 + 2 * ((P.g.hi << d_g) // max(1, int(np.abs(E << sh_e).max()))))):
            st.row(broadcast=c, broadcast_valid=1)
    st.load("zero", "C~ = 0, p = 0 and G = 0: nothing moves", g=0, p=0, gate=1, a=a_full)
    st.row(broadcast=P.c.hi, broadcast_valid=1)
    st.row(broadcast=0, broadcast_valid=1, update_edge=1)
    # ---- updater: theta (and v) at an update edge with G = s loaded
    s = np.arange(P.g.lo, P.g.hi + 1, dtype=np.int64) if P.g.width <= 17 else \
        np.unique(np.linspace(P.g.lo, P.g.hi, 1 << 17).astype(np.int64))
    step = P.eta * s
    regs = [("velocity", P.v, P.v_sum)] if P.momentum else []
    regs.append(("theta", P.theta, P.th_sum))
    for name, reg, (_, f_in) in regs:
        d = f_in - reg.frac
        if name == "velocity":
            # v' = q_V(gamma * v0 + eta * s): v0 = 0 for ties and fractions, near a limit for the limits
            def x_of(v0):
                return ((P.gamma * v0) << (f_in - P.e.frac - P.v.frac)) + (step << (f_in - P.step[1]))
            load = lambda v0: dict(v=v0)                # noqa: E731
        else:
            if P.momentum:   # theta - v', v' = q_V(eta * s) with v = 0 loaded
                vq = np.array([requant(int(t) << (P.v_sum[1] - P.step[1]), P.v_sum[1], P.v, 0)[0]
                               for t in step], dtype=np.int64)
                moved = -(vq << (f_in - P.v.frac))
            else:
                moved = -(step << (f_in - P.step[1]))

            def x_of(t0):
                return (t0 << (f_in - P.theta.frac)) + moved
            load = lambda t0: dict(theta=t0)            # noqa: E731
        updates = []
        if d > 0:
            half = 1 << (d - 1)
            x = x_of(0)
            low = x & ((1 << d) - 1)
            ties = _pick(low == half, 4, s, key=np.abs(x))
            for sv, in ties:
                updates += [(f"{name}_tie", "the update lands exactly halfway between two codes "
                             "(q even and odd)", r0, sv) for r0 in (0, 1)]
            if not ties and reg.rounding == 1:   # ties matter to nearest-even only
                st.unreachable.append(dict(case=f"{name}_tie", why=(
                    f"no integrator code G{' (every one)' if P.g.width <= 17 else ''} makes the update of {name} "
                    f"end halfway between two codes" + (" (with v = 0 loaded)" if P.momentum else ""))))
            if reg.rounding == 2:
                for k in range(1, 8):
                    want = k << (d - 3) if d >= 3 else (k * (1 << d)) // 8
                    for sv, in _pick(low > 0, 1, s, key=_closest(low, want, x)):
                        updates += [(f"{name}_stochastic", f"stochastic rounding of the update at fraction "
                                     f"{k}/8 of an LSB", 0, sv)] * samples
        one = 1 << max(d, 0)
        for sign, lim, case in ((1, reg.hi, f"{name}_max"), (-1, reg.lo, f"{name}_min")):
            desc = "the update lands one LSB inside, onto and one LSB past the limit (saturate or wrap)"
            for delta in (-1, 0, 1):
                target = (lim + delta * sign) * one
                starts = [lim, lim - sign, (3 * lim) // 4, 0] if name == "velocity" else [lim + (delta - 1) * sign]
                for r0 in starts:
                    x = x_of(r0)
                    hit = _pick(x == target, 1, s) or _pick(np.abs(x - target) < one, 1, s,
                                                            key=np.abs(x - target))
                    if hit:
                        updates.append((case, desc, r0, hit[0][0]))
                        break
            x = x_of(lim)
            updates.append((case, "a full-scale update from the limit", lim,
                            int(s[np.argmax(x)] if sign > 0 else s[np.argmin(x)])))
        for case, desc, r0, sv in updates:
            st.load(case, desc, g=sv, **load(int(np.clip(r0, reg.lo, reg.hi))))
            st.row(update_edge=1)
    st.finish()


# ================================================================ export

def read_golden(folder) -> tuple[dict, dict, dict]:
    """(manifest, stimulus, response) of a golden-vector folder; codes [cycles, elements]."""
    folder = Path(folder)
    m = json.loads((folder / "manifest.json").read_text())

    def read(entry):
        w, n = entry["width"], len(entry["elements"])
        reg = Reg(w, 0, int(entry["signed"]))
        rows = [[reg.signed_code(int(line, 16) >> (e * w)) for e in range(n)]
                for line in (folder / entry["file"]).read_text().split()]
        return np.array(rows, dtype=np.int64).reshape(-1, n)
    return m, {e["name"]: read(e) for e in m["stimulus"]}, {e["name"]: read(e) for e in m["response"]}


def _columns(P: SynapseParams, kind: str):
    """(stimulus, response) columns of the synapse stream: (name, Reg, description)."""
    bit = Reg(1, 0, 0)
    word = Reg(64, 0, 0)
    stim = [("load", bit, "1: this row starts a segment; theta, G, v and the generators take the load_* values"),
            ("load_theta", P.theta, f"the {kind} theta loaded"),
            ("load_integrator", P.g, "the integrator G loaded")]
    if P.momentum:
        stim.append(("load_velocity", P.v, "the momentum register v loaded"))
    for r, reg in (("theta", P.theta), ("g", P.g), ("v", P.v)):
        if reg.rounding == 2 and (r != "v" or P.momentum):
            stim.append((f"load_sr_{r}", word, f"the xorshift64* state of {r}'s stochastic rounding loaded"))
    stim += [("broadcast", P.c, "C~ on the broadcast line"),
             ("broadcast_valid", bit, "the broadcast line carries a measurement"),
             ("perturbation", P.p, "the perturbation generator p"),
             ("gate", bit, "perturbations applied (measurement slot at this layer)")]
    if P.node:
        stim.append(("presynaptic", P.a, "presynaptic activity a"))
    stim.append(("update_edge", bit, "this cycle ends a tau_theta window: update theta, clear G"))
    resp = [("theta", P.theta, f"the {kind} theta after the clock edge"),
            ("integrator", P.g, "the integrator G after the clock edge")]
    if P.momentum:
        resp.append(("velocity", P.v, "the momentum register v after the clock edge"))
    return stim, resp


def header_text(P: SynapseParams, manifest: dict) -> str:
    """The Verilog header of the synapse: its widths, modes and constants as `define MGD_*."""
    names = dict(C="cost change C~ (broadcast)", P="perturbation p", A="presynaptic activity a (node mode)",
                 K="correlator gain kappa", E="learning rate eta, gamma", TH="the parameter theta",
                 G="integrator G", V="momentum register v")
    lines = [f"// mgd-emu {__version__}: chip {manifest['chip']}, synapse {manifest['parameter']}, seed "
             f"{manifest['seed']}", "// Formats: W_ width, F_ fraction bits, S_ signed, R_ rounding (0 truncate, "
             "1 nearest-even, 2 stochastic), O_ overflow (0 saturate, 1 wrap).",
             "// KAPPA, ETA, GAMMA: constant codes. DEPTH: correlator delay line stages.",
             "`ifndef MGD_CHIP_VH", "`define MGD_CHIP_VH"]
    D = P.defines()
    for key, value in D.items():
        what = names.get(key.split("_", 1)[-1], "")
        if key in ("KAPPA", "ETA", "GAMMA"):
            w = D["W_K"] if key == "KAPPA" else D["W_E"]
            text = f"{w}'h{value:x}"
        else:
            text = str(value)
        lines.append(f"`define MGD_{key:<9} {text:<10}" + (f" // {what}" if what and key.startswith("W_") else ""))
    lines += ["`endif", ""]
    return "\n".join(lines)


# The sub-folders an RTL export owns in its output folder (anything else there is the user's).
EXPORT_PARTS = ("golden", "synapse", "lfsr", "activation")


def export_rtl(t, out, block: str = "synapse", start=None, stop=None, samples: int = 24) -> list[Path]:
    """Write what the reference RTL needs for one synapse of trace `t` into folder `out`.

    out/golden/: export.write_golden's vectors; out/synapse/: mgd_chip.vh, the
    stream's hex files and manifest.json (run segment, then corner cases);
    out/lfsr/ and out/activation/ where the chip has them. Returns the
    written paths.

    The export is written into a hidden folder inside `out` and moves into
    place only once whole, replacing the sub-folders of an earlier export
    (EXPORT_PARTS; nothing else in `out`): an interrupted export leaves the
    earlier one as it was, never a mix of the two.
    """
    import os
    import shutil

    from .errors import critical

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RtlError(f"{out}: RTL vectors go into a folder, and this is a file")
    if block != "synapse" and not block.startswith("synapse:"):
        raise RtlError(f"--block {block!r}: the reference RTL is the synapse; give synapse or "
                       f"synapse:layer0.weight[0,0]")
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    for left in out.glob(".export-tmp-*"):   # left by an export that was killed (SIGKILL, power loss)
        pid = left.name.split("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(left, ignore_errors=True)
    stage = out / f".export-tmp-{os.getpid()}-{os.urandom(3).hex()}"
    moved_old, moved_new = [], []
    try:
        written = _export_rtl_into(t, stage, block, start, stop, samples)
        with critical():   # a signal waits until every part is in place
            try:
                for part in EXPORT_PARTS:
                    if (out / part).exists():
                        (out / part).rename(stage / f"old-{part}")
                        moved_old.append(part)
                    if (stage / part).exists():
                        (stage / part).rename(out / part)
                        moved_new.append(part)
            except OSError as exc:   # put back what had moved: the earlier export, whole
                for part in moved_new:
                    shutil.rmtree(out / part, ignore_errors=True)
                for part in moved_old:
                    (stage / f"old-{part}").rename(out / part)
                raise RtlError(f"{out}: the export could not be moved into place ({exc}); the earlier one "
                               f"is as it was") from None
    except BaseException:
        if made:
            shutil.rmtree(stage, ignore_errors=True)
            with contextlib.suppress(OSError):
                out.rmdir()   # only if empty: the folder this export made, and nothing else
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [out / p.relative_to(stage) for p in written]


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True   # alive, another user's
    return True


def _export_rtl_into(t, out: Path, block, start, stop, samples) -> list[Path]:
    from . import export

    chip = t.data_chip("the RTL export")
    paths = export.write_golden(t, out / "golden", block=block, start=start, stop=stop)
    man, stim, resp = read_golden(out / "golden")
    P = synapse_params(chip, man)
    kind = "bias" if man["is_bias"] else "weight"
    s_cols, r_cols = _columns(P, kind)
    st = Stream(P, [c[0] for c in s_cols])
    # The run segment: a load row, the delay line refilled, then the run's cycles.
    dl = man["delay_line"]
    pre = dl.get("presynaptic_codes", [0] * len(dl["codes"]))
    gens = {({"integrator": "g", "velocity": "v"}).get(k, "theta"): int(v, 16)
            for k, v in man.get("rounding_generators", {}).items()}
    st.model.sr.update(gens)
    fill = [(c, 1, a) for c, a in zip(dl["codes"], pre)] or [(0, 0, 0)]
    st.load("run", f"cycles {man['cycles']['start']}:{man['cycles']['stop']} of the trace", kind="run",
            theta=man["initial"][kind]["code"], g=man["initial"]["integrator"]["code"],
            v=man["initial"].get("velocity", {}).get("code", 0), fill=fill)
    n0 = len(st.rows)
    for n in range(man["cycles"]["count"]):
        st.row(**{name: int(stim[name][n, 0]) for name in stim if name in st.names})
    got = np.array(st.resp[n0:], dtype=np.int64)
    for c, name in enumerate([kind, "integrator", "velocity"][:len(r_cols)]):
        bad = np.flatnonzero(got[:, c] != resp[name][:, 0])
        if len(bad):
            raise RtlError(f"{t.path}: the integer model of the synapse differs from the emulator at cycle "
                           f"{man['cycles']['start'] + int(bad[0])} ({name}: emulator {int(resp[name][bad[0], 0])}, "
                           f"model {int(got[bad[0], c])})")
    st._close()
    st.segments[0].update(first_row=n0, first_cycle=man["cycles"]["start"])
    corner_cases(st, samples)
    _check_with_kernel(st, man, chip, kind, export)
    # ---------------------------------------------------------- write
    folder = out / "synapse"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    cols = {name: [r[name] for r in st.rows] for name, _, _ in s_cols}
    for c, (name, _, _) in enumerate(r_cols):
        cols[name] = [r[c] for r in st.resp]
    entries = {}
    for name, reg, desc in s_cols + r_cols:
        digits = (reg.width + 3) // 4
        path = folder / f"{name}.hex"
        safe_io.write_text(path, "".join(f"{int(v) & ((1 << reg.width) - 1):0{digits}x}\n" for v in cols[name]))
        written.append(path)
        entries[name] = dict(name=name, file=path.name, description=desc, width=reg.width, signed=bool(reg.signed),
                             frac_bits=reg.frac, hex_digits=digits)
    header = folder / "mgd_chip.vh"
    safe_io.write_text(header, header_text(P, man))
    written.append(header)
    segs = st.segments
    totals = {}
    for sgm in segs:
        if sgm["kind"] == "corner":
            for k, v in sgm["covers"].items():
                totals[k] = totals.get(k, 0) + v
    manifest = dict(format=RTL_FORMAT, format_version=RTL_VERSION, mgd_emu_version=__version__,
                    chip=man["chip"], seed=man["seed"], block="synapse", parameter=man["parameter"], kind=kind,
                    header=header.name, golden="../golden", rows=len(st.rows),
                    parameters=P.defines(),
                    meaning=("row n: stimulus applied during cycle n, response = the registers after the clock "
                             "edge that ends it; a row with load = 1 starts a segment"),
                    run_rows=[segs[0]["start"], segs[0]["stop"]], corner_rows=[segs[1]["start"], len(st.rows)],
                    corner_coverage=totals, unreachable=st.unreachable, stimulus=[entries[c[0]] for c in s_cols],
                    response=[entries[c[0]] for c in r_cols],
                    segments=[{k: v for k, v in sgm.items() if k not in ("delay_line", "presynaptic_line",
                                                                          "generators", "initial")}
                              for sgm in segs])
    # The perturbation code generators and the activation tables.
    try:
        written += write_lfsr_states(chip, man["seed"], out / "lfsr")
        manifest["lfsr"] = "../lfsr"
    except RtlError as exc:
        manifest["lfsr"] = f"not exported: {exc}"
    try:
        written += write_activation_luts(chip, out / "activation")
        manifest["activation"] = "../activation"
    except RtlError as exc:
        manifest["activation"] = f"not exported: {exc}"
    path = folder / "manifest.json"
    safe_io.write_text(path, json.dumps(manifest, indent=1) + "\n")
    written.append(path)
    return paths + written


def write_lfsr_states(chip, seed: int, out) -> list[Path]:
    """states.hex (every perturbation generator's 32-bit LFSR state at cycle 0)
    and lfsr.json (amplitude code, perturbation width, meaning) in folder `out`,
    for rtl/mgd_lfsr32.v. Code-multiplexed chips only."""
    from .engine import Emulator

    if chip.perturbation.multiplexing != "code":
        raise RtlError(f"chip {chip.name}: perturbation.multiplexing is {chip.perturbation.multiplexing!r}; "
                       f"the LFSR generates code multiplexing")
    from .export import chip_state

    states = [int(v) for v in chip_state(chip.replace({"trace.probes": []}), seed).gen.lfsr]
    fmt = chip.formats.perturbation
    codes = Emulator(chip.replace({"trace.probes": []}), seed).codes
    amp = max(abs(int(c)) for name, v in codes.items() if name.endswith("perturbation") for c in np.ravel(v))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hexf = out / "states.hex"
    safe_io.write_text(hexf, "".join(f"{v:08x}\n" for v in states))
    meta = out / "lfsr.json"
    safe_io.write_text(meta, json.dumps(dict(
        chip=chip.name, seed=seed, mgd_emu_version=__version__, generators=len(states), amplitude=amp,
        width=fmt.width, frac_bits=fmt.frac_bits, states=states, file=hexf.name,
        meaning="line g: generator g's LFSR state at cycle 0 (its perturbation register already holds code 0); "
                "loaded into rtl/mgd_lfsr32.v and stepped once per tau_p, it gives codes 1, 2, ... "
                "(+amplitude for a 1 bit, -amplitude for a 0 bit)"), indent=1) + "\n")
    return [hexf, meta]


def _check_with_kernel(st: Stream, man: dict, chip, kind: str, export):
    """Replay every corner segment through the emulator's synapse kernel
    (export.replay) and require the model's bits."""
    P = st.P
    for sgm in st.segments[1:]:
        a, b = sgm["start"] + 1, sgm["stop"]     # the load row is not a kernel cycle
        if b <= a:
            continue
        n = b - a
        lines = _lines_after(st, sgm["start"])
        m = copy.deepcopy(man)
        first = 1000
        m["cycles"] = dict(start=first, stop=first + n, count=n)
        load = st.rows[sgm["start"]]
        m["initial"] = {kind: dict(code=load["load_theta"]), "integrator": dict(code=load["load_integrator"])}
        if P.momentum:
            m["initial"]["velocity"] = dict(code=load["load_velocity"])
        m["delay_line"] = dict(m["delay_line"], codes=lines[0])
        if P.node:
            m["delay_line"]["presynaptic_codes"] = lines[1]
        gens = {}
        for r, name in (("theta", kind), ("g", "integrator"), ("v", "velocity")):
            if f"load_sr_{r}" in load:
                gens[name] = format(load[f"load_sr_{r}"], "016x")
        m["rounding_generators"] = gens
        rows = st.rows[a:b]
        stim = {name: np.array([[r[name]] for r in rows], dtype=np.int64)
                for name in ("broadcast", "broadcast_valid", "perturbation", "gate", "update_edge")}
        stim["measure"] = np.zeros((n, 1), dtype=np.int64)
        if P.node:
            stim["presynaptic"] = np.array([[r["presynaptic"]] for r in rows], dtype=np.int64)
        got = export.replay(m, stim, chip)
        want = np.array(st.resp[a:b], dtype=np.int64)
        for c, name in enumerate([kind, "integrator", "velocity"][:want.shape[1] if P.momentum else 2]):
            bad = np.flatnonzero(got[name][:, 0] != want[:, c])
            if len(bad):
                raise RtlError(f"corner case {sgm['case']}: the emulator's kernel and the integer model differ "
                               f"at row {a + int(bad[0])} ({name}: kernel {int(got[name][bad[0], 0])}, model "
                               f"{int(want[bad[0], c])})")


def _lines_after(st: Stream, row: int) -> tuple[list, list]:
    """The delay lines (gated p, presynaptic a; oldest first) after stream row `row`,
    re-derived from the rows (the model keeps only the present)."""
    d = st.P.depth
    if d == 0:
        return [], []
    ps, as_ = [], []
    for r in st.rows[max(0, row + 1 - d):row + 1]:
        ps.append(r["perturbation"] if r["gate"] else 0)
        as_.append(r.get("presynaptic", 0))
    pad = d - len(ps)
    return [0] * pad + ps, [0] * pad + as_


# ================================================================ activation LUT

def _activation(kind: str, z: float) -> float:
    """The neuron's nonlinearity in float64, as blocks/neuron.py evaluates it (libm)."""
    import math

    if kind == "sigmoid":
        return 1.0 / (1.0 + math.exp(-z))
    if kind == "tanh":
        return math.tanh(z)
    if kind == "relu":
        return z if z > 0.0 else 0.0
    if kind == "hard_sigmoid":
        return min(max(0.2 * z + 0.5, 0.0), 1.0)
    return z


def activation_lut(chip, layer: int) -> dict:
    """The exact lookup table of layer `layer`'s activation: the activation
    code q_act(f(z)) for every code z of the full-precision pre-activation
    (z_frac fraction bits) between z_lo and z_lo + len(codes) - 1, outside
    which the code is constant. Refuses what a table cannot hold."""
    f = chip.formats
    n_layers = len(chip.layer_sizes) - 1
    if not 0 <= layer < n_layers:
        raise RtlError(f"layer {layer}: this chip has layers 0 to {n_layers - 1}")
    src = f.input if layer == 0 else f.activation
    classes = ["weight", "bias", "perturbation", "activation", "input"]
    floats = [c for c in classes if not getattr(f, c).is_fixed]
    if floats:
        raise RtlError(f"chip {chip.name}: an activation table needs fixed-point formats "
                       f"({', '.join('formats.' + c for c in floats)} are float)")
    if f.activation.rounding == "stochastic":
        raise RtlError(f"chip {chip.name}: formats.activation rounds stochastically, so the activation is not a "
                       f"function of z alone and no table holds it")
    noise = chip.noise
    for key in ("gain_sigma", "offset_sigma", "activation_sigma"):
        if getattr(noise, key) != 0.0:
            raise RtlError(f"chip {chip.name}: noise.{key} = {getattr(noise, key)} makes every neuron's "
                           f"activation differ; an activation table needs it 0")
    weight_mode = chip.perturbation.mode == "weight"
    w_frac = max(f.weight.frac_bits, f.perturbation.frac_bits if weight_mode else 0)
    z_frac = max(w_frac + src.frac_bits, f.bias.frac_bits, f.perturbation.frac_bits)
    fan_in = chip.layer_sizes[layer]

    def mag(fmt):
        return max(abs(fmt.min_code), fmt.max_code) * 2 ** (z_frac - fmt.frac_bits)
    w_mag = max(abs(f.weight.min_value), f.weight.max_value) + max(abs(f.perturbation.min_value),
                                                                  f.perturbation.max_value)
    z_max = int(fan_in * w_mag * max(abs(src.min_value), src.max_value) * 2 ** z_frac) + mag(f.bias) + \
        mag(f.perturbation)
    if 2 * z_max + 1 > 1 << 24:
        raise RtlError(f"chip {chip.name}: layer {layer}'s pre-activation spans {2 * z_max + 1} codes; an exact "
                       f"table of more than 2^24 entries is not exported")
    act = chip.network.output_activation if layer == n_layers - 1 else chip.network.activation
    fmt = f.activation
    zs = np.arange(-z_max, z_max + 1, dtype=np.int64)
    vals = np.array([_activation(act, float(z) * 2.0 ** -z_frac) for z in zs.tolist()])
    s = vals * 2.0 ** fmt.frac_bits
    r = np.rint(s) if fmt.rounding == "nearest-even" else np.floor(s)
    r = np.nan_to_num(r, nan=0.0)
    if fmt.overflow == "saturate":
        codes = np.clip(r, fmt.min_code, fmt.max_code).astype(np.int64)
    else:
        w = fmt.width
        codes = r.astype(np.int64) & ((1 << w) - 1)
        codes = np.where(fmt.signed & (codes >> (w - 1) == 1), codes - (1 << w), codes)
    change = np.flatnonzero(np.diff(codes) != 0)
    lo, hi = (int(change[0]), int(change[-1]) + 1) if len(change) else (0, 0)
    return dict(layer=layer, function=act, z_frac=z_frac, z_lo=int(zs[lo]), z_hi=int(zs[hi]),
                z_width=int(z_max).bit_length() + 1, codes=codes[lo:hi + 1], width=fmt.width,
                signed=fmt.signed, frac_bits=fmt.frac_bits)


def write_activation_luts(chip, out) -> list[Path]:
    """activation_layer<i>.hex and act.vh (each table's z format, range and depth) in folder `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"// mgd-emu {__version__}: chip {chip.name}, activation lookup tables (rtl/mgd_act_lut.v)",
             "// z: the pre-activation code, Z_FRAC fraction bits; entry n holds a(Z_LO + n).",
             "`ifndef MGD_ACT_VH", "`define MGD_ACT_VH"]
    paths, meta = [], []
    for layer in range(len(chip.layer_sizes) - 1):
        t = activation_lut(chip, layer)
        meta.append({k: v for k, v in t.items() if k != "codes"} | dict(depth=len(t["codes"]),
                                                                        file=f"activation_layer{layer}.hex"))
        digits = (t["width"] + 3) // 4
        path = out / f"activation_layer{layer}.hex"
        safe_io.write_text(path, "".join(f"{int(c) & ((1 << t['width']) - 1):0{digits}x}\n" for c in t["codes"]))
        paths.append(path)
        p = f"MGD_L{layer}_"
        lines += [f"// layer {layer}: {t['function']}",
                  f"`define {p}W_Z    {t['z_width']}", f"`define {p}Z_FRAC {t['z_frac']}",
                  f"`define {p}Z_LO   {t['z_lo']}", f"`define {p}DEPTH  {len(t['codes'])}",
                  f"`define {p}W_A    {t['width']}", f"`define {p}LUT    \"{path.name}\""]
    lines += ["`endif", ""]
    header = out / "act.vh"
    safe_io.write_text(header, "\n".join(lines))
    index = out / "activation.json"
    safe_io.write_text(index, json.dumps(dict(chip=chip.name, mgd_emu_version=__version__, layers=meta,
                                     meaning="entry n of a layer's table: the activation code of pre-activation "
                                             "code z_lo + n (z_frac fraction bits); constant below and above"),
                                indent=1) + "\n")
    return paths + [header, index]
