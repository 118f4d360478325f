"""The logic analyser: samples probed registers into bounded buffers.

Not a block of the chip but the emulator's instrument, run at the start of
every cycle, before the combinational phase, so a sample is the register as
the chip's wires see it during that cycle. Buffers are flushed by Python
between compiled chunks; the cycle loop stops early when one fills.
"""
from numba import njit


@njit(cache=True, _nrt=False)
def sample_probes(cycle, n_probes, pr_cfg, pr_src, pr_idx, pr_buf, pr_cyc, pr_fill,
                  theta, G, V, pert, act, x, y, cu, ctr):
    """Record every probe whose schedule includes `cycle`. Returns True when a
    buffer is full (the loop must stop so it can be flushed)."""
    full = False
    for p in range(n_probes):
        every, start, stop, col, width = pr_cfg[p, 0], pr_cfg[p, 1], pr_cfg[p, 2], pr_cfg[p, 3], pr_cfg[p, 4]
        if cycle < start or cycle >= stop or (cycle - start) % every != 0:
            continue
        row = pr_fill[p]
        for e in range(col, col + width):
            s, i = pr_src[e], pr_idx[e]
            if s == 0:
                v = theta[i]
            elif s == 1:
                v = G[i]
            elif s == 2:
                v = V[i]
            elif s == 3:
                v = pert[i]
            elif s == 4:
                v = act[i]
            elif s == 5:
                v = x[i]
            elif s == 6:
                v = y[i]
            elif s == 7:
                v = cu[i]
            else:
                v = float(ctr[i])
            pr_buf[row, e] = v
        pr_cyc[row, p] = cycle
        pr_fill[p] = row + 1
        if row + 1 == pr_buf.shape[0]:
            full = True
    return full
