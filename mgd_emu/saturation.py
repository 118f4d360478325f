"""Saturation as a fraction of register writes, and the warning a run summary gives.

`Emulator.events` counts saturation and wrap events per register: one per
element written outside its format's range. Divided by the writes a run made
(cycles x elements; fewer for registers written less often than every cycle,
such as the weights when tau_theta > 1, so the fraction is then a lower
bound), it says how often a register sits on its rail. A register that
saturates in a large fraction of its writes is a format too narrow for the
chip (typically integrators after widening a network; see docs/scaling.md),
with one exception: an activation register whose format holds its function's
whole range but the last LSB at an end, in fine steps (u0.8 for a sigmoid,
s0.7 for tanh), saturates only when a neuron is driven within one LSB of its
function's limit, where the function is nearly flat. That is a neuron driven hard
(common once a chip has learned; weights too large if it does not learn), which
a wider format would not change, and the warning says so.
"""
from __future__ import annotations

# a register saturating in at least this fraction of its writes is reported
WARN_FRACTION = 0.05

# The limits of the bounded activation functions (the values they approach or reach).
ACTIVATION_LIMITS = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "hard_sigmoid": (0.0, 1.0)}
# An activation format is fine enough to tell a neuron driven to a limit when
# its LSB is at most this fraction of the function's range: within one LSB of
# a limit the function's slope is then small (a sigmoid's 1/16 of its largest).
FINE_LSB = 1 / 64


def register_elements(chip) -> dict[str, int]:
    """Elements of each register that `Emulator.events` names, as writes a
    cycle: a dual-path chip writes its activations and its cost on both
    paths, and counts both paths' events under one name."""
    sizes, bias = chip.layer_sizes, chip.network.bias
    node = chip.perturbation.mode == "node"
    paths = 2 if chip.cost.baseline == "dual_path" else 1
    out = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w, b = fan_in * fan_out, fan_out if bias else 0
        out.update({f"layer{i}.weight": w, f"layer{i}.bias": b, f"layer{i}.weight_integrator": w,
                    f"layer{i}.bias_integrator": b, f"layer{i}.weight_velocity": w,
                    f"layer{i}.bias_velocity": b, f"layer{i}.activation": fan_out * paths,
                    f"layer{i}.perturbation": fan_out if node else w + b})
    out.update({"input": sizes[0], "cost": paths, "cost_change": 1})
    return out


def driven_to_their_limits(chip) -> set[str]:
    """The activation registers whose saturations can only be outputs within
    one LSB of their function's limits, where the function is nearly flat: a
    bounded function, in a fixed-point format that holds its range to one LSB
    at each end, with an LSB at most FINE_LSB of that range."""
    f = chip.formats.activation
    if not f.is_fixed:
        return set()
    last = len(chip.layer_sizes) - 2
    out = set()
    for i in range(last + 1):
        kind = chip.network.output_activation if i == last else chip.network.activation
        if kind in ACTIVATION_LIMITS:
            lo, hi = ACTIVATION_LIMITS[kind]
            holds = f.min_value <= lo + f.lsb and f.max_value >= hi - f.lsb
            if holds and f.lsb <= FINE_LSB * (hi - lo):
                out.add(f"layer{i}.activation")
    return out


def saturation_fractions(events: dict, chip, cycles: int, wraps: bool = False) -> dict[str, float]:
    """Saturations per write (events / (cycles x elements)) of each register
    that saturated (wraps=True: wrap-arounds, of each register that wrapped)."""
    elements = register_elements(chip)
    out = {}
    for name, counts in events.items():
        count = counts[1] if wraps else counts[0]
        n = elements.get(name, 0) * max(int(cycles), 1)
        if count and n:
            out[name] = count / n
    return out


def saturation_warning(events: dict, chip, cycles: int, threshold: float = WARN_FRACTION) -> str | None:
    """One line naming the registers that saturate, or wrap around, in at
    least `threshold` of their writes (None: none do)."""
    heavy = {k: f for k, f in saturation_fractions(events, chip, cycles).items() if f >= threshold}
    wrapped = {k: f for k, f in saturation_fractions(events, chip, cycles, wraps=True).items() if f >= threshold}
    if not heavy and not wrapped:
        return None
    pinned = driven_to_their_limits(chip)

    def listed(names, fractions=heavy):
        return ", ".join(f"{k} {100 * fractions[k]:.0f} %" for k in sorted(names, key=lambda k: -fractions[k]))

    narrow = [k for k in heavy if k not in pinned]
    at_limits = [k for k in heavy if k in pinned]
    parts = []
    if wrapped:
        parts.append(f"registers wrap around in a large fraction of their writes ({listed(wrapped, wrapped)}): "
                     f"each wrap turns a value past one end into one near the other; their formats are too narrow "
                     f"for this chip")
    if narrow:
        parts.append(f"registers saturate in a large fraction of their writes ({listed(narrow)}): their formats "
                     f"are too narrow for this chip")
    if at_limits:
        parts.append(f"neurons sit within one LSB of their activation function's limit in a large fraction of "
                     f"writes ({listed(at_limits)}), where they pass almost no gradient: common in a chip that has "
                     f"learned, a sign of weights too large in one that does not; a wider format would not change it")
    return "; ".join(parts) + " (see docs/scaling.md, widening an 8-bit chip)"
