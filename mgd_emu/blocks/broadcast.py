"""Broadcast line: the global wire that carries C~ to every synapse.

A delay line of cost_latency + broadcast_latency stages, each holding a C~
value (formats.cost_change) and a valid bit; `out` is what the synapses saw
in the last cycle.
"""
import numpy as np
from numba import njit

from .declare import Reg, record

REGISTERS = (
    Reg("ring", np.float64, ("bcast",), "the delay line's C~ stages", fmt="cost_change"),
    Reg("ring_valid", np.int64, ("bcast",), "the delay line's valid bits"),
    Reg("out", np.float64, (), "cost change at the end of the broadcast line", fmt="cost_change",
        public="broadcast"),
    Reg("out_valid", np.float64, (), "the end of the broadcast line carries a measurement (1.0/0.0)"),
)
Broadcast = record("Broadcast", REGISTERS, __name__)


@njit(cache=True, _nrt=False, inline="always")
def broadcast_out(bc, delay, cycle, change, valid):
    """What the synapses see this cycle: C~ from `delay` cycles ago."""
    if delay == 0:
        return change, valid
    slot = cycle % delay
    return bc.ring[slot], bc.ring_valid[slot] != 0


@njit(cache=True, _nrt=False, inline="always")
def broadcast_step(bc, delay, cycle, change, valid, seen, seen_valid):
    """Shift this cycle's C~ into the delay line; latch what the synapses saw."""
    if delay > 0:
        slot = cycle % delay
        bc.ring[slot] = change
        bc.ring_valid[slot] = 1 if valid else 0
    bc.out[0] = seen
    bc.out_valid[0] = 1.0 if seen_valid else 0.0
