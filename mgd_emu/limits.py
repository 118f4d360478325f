"""Resource limits, checked before any work is done.

`estimate_bytes(chip, probes)` is the peak memory of building and running a
chip: the registers and generator states of every parameter, generator and
neuron (with the transient copies the build makes), the task's data (the
`random` task's construction peak included), the probe buffers (8 MiB at
most, probes.compile_probes) and the interpreter with numba loaded.
`check_chip_fits` refuses a chip whose estimate exceeds the memory this
process can use (MemAvailable, and the cgroup's limit when one is set) with
one line that says the estimate. The estimate is deliberately generous
(measured peaks are below it; tests/test_faults.py checks that).
"""
from __future__ import annotations

import os

BASE_BYTES = 400 << 20          # Python, numpy, h5py, numba and the compiled kernels
PROBE_BUFFER_BYTES = 8 << 20    # probes.compile_probes max_buffer_bytes
ENV_AVAILABLE = "MGD_EMU_MEMORY_LIMIT"  # bytes: overrides what the machine says (tests, batch jobs)


class ResourceError(ValueError):
    """A chip too large for this machine; the message gives the estimate."""


def _task_bytes(chip) -> int:
    from .tasks import TASKS, task_shape

    name, params = chip.task.name, chip.task_params()
    n_in, n_out = task_shape(name, params)
    full = {k: params.get(k, spec[1]) for k, spec in TASKS[name].items()}
    if name == "file":   # already loaded (the chip loader checked it): its real size
        from .datafile import load_file_task

        t = load_file_task(full)
        samples = len(t.train.inputs) + len(t.test.inputs)
        return samples * (n_in + n_out) * 8 * 5 + samples * 8 * 4
    samples = {"parity": lambda: 1 << int(full["bits"]), "nist7x7": lambda: 100,
               "digits": lambda: 1797, "random": lambda: int(full["samples"])}[name]()
    # the build holds integer and float copies, one-hot targets and the
    # bytes hashed for the identity; the emulator its own copy
    return samples * (n_in + n_out) * 8 * 5 + samples * 8 * 4


def estimate_bytes(chip, probes=()) -> int:
    """Peak bytes of building and running `chip` (see the module docstring)."""
    # two sets of probe buffers when traced: one is written while the next chunk fills the other
    return BASE_BYTES + state_bytes(chip) + 2 * PROBE_BUFFER_BYTES * (1 if probes or chip.trace.probes else 0)


def state_bytes(chip) -> int:
    """A bound on the chip's state and task data (no interpreter, no probes)."""
    from .spec import correlator_delays

    sizes = chip.layer_sizes
    params = chip.n_parameters
    neurons = sum(sizes[1:])
    n_in_total = sum(sizes[:-1])
    gens = chip.n_generators
    ring = max(max(correlator_delays(chip)), 1)
    node = chip.perturbation.mode == "node"
    state = (params * 8 * 12             # theta G V, their rounding generators, plan copies, checkpoint copy
             + gens * 8 * (10 + ring)    # codes, next codes, LFSRs, order, frequencies, phases, rows, ring
             + neurons * 8 * 12          # activations (perturbed, unperturbed, wires), gains, offsets, generators
             + (ring * n_in_total * 8 if node else 0))
    return state + _task_bytes(chip)


def available_bytes() -> int | None:
    """Memory this process can still use: MGD_EMU_MEMORY_LIMIT if set, else
    the smaller of MemAvailable and the cgroup's remaining limit (None when
    neither can be read)."""
    env = os.environ.get(ENV_AVAILABLE)
    if env:
        try:
            return int(float(env))
        except ValueError:
            pass
    found = []
    try:
        with open("/proc/meminfo") as fp:
            for line in fp:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as a, open(usage_file) as b:
                limit, used = a.read().strip(), b.read().strip()
            if limit != "max" and int(limit) < 1 << 60:
                found.append(int(limit) - int(used))
            break
        except (OSError, ValueError):
            continue
    return min(found) if found else None


def _gb(n: int) -> str:
    return f"{n / 1e9:.3g} GB" if n >= 1e8 else f"{n / 1e6:.3g} MB"


def check_chip_fits(chip, probes=(), what: str | None = None) -> int:
    """The estimate, or ResourceError when it exceeds the memory available."""
    need = estimate_bytes(chip, probes)
    have = available_bytes()
    if have is not None and need > have:
        raise ResourceError(
            f"{what or 'chip ' + repr(chip.name)} needs an estimated {_gb(need)} of memory "
            f"({chip.n_parameters:,} parameters, {chip.n_generators:,} generators, "
            f"{sum(chip.layer_sizes[1:]):,} neurons, task {chip.task.name} data {_gb(_task_bytes(chip))}) "
            f"but {_gb(have)} is available; make the network or the task smaller")
    return need
