"""Ready-made properties: plain functions that raise AssertionError with a
message naming what differs, and the measurements they are built on.

Every property that builds emulators takes `rules=`: user synapse rules
(mgd_emu.rules.SynapseRules) to run instead of the built-in ones.

They use only the emulator's public API (registers, codes, events, checkpoint,
run, run_steps, evaluate, samples) and the float64 oracle `mgd_emu.reference`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..reference import Reference, exact_gradient
from ..spec import Chip
from ..tasks import make_task


def _emulator():
    from .. import Emulator  # the engine compiles its kernels on import: load it when first used

    return Emulator


def _build(Emulator, *args, rules=None, **kw):
    """Emulator(*args, **kw), with rules= only when given (an engine class a
    test stands in for the real one need not take it)."""
    return Emulator(*args, **kw) if rules is None else Emulator(*args, rules=rules, **kw)


def _restore(Emulator, checkpoint, rules=None):
    return Emulator.restore(checkpoint) if rules is None else Emulator.restore(checkpoint, rules=rules)


def _at(index) -> str:
    """An element's index as [0, 1] ("" for a scalar register)."""
    return "[" + ", ".join(str(int(i)) for i in index) + "]" if index else ""


def _where(chip: Chip, seed) -> str:
    return f"chip {chip.name or chip.source!r}, seed {seed}"


# -- registers in range ------------------------------------------------------------

