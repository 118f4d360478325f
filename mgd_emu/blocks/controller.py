"""Controller: the step counter, the tau boundaries and the baseline slots.

Its combinational outputs are the slot tag entering the network this cycle
and the edges that end this step.
"""
import numpy as np
from numba import njit

from .declare import Reg, record
from .layout import BASE_REMEASURE, INTEG_DIGITAL, TAG_BASELINE, TAG_MEASURE

REGISTERS = (
    Reg("cycle", np.int64, (), "clock cycles done", unit="cycles"),
    Reg("step", np.int64, (), "measurement steps done (k)", unit="steps"),
    Reg("need_baseline", np.int64, (), "remeasure: the next slot is a baseline slot (1 bit)"),
    Reg("baseline_cycles", np.int64, (), "baseline slots done", unit="cycles"),
    Reg("updates", np.int64, (), "weight updates done", unit="updates"),
)
Controller = record("Controller", REGISTERS, __name__)


@njit(_nrt=False, inline="always")
def controller_wires(ctl, tau_x, tau_p, tau_theta, integrator):
    """(tag, new_sample, x_edge, p_edge, update_edge) for this cycle."""
    if ctl.need_baseline[0]:
        return TAG_BASELINE, False, False, False, False
    k = ctl.step[0]
    x_edge = (k + 1) % tau_x == 0
    p_edge = (k + 1) % tau_p == 0
    update_edge = integrator == INTEG_DIGITAL and (k + 1) % tau_theta == 0
    return TAG_MEASURE, k % tau_x == 0, x_edge, p_edge, update_edge


@njit(_nrt=False, inline="always")
def controller_step(ctl, tag, x_edge, update_edge, baseline):
    """Advance the counters; request a baseline slot after x or theta changed."""
    ctl.cycle[0] += 1
    if tag == TAG_MEASURE:
        ctl.step[0] += 1
        ctl.need_baseline[0] = 1 if (baseline == BASE_REMEASURE and (x_edge or update_edge)) else 0
        if update_edge:
            ctl.updates[0] += 1
    else:
        ctl.need_baseline[0] = 0
        ctl.baseline_cycles[0] += 1
