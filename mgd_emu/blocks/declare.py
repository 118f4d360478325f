"""Register declarations: each block declares its registers once, here is
how a declaration becomes a record.

A block file lists its registers as `Reg`s (name, dtype, symbolic shape,
number format class, meaning, and how the user sees it), and makes its
record type with `record(...)`: a NamedTuple of arrays that the compiled
kernels take whole (`syn.theta`, `ctl.cycle[0]`). Allocation (`allocate`),
the user-visible register table (`mgd_emu.probes.register_table`), the
checkpoint and the exports all read the same declarations.

A scalar register (shape ()) is held as a one-element array, so that a
kernel can write it in place.
"""
from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

import numpy as np

# Roles: what a field is to the chip.
REGISTER = "register"    # clocked state of the chip
NEXT = "next"            # the second half of a double-buffered register
GENERATOR = "generator"  # the state of an on-chip random generator (rounding, noise, LFSR)
ROM = "rom"              # fixed at build: a table, a dataset, static device variation


@dataclass(frozen=True)
class Reg:
    """One register (or ROM) of a block.

    shape: tuple of ints and dimension names (see `Dims`); () for a scalar.
    fmt: the number format class it is written in (None: not a datapath
    register). public: how users name it (None: internal); a plain name
    ("cost"), or a per-layer rule: "params:weight,bias" (the flat parameter
    vector split into layer{i}.weight / layer{i}.bias; the biases of a
    register in formats.weight are in formats.bias), "generators"
    (layer{i}.node_perturbation or .weight_/.bias_perturbation), "neurons:activation".
    """

    name: str
    dtype: type
    shape: tuple
    meaning: str
    fmt: str | None = None
    role: str = REGISTER
    public: str | None = None
    unit: str = "a.u."


@dataclass(frozen=True)
class Dims:
    """The sizes a chip's registers are declared in."""

    n_in: int          # inputs
    n_out: int         # outputs
    n_layers: int      # weight layers
    n_params: int      # weights and biases, flat
    n_gen: int         # perturbation generators
    n_neurons: int     # neurons of every layer (the input excluded)
    n_layer_inputs: int  # sum of every layer's fan-in (node-mode presynaptic delay line)
    ring: int          # correlator delay-line depth
    in_ring: int       # presynaptic delay-line depth (node mode; else 0)
    bcast: int         # broadcast delay-line stages (at least 1)
    n_samples: int     # training samples
    n_events: int      # event-counter rows


def record(typename: str, regs: tuple[Reg, ...], module: str):
    """The record type of a block: a NamedTuple with one field per register."""
    return namedtuple(typename, [r.name for r in regs], module=module)


def shape_of(reg: Reg, dims: Dims) -> tuple[int, ...]:
    """The allocated shape: names resolved, a scalar as one element."""
    shape = tuple(getattr(dims, d) if isinstance(d, str) else d for d in reg.shape)
    return shape or (1,)


def allocate(rec, regs: tuple[Reg, ...], dims: Dims, **given):
    """A record of zeroed registers; `given` arrays (ROM contents, initial
    values) are checked against their declaration and used as they are."""
    fields = {}
    for r in regs:
        shape = shape_of(r, dims)
        if r.name in given:
            a = np.ascontiguousarray(given.pop(r.name), dtype=r.dtype)
            if a.shape != shape:
                raise ValueError(f"{rec.__name__}.{r.name}: shape {a.shape}, declared {shape}")
            fields[r.name] = a
        else:
            fields[r.name] = np.zeros(shape, dtype=r.dtype)
    if given:
        raise ValueError(f"{rec.__name__}: no registers named {', '.join(given)}")
    return rec(**fields)


def copy_record(rec):
    """A record of copies of every array of `rec`."""
    return type(rec)(*(a.copy() for a in rec))
