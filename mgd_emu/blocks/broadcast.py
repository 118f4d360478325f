"""Broadcast line: the global wire that carries C~ to every synapse.

Registers owned: a delay line of cost_latency + broadcast_latency stages,
each holding a C~ value (formats.cost_change) and a valid bit.
"""
from numba import njit


@njit(cache=True, _nrt=False, inline="always")
def broadcast_out(delay, cycle, change, valid, ring, ring_valid):
    """What the synapses see this cycle: C~ from `delay` cycles ago."""
    if delay == 0:
        return change, valid
    slot = cycle % delay
    return ring[slot], ring_valid[slot] != 0


@njit(cache=True, _nrt=False, inline="always")
def broadcast_step(delay, cycle, change, valid, ring, ring_valid):
    """Shift this cycle's C~ into the delay line."""
    if delay > 0:
        slot = cycle % delay
        ring[slot] = change
        ring_valid[slot] = 1 if valid else 0
