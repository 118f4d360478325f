"""Saturation as a fraction of register writes, and the warning a run summary gives.

`Emulator.events` counts saturation and wrap events per register: one per
element written outside its format's range. Divided by the writes a run made
(cycles x elements; fewer for registers written less often than every cycle,
such as the weights when tau_theta > 1, so the fraction is then a lower
bound), it says how often a register sits on its rail. A register that
saturates in a large fraction of its writes is a format too narrow for the
chip (typically activations or integrators after widening a network; see
docs/scaling.md).
"""
from __future__ import annotations

# a register saturating in at least this fraction of its writes is reported
WARN_FRACTION = 0.05


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


def saturation_fractions(events: dict, chip, cycles: int) -> dict[str, float]:
    """Saturations per write (events / (cycles x elements)) of each register that saturated."""
    elements = register_elements(chip)
    out = {}
    for name, (saturated, _wrapped) in events.items():
        n = elements.get(name, 0) * max(int(cycles), 1)
        if saturated and n:
            out[name] = saturated / n
    return out


def saturation_warning(events: dict, chip, cycles: int, threshold: float = WARN_FRACTION) -> str | None:
    """One line naming the registers that saturate in at least `threshold` of
    their writes (None: none do)."""
    heavy = {k: f for k, f in saturation_fractions(events, chip, cycles).items() if f >= threshold}
    if not heavy:
        return None
    worst = sorted(heavy.items(), key=lambda kv: -kv[1])
    listed = ", ".join(f"{k} {100 * f:.0f} %" for k, f in worst)
    return (f"registers saturate in a large fraction of their writes ({listed}): their formats are too narrow "
            f"for this chip (see docs/scaling.md, widening an 8-bit chip)")