def assert_registers_in_range(emu, names=None) -> None:
    """Every fixed-point register (or those in `names`) holds a value of its
    format: a whole number of LSBs, with a code in [min_code, max_code]."""
    regs, codes = emu.registers, emu.codes
    if names is not None:   # a name, or any iterable of them (read once)
        names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in (names or ()) if n not in regs]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], list(regs), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (the chip's registers: {', '.join(regs)})"
        raise ValueError(f"no register {unknown[0]!r}{hint}")
    for name in (codes if names is None else names):
        fmt = emu.register_format(name)
        if fmt is None or not fmt.is_fixed:
            continue
        code = np.asarray(codes[name])
        value = np.asarray(regs[name], dtype=float)
        bad = np.flatnonzero((code < fmt.min_code) | (code > fmt.max_code))
        if bad.size:
            i = np.unravel_index(bad[0], code.shape) if code.shape else ()
            raise AssertionError(
                f"{name}{_at(i)} = {float(value[i])!r} (code {int(code[i])}) at cycle {emu.cycle} is "
                f"outside its format {fmt.describe()}: codes {fmt.min_code}..{fmt.max_code} "
                f"({len(bad)} of {code.size} elements out of range)")
        off = np.flatnonzero(code * fmt.lsb != value)
        if off.size:
            i = np.unravel_index(off[0], code.shape) if code.shape else ()
            raise AssertionError(
                f"{name}{_at(i)} = {float(value[i])!r} at cycle {emu.cycle} is not a multiple of its "
                f"format's LSB {fmt.lsb!r} ({fmt.describe()})")


# -- bit-exact state ---------------------------------------------------------------

def _first_difference(a, b, path: str):
    """The path of the first difference between two checkpoint trees, or None."""
    if isinstance(a, dict) or isinstance(b, dict):
        if not (isinstance(a, dict) and isinstance(b, dict)):
            return path
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{path}.{key}"
            d = _first_difference(a[key], b[key], f"{path}.{key}")
            if d:
                return d
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return path
        for k, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{path}[{k}]")
            if d:
                return d
        return None
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return path
        return None if np.array_equal(a, b, equal_nan=a.dtype.kind in "fc") else path
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return None
    return None if a == b else path


def assert_same_state(a, b, where: str = "") -> None:
    """Two emulators are bit-identical: cycle and step counters, every
    register, the event counters and the whole checkpointed state (which
    includes what no register shows: generator states, delay lines)."""
    at = f" ({where})" if where else ""
    if (a.cycle, a.step) != (b.cycle, b.step):
        raise AssertionError(f"cycle/step {a.cycle}/{a.step} != {b.cycle}/{b.step}{at}")
    ra, rb = a.registers, b.registers
    if set(ra) != set(rb):
        raise AssertionError(f"different registers: {sorted(set(ra) ^ set(rb))}{at}")
    for name in ra:
        x, y = np.asarray(ra[name]), np.asarray(rb[name])
        if x.shape != y.shape:
            raise AssertionError(f"{name} has shape {x.shape} != {y.shape}{at}")
        if not np.array_equal(x, y, equal_nan=True):
            i = np.unravel_index(np.flatnonzero((x != y) & ~(np.isnan(x) & np.isnan(y)))[0], x.shape) if x.shape else ()
            raise AssertionError(f"{name}{_at(i)} differs at cycle {a.cycle}: "
                                 f"{float(x[i])!r} != {float(y[i])!r}{at}")
    if a.events != b.events:
        diff = {k: (a.events[k], b.events.get(k)) for k in a.events if a.events[k] != b.events.get(k)}
        raise AssertionError(f"event counters differ at cycle {a.cycle}: {diff}{at}")
    d = _first_difference(a.checkpoint(), b.checkpoint(), "checkpoint")
    if d:
        raise AssertionError(f"hidden state {d} differs at cycle {a.cycle} (every register agrees){at}")


def assert_split_runs_bit_exact(chip: Chip, seed: int, splits, steps: bool = False, rules=None) -> None:
    """Running sum(splits) cycles in one call and in len(splits) calls (zeros
    allowed) give bit-identical emulators; with steps=True, measurement steps
    (`run_steps`) instead of cycles."""
    Emulator = _emulator()
    splits = [int(n) for n in splits]
    one, parts = _build(Emulator, chip, seed, rules=rules), _build(Emulator, chip, seed, rules=rules)
    advance = "run_steps" if steps else "run"
    getattr(one, advance)(sum(splits))
    for n in splits:
        getattr(parts, advance)(n)
    assert_same_state(one, parts, f"{_where(chip, seed)}: one {advance}({sum(splits)}) vs {advance} of {splits}")


def assert_restore_bit_exact(chip: Chip, seed: int, before: int, after: int, rules=None) -> None:
    """A checkpoint taken after `before` cycles and restored runs the next
    `after` cycles bit-identically to the emulator it was taken from, and
    restoring it does not depend on what the original did since."""
    Emulator = _emulator()
    a = _build(Emulator, chip, seed, rules=rules).run(before)
    cp = a.checkpoint()
    at_checkpoint = _restore(Emulator, cp, rules)
    assert_same_state(a, at_checkpoint, f"{_where(chip, seed)}: restored at cycle {before}")
    a.run(after)
    b = _restore(Emulator, cp, rules).run(after)
    assert_same_state(a, b, f"{_where(chip, seed)}: checkpoint at cycle {before}, then {after} cycles")


# -- the float64 oracle ------------------------------------------------------------

def assert_registers_match(emu, ref, where: str, atol: float = 1e-12) -> None:
    """Every register the reference models exists on the chip and holds the
    same value (to `atol`)."""
    got, want = emu.registers, ref.registers
    missing = sorted(set(want) - set(got))
    assert not missing, f"registers the reference has but the chip lacks: {missing}"
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=0, atol=atol, err_msg=f"{name} {where}")


