"""The logic analyser: samples probed registers into bounded buffers.

Not a block of the chip but the emulator's instrument, run at the start of
every cycle, before the combinational phase, so a sample is the register as
the chip's wires see it during that cycle. Buffers are flushed by Python
between compiled chunks; the cycle loop stops early when one fills.
"""
from collections import namedtuple

from numba import njit

# The registers a probe can read, as "block.field" of chipmap.ChipState; a
# probe element's source is its index here (mgd_emu.probes checks that every
# user-visible register is one of them).
SOURCES = ("syn.theta", "syn.G", "syn.V", "gen.pert", "neu.act", "smp.x", "smp.y", "smp.sample",
           "cu.cost", "cu.cost0", "cu.change", "bc.out")
(S_THETA, S_G, S_V, S_PERT, S_ACT, S_X, S_Y, S_SAMPLE,
 S_COST, S_COST0, S_CHANGE, S_BROADCAST) = range(len(SOURCES))

ProbeBuffers = namedtuple("ProbeBuffers", [
    "n",       # int64 [1]: number of probes
    "every",   # int64 [probes]: sampling period, cycles
    "start",   # int64 [probes]: first cycle of the window
    "stop",    # int64 [probes]: end of the window (exclusive)
    "col",     # int64 [probes]: the probe's first column in buf
    "width",   # int64 [probes]: its number of elements
    "src",     # int64 [elements]: each element's source (SOURCES)
    "idx",     # int64 [elements]: its flat offset in the source
    "buf",     # float64 [rows, elements]: samples
    "cyc",     # int64 [rows, probes]: the cycle of each sample
    "fill",    # int64 [probes]: rows filled since the last flush
])


@njit(cache=True, _nrt=False, inline="always")
def read_source(st, s, i):
    """Element i of probe source s, as a float."""
    if s == S_THETA:
        return st.syn.theta[i]
    if s == S_G:
        return st.syn.G[i]
    if s == S_V:
        return st.syn.V[i]
    if s == S_PERT:
        return st.gen.pert[i]
    if s == S_ACT:
        return st.neu.act[i]
    if s == S_X:
        return st.smp.x[i]
    if s == S_Y:
        return st.smp.y[i]
    if s == S_SAMPLE:
        return float(st.smp.sample[i])
    if s == S_COST:
        return st.cu.cost[i]
    if s == S_COST0:
        return st.cu.cost0[i]
    if s == S_CHANGE:
        return st.cu.change[i]
    return st.bc.out[i]


@njit(cache=True, _nrt=False)
def sample_probes(cycle, pr, st):
    """Record every probe whose schedule includes `cycle`. Returns True when a
    buffer is full (the loop must stop so it can be flushed)."""
    full = False
    for p in range(pr.n[0]):
        start, col = pr.start[p], pr.col[p]
        if cycle < start or cycle >= pr.stop[p] or (cycle - start) % pr.every[p] != 0:
            continue
        row = pr.fill[p]
        for e in range(col, col + pr.width[p]):
            pr.buf[row, e] = read_source(st, pr.src[e], pr.idx[e])
        pr.cyc[row, p] = cycle
        pr.fill[p] = row + 1
        if row + 1 == pr.buf.shape[0]:
            full = True
    return full
