"""Synapse update rules as functions: the built-in ones, and the user's own.

A synapse has three rules, each a pure scalar function in Numba's subset
(decorate it with `numba.njit`), called once per synapse per cycle inside
the compiled cycle kernel. Every argument and the result are float64; the
engine writes each result through its register's number format (rounding,
saturation or wrap, and their event counts), so a rule cannot write outside
its block's registers:

    correlator(c, p, kappa) -> e       c: the broadcast cost change C~, p: the
                                       synapse's (weight mode) or neuron's (node
                                       mode) delayed perturbation, kappa: the
                                       correlator gain. Node mode multiplies e by
                                       the presynaptic activity afterwards.
                                       Built-in: c * p * kappa.
    integrator(g, e, beta, lam) -> g'  the integrator G's next value (formats.integrator).
                                       Built-in digital: g + e (cleared at each update);
                                       analog: beta * g + lam * e.
    updater(theta, step, eta) -> theta'  the parameter's next value at an update
                                       (formats.weight / .bias); step = eta * G, or the
                                       momentum register. Built-in: theta - step.

    import numba, numpy as np
    from mgd_emu import Emulator, load_chip
    from mgd_emu.rules import SynapseRules

    @numba.njit
    def sign_update(theta, step, eta):
        return theta - eta * np.sign(step)

    emu = Emulator(load_chip("hw_models/xor_8bit.toml"), 0, rules=SynapseRules(updater=sign_update))

The built-in rules go through the same calls (the common chip's branch-free
rows are their vectorised equivalent), so a user rule has the power of a
built-in one. A chip with a user rule takes the general synapse path and its
kernel is compiled in each process (not cached on disk: the cache could not
tell two versions of a user's function apart).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import numba
from numba.core.registry import CPUDispatcher

from .blocks.synapse import accumulate, correlate, descend, leak

SIGNATURES = {"correlator": ("c", "p", "kappa"), "integrator": ("g", "e", "beta", "lam"),
              "updater": ("theta", "step", "eta")}


class RuleError(ValueError):
    """A user rule that cannot be compiled into the cycle kernel."""


@dataclass(frozen=True)
class SynapseRules:
    """User replacements for the synapse's rules; None keeps the built-in one."""

    correlator: object = None
    integrator: object = None
    updater: object = None

    def resolved(self, analog: bool) -> tuple:
        """(correlator, integrator, updater), built-ins where not given."""
        return (self.correlator or correlate, self.integrator or (leak if analog else accumulate),
                self.updater or descend)

    @property
    def custom(self) -> bool:
        return any(f is not None for f in (self.correlator, self.integrator, self.updater))

    def names(self) -> dict:
        """{"correlator" | "integrator" | "updater": "module.qualname"} of the
        user's rules (the built-in ones are left out): what a checkpoint
        records, since it holds data only, never code."""
        return {name: f"{f.py_func.__module__}.{f.py_func.__qualname__}" if hasattr(f, "py_func") else repr(f)
                for name in SIGNATURES if (f := getattr(self, name)) is not None}

    def check(self) -> None:
        """Refuse, with one line, a rule that is not a Numba function of the
        documented signature returning a float, or that does not compile."""
        for name, args in SIGNATURES.items():
            f = getattr(self, name)
            if f is None:
                continue
            label = f"rules.{name} ({getattr(f, '__name__', type(f).__name__)})"
            if not isinstance(f, CPUDispatcher):
                raise RuleError(f"{label}: decorate it with @numba.njit (a rule runs inside the compiled "
                                f"cycle kernel)")
            params = list(inspect.signature(f.py_func).parameters.values())
            if len(params) != len(args) or any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                                               for p in params):
                given = str(inspect.signature(f.py_func))[1:-1]   # with *args, the keyword-only "*", defaults
                raise RuleError(f"{label}: takes ({given}); {_article(name)} {name} takes exactly {len(args)} "
                                f"positional floats ({', '.join(args)}) and returns one")
            sig = (numba.float64,) * len(args)
            try:
                f.compile(sig)
                ret = f.overloads[sig].signature.return_type
            except Exception as exc:  # numba's typing errors are long: keep the first line
                first = str(exc).strip().splitlines()
                raise RuleError(f"{label}: does not compile for float64 arguments: "
                                f"{first[1] if len(first) > 1 else first[0] if first else type(exc).__name__}"
                                ) from None
            if not isinstance(ret, (numba.types.Float, numba.types.Integer, numba.types.Boolean)):
                raise RuleError(f"{label}: returns {ret}; a {name} returns one number (the next "
                                f"register value)")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"