def assert_matches_reference(chip: Chip, seed: int, steps: int, check_every: int = 1,
                             atol: float = 1e-12) -> None:
    """A float-ideal chip (float formats, zero latency, no noise) equals the
    float64 oracle `mgd_emu.reference.Reference` register by register: at reset
    and after every `check_every`-th step and the last. The oracle refuses
    (ValueError) a chip with latency or noise."""
    Emulator = _emulator()
    fixed = [name for name, fmt in chip.formats.items() if fmt.get("kind") == "fixed"]
    if fixed:
        raise ValueError(f"the reference models float formats only; {chip.name or chip.source} has fixed "
                         f"formats.{', formats.'.join(fixed)}")
    emu, ref = Emulator(chip, seed), Reference(chip, seed)
    assert_registers_match(emu, ref, "at reset", atol)
    for k in range(1, steps + 1):
        emu.run_steps(1)
        ref.step()
        if k % check_every == 0 or k == steps:
            assert_registers_match(emu, ref, f"after step {k} ({_where(chip, seed)})", atol)


# -- gradient estimates ------------------------------------------------------------

def _layers(regs) -> int:
    return sum(1 for name in regs if re.fullmatch(r"layer\d+\.weight", name))


def _flat(regs, suffix_w: str, suffix_b: str) -> np.ndarray:
    """Per layer: weights row-major, then biases if the chip has them."""
    parts = []
    for i in range(_layers(regs)):
        parts.append(np.asarray(regs[f"layer{i}.{suffix_w}"], float).ravel())
        if f"layer{i}.{suffix_b}" in regs:
            parts.append(np.asarray(regs[f"layer{i}.{suffix_b}"], float).ravel())
    return np.concatenate(parts)


def parameter_vector(emu) -> np.ndarray:
    """The chip's parameters theta, flattened (per layer: weights row-major, biases)."""
    return _flat(emu.registers, "weight", "bias")


def integrator_vector(emu) -> np.ndarray:
    """The synapse integrators G, flattened in the order of `parameter_vector`."""
    return _flat(emu.registers, "weight_integrator", "bias_integrator")


@lru_cache(maxsize=8)
def _task(chip: Chip):
    return make_task(chip.task.name, **chip.task_params())


def gradient_vector(emu) -> np.ndarray:
    """The exact gradient (backpropagation, `mgd_emu.reference.exact_gradient`)
    of the cost of the training sample the chip holds now, at its current
    parameters, in the order of `parameter_vector`."""
    regs, chip = emu.registers, emu.chip
    n = _layers(regs)
    W = [regs[f"layer{i}.weight"] for i in range(n)]
    b = [regs.get(f"layer{i}.bias", np.zeros(np.shape(W[i])[0])) for i in range(n)]
    data = _task(chip).train
    idx = int(regs["sample_index"])
    dW, db = exact_gradient(chip, W, b, data.inputs[idx:idx + 1], data.targets[idx:idx + 1])
    return np.concatenate([np.concatenate([w.ravel(), v if chip.network.bias else v[:0]])
                           for w, v in zip(dW, db)])


