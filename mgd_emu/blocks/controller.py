"""Controller: the step counter, the tau boundaries and the baseline slots.

Registers owned: cycle, step k, the remeasure request, the counts of
baseline cycles and of updates. Its combinational outputs are the slot tag
entering the network this cycle and the edges that end this step.
"""
from numba import njit

from .layout import (BASE_REMEASURE, C_BASELINE_CYCLES, C_CYCLE, C_NEED_BASELINE,
                     C_STEP, C_UPDATES, INTEG_DIGITAL, TAG_BASELINE, TAG_MEASURE)


@njit(cache=True, _nrt=False, inline="always")
def controller_wires(ctr, tau_x, tau_p, tau_theta, integrator):
    """(tag, new_sample, x_edge, p_edge, update_edge) for this cycle."""
    if ctr[C_NEED_BASELINE]:
        return TAG_BASELINE, False, False, False, False
    k = ctr[C_STEP]
    x_edge = (k + 1) % tau_x == 0
    p_edge = (k + 1) % tau_p == 0
    update_edge = integrator == INTEG_DIGITAL and (k + 1) % tau_theta == 0
    return TAG_MEASURE, k % tau_x == 0, x_edge, p_edge, update_edge


@njit(cache=True, _nrt=False, inline="always")
def controller_step(ctr, tag, x_edge, update_edge, baseline):
    """Advance the counters; request a baseline slot after x or theta changed."""
    ctr[C_CYCLE] += 1
    if tag == TAG_MEASURE:
        ctr[C_STEP] += 1
        ctr[C_NEED_BASELINE] = 1 if (baseline == BASE_REMEASURE and (x_edge or update_edge)) else 0
        if update_edge:
            ctr[C_UPDATES] += 1
    else:
        ctr[C_NEED_BASELINE] = 0
        ctr[C_BASELINE_CYCLES] += 1