def cosine(a, b) -> float:
    """Cosine of the angle between two vectors (nan if either is zero)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na and nb else math.nan


HOLD = 10**9  # tau_x that holds one sample for the whole measurement


def frozen_chip(chip: Chip, steps: int, window: int | None = None) -> Chip:
    """`chip` made to only estimate: learning rate 0, one training sample held
    (tau_x = 10**9), and (digital integrators) no clearing of the integrators
    within `steps` measurement steps, or clearing every `window` steps (tau_theta
    = window, a multiple of tau_p) to keep a narrow integrator in range. An
    analog integrator keeps its time constant tau_theta."""
    over = {"optimizer.learning_rate": 0.0, "timing.tau_x": HOLD}
    if window is not None and window < 2:
        raise ValueError("window must be >= 2 (a window of 1 clears before it can be read)")
    if chip.integrator.kind == "digital":
        tau_p = chip.timing.tau_p
        if window is not None and window % tau_p:
            raise ValueError(f"window={window} must be a multiple of the chip's timing.tau_p = {tau_p} (the "
                             f"integrators clear every window steps: timing.tau_theta = window)")
        over["timing.tau_theta"] = window if window is not None else tau_p * (steps // tau_p + 1)
    elif window is not None:
        raise ValueError("window applies to a digital integrator (an analog one never clears)")
    return chip.replace(over)


@dataclass(frozen=True)
class GradientEstimate:
    """What a frozen chip's integrators measured. `total`: the correlator outputs
    summed over `count` steps (digital), or the leaky integrator's value
    (analog, count 1); `gradient`: the exact gradient of the held sample;
    `windows`: with a window, each window's sum ([windows, P]), else None;
    `saturations`: the integrator writes that saturated or wrapped (nonzero:
    the sums were clipped by formats.integrator, not measured)."""

    total: np.ndarray
    count: int
    gradient: np.ndarray
    windows: np.ndarray | None = None
    saturations: int = 0   # integrator writes that saturated or wrapped during the measurement

    @property
    def standard_error(self) -> float:
        """The statistical error of `mean` (its expected norm), from the spread
        of the window sums; nan without at least two windows."""
        if self.windows is None or len(self.windows) < 2:
            return math.nan
        per_step = self.windows / (self.count / len(self.windows))
        return float(np.linalg.norm(per_step.std(axis=0, ddof=1)) / math.sqrt(len(self.windows)))

    @property
    def mean(self) -> np.ndarray:
        """The mean correlator output per step (analog: the integrator itself)."""
        return self.total / self.count

    @property
    def cosine(self) -> float:
        return cosine(self.total, self.gradient)

    @property
    def relative_error(self) -> float:
        """|mean - gradient| / |gradient|."""
        return float(np.linalg.norm(self.mean - self.gradient) / np.linalg.norm(self.gradient))


def gradient_estimate(chip: Chip, seed: int, steps: int, window: int | None = None,
                      rules=None) -> GradientEstimate:
    """Run `frozen_chip(chip, steps, window)` for `steps` measurement steps and
    collect its integrators. With a window, steps // window windows run, and
    each window's integrators are read one step before they clear (window - 1
    correlations each) and summed. `rules`: user synapse rules
    (mgd_emu.rules.SynapseRules) to measure instead of the built-in ones."""
    Emulator = _emulator()
    emu = _build(Emulator, frozen_chip(chip, steps, window), seed, rules=rules)
    grad = gradient_vector(emu)
    if window is None:
        emu.run_steps(steps)
        return GradientEstimate(np.asarray(integrator_vector(emu), float),
                                steps if chip.integrator.kind == "digital" else 1, grad,
                                saturations=_integrator_events(emu))
    if steps < window:
        raise ValueError(f"steps={steps} is less than one window of {window}")
    sums = []
    for _ in range(steps // window):
        emu.run_steps(window - 1)
        sums.append(integrator_vector(emu))
        emu.run_steps(1)
    sums = np.array(sums)
    return GradientEstimate(sums.sum(axis=0), len(sums) * (window - 1), grad, sums, _integrator_events(emu))


def _integrator_events(emu) -> int:
    return sum(sat + wrap for name, (sat, wrap) in emu.events.items() if name.endswith("_integrator"))


def _clipped(est: GradientEstimate, chip: Chip, steps: int, window) -> str:
    """What a failure message adds when the integrators saturated or wrapped
    during the measurement ("" when they did not): the sums were clipped by
    the format, which may be the rule under test or may be the harness."""
    if not est.saturations:
        return ""
    fmt = chip.formats.integrator
    advice = "a shorter window" if window is not None else "window=W to clear them every W steps"
    return (f". The integrators saturated or wrapped {est.saturations:,} times in the {steps:,} steps "
            f"(formats.integrator {fmt.describe()}, up to {fmt.max_value:g}): the sums were clipped by the "
            f"format; unless that clipping is what is under test, use {advice}, or a wider formats.integrator")


def assert_gradient_aligned(chip: Chip, seed: int, steps: int, min_cosine: float,
                            window: int | None = None, rules=None) -> float:
    """At frozen weights (`frozen_chip`), the integrated estimate after `steps`
    steps has cosine >= min_cosine with the exact gradient of the held sample.
    Returns the measured cosine. A failure says so when the integrators
    saturated or wrapped during the measurement."""
    est = gradient_estimate(chip, seed, steps, window, rules)
    c = est.cosine
    if not c >= min_cosine:
        raise AssertionError(f"gradient estimate after {steps} steps has cosine {c:.4f} with the exact gradient, "
                             f"below {min_cosine} ({_where(chip, seed)}; |gradient| = "
                             f"{np.linalg.norm(est.gradient):.3g}, |estimate| = {np.linalg.norm(est.total):.3g})"
                             + _clipped(est, chip, steps, window))
    return c


def assert_correlator_unbiased(chip: Chip, seed: int, steps: int, tolerance: float = 0.1,
                               window: int | None = None, z: float = 4.0, rules=None) -> float:
    """With ``perturbation.normalization = "power"`` the correlator output is an
    unbiased estimate of the gradient: at frozen weights its mean over `steps`
    steps is within `tolerance` * |gradient| of the exact gradient, plus, with
    a `window`, `z` standard errors of the mean (measured from the spread of
    the window sums). Returns the measured relative error
    |mean - gradient| / |gradient|.

    The mean carries statistical noise as well as any bias. Without a window
    the noise is not measured, so `tolerance` must cover it: with code
    multiplexing each step's estimate holds the other P - 1 components as
    noise, a relative error of about sqrt(P / steps) (P generators), so
    choose steps >= 4 P / tolerance**2. With a window the noise is measured
    and allowed for (z = 4: an unbiased rule fails about once in 10**4), so
    `tolerance` bounds the bias alone, and a small gradient, whose relative
    noise is large, is not mistaken for a bias.

    A narrow integrator saturates over many steps (s4.11 holds +-16): a
    failure then says so (use a window). Refused (ValueError): an analog
    integrator (its value is a leaky average, not a mean). A highpass
    baseline passes only tau_hp / (tau_hp + 1) of the cost change, so its
    mean is that fraction of the gradient and it fails this check, as it
    should."""
    if chip.integrator.kind != "digital":
        raise ValueError(f"the mean correlator output is measured with a digital integrator "
                         f"({chip.name or chip.source} has an {chip.integrator.kind} one, a leaky average)")
    if chip.perturbation.normalization != "power":
        raise ValueError(f'the mean correlator output is the gradient only with perturbation.normalization = '
                         f'"power" ({chip.name or chip.source} has "{chip.perturbation.normalization}")')
    est = gradient_estimate(chip, seed, steps, window, rules)
    g = float(np.linalg.norm(est.gradient))
    err = est.relative_error
    noise = z * est.standard_error if window is not None else 0.0
    if not err * g <= tolerance * g + noise:
        bias = est.mean - est.gradient
        allowed = f" + {z} standard errors ({noise / g:.4f} |gradient|)" if window is not None else ""
        raise AssertionError(f"mean correlator output over {est.count} steps is {err:.4f} |gradient| from the exact "
                             f"gradient, above the tolerance {tolerance}{allowed} ({_where(chip, seed)}; mean of "
                             f"(estimate - gradient) over the components = {bias.mean():.4g}, "
                             f"|gradient| = {g:.4g})" + _clipped(est, chip, steps, window))
    return err


# -- probes ------------------------------------------------------------------------

_PROBE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(?:\[([^\]]*)\])?\s*(.*)$")


def _probe_key(index: str):
    key = []
    for part in index.split(","):
        part = part.strip()
        if ":" in part:
            key.append(slice(*[int(v) if v.strip() else None for v in part.split(":")]))
        else:
            key.append(int(part))
    return tuple(key)


def assert_probes_record_the_registers(chip: Chip, seed: int, probes, cycles: int, checks: int = 8,
                                       rules=None) -> None:
    """A run with `probes` leaves every register as a run without them, each
    probe samples exactly the cycles of its schedule (from its window start,
    every k-th, before its window stop and the run's end), and a sample is the
    (indexed) register as it was during that cycle, checked at up to `checks`
    sampled cycles per probe."""
    Emulator = _emulator()
    probed = _build(Emulator, chip, seed, probes=list(probes), rules=rules).run(cycles)
    plain = _build(Emulator, chip, seed, rules=rules).run(cycles)
    for name, value in plain.registers.items():
        if not np.array_equal(value, probed.registers[name], equal_nan=True):
            raise AssertionError(f"probing {list(probes)} changed {name} after {cycles} cycles ({_where(chip, seed)})")
    wanted = {}
    for text in probes:
        name, index, rest = _PROBE.match(text).groups()
        opts = dict(o.split("=", 1) for o in rest.split())
        every = int(opts.get("every", chip.trace.every))
        start = chip.trace.window_start
        stop = chip.trace.window_stop or None
        if "window" in opts:
            a, b = opts["window"].split(":")
            start, stop = int(a or 0), (int(b) if b else None)
        schedule = list(range(start, min(cycles, stop if stop is not None else cycles), every))
        got, values = probed.samples(name)
        got = [int(c) for c in got]
        if got != schedule:
            raise AssertionError(f"probe {text!r} sampled cycles {got[:10]}... ({len(got)}), "
                                 f"its schedule is {schedule[:10]}... ({len(schedule)})")
        pick = sorted(set(np.linspace(0, len(schedule) - 1, min(checks, len(schedule))).astype(int).tolist()))
        for j in pick:
            wanted.setdefault(schedule[j], []).append((text, name, index, values[j]))
    replay = _build(Emulator, chip, seed, rules=rules)
    for cycle in sorted(wanted):
        replay.run(cycle - replay.cycle)
        regs = replay.registers
        for text, name, index, sample in wanted[cycle]:
            value = np.asarray(regs[name])
            if index:
                value = value[_probe_key(index)]
            if not np.array_equal(np.asarray(sample), value, equal_nan=True):
                raise AssertionError(f"probe {text!r} recorded {sample!r} at cycle {cycle}, the register "
                                     f"held {value!r} ({_where(chip, seed)})")


# -- training ----------------------------------------------------------------------

def assert_trains(chip: Chip, seeds, accuracy: float, cycles: int, at_least: int,
                  eval_every: int = 1000, rules=None) -> dict:
    """Training reaches test accuracy >= `accuracy` within `cycles` cycles
    (evaluated every `eval_every` cycles) on at least `at_least` of `seeds`.
    Returns {seed: first cycle the accuracy was reached, or None}; stops early
    once the verdict is certain (seeds not run are left out)."""
    Emulator = _emulator()
    seeds = list(seeds)
    if not 0 < at_least <= len(seeds):
        raise ValueError(f"at_least must be 1..{len(seeds)}, got {at_least}")
    reached, best = {}, {}
    for n, seed in enumerate(seeds):
        emu = _build(Emulator, chip, seed, rules=rules)
        reached[seed], best[seed] = None, emu.evaluate()[1]
        while emu.cycle < cycles:
            emu.run(min(eval_every, cycles - emu.cycle))
            acc = emu.evaluate()[1]
            best[seed] = max(best[seed], acc)
            if acc >= accuracy:
                reached[seed] = emu.cycle
                break
        ok = sum(c is not None for c in reached.values())
        if ok >= at_least or ok + len(seeds) - n - 1 < at_least:
            break
    ok = sum(c is not None for c in reached.values())
    if ok < at_least:
        lines = ", ".join(f"seed {s} " + (f"at cycle {c}" if c is not None else f"never (best {best[s]:.3f})")
                          for s, c in reached.items())
        raise AssertionError(f"{chip.name or chip.source} reached accuracy {accuracy} within {cycles} cycles on "
                             f"{ok} of the {len(reached)} seeds run (needed {at_least} of {len(seeds)}): {lines}")
    return reached
