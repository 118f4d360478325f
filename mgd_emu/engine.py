"""The engine: builds a chip's registers and runs its clock cycles.

`Emulator(chip, seed).run(n)` runs n cycles inside one compiled loop, the
cycle kernel of the chip's variant (cycle.py). The chip's state is one
record per block (chipmap.ChipState), built by chipmap.build_state from the
blocks' register declarations; everything users read (registers, codes,
events, probes, checkpoints) is derived from the same declarations.
"""
from __future__ import annotations

import contextlib
import operator
import threading
import time
from collections import namedtuple

import numba
import numpy as np

from .blocks import layout as L
from .blocks.cost import cost_function
from .blocks.declare import GENERATOR, NEXT, REGISTER
from .blocks.register import Monitor
from .chipmap import PARALLEL_MIN_LAYER, PARALLEL_MIN_PARAMS  # noqa: F401 (benchmarks read them here)
from .chipmap import BLOCKS, ChipState, Variant, build_state, clears_every_cycle, variant_of
from .cycle import DEFAULT_ORDER, NO_STEP_LIMIT, cycle_kernel, prepare
from .errors import critical, raise_deferred
from .evaluate import blas_threads_of_numba, forward_blocked
from .fixedpoint import Format
from .rules import RuleError, SynapseRules
from .probes import compile_probes, parse_probes, registers_by_name
from .spec import Chip
from .tasks import make_task

# Seeds are 63-bit: the generators' seeds are derived from it in int64.
MAX_SEED = 2**63 - 1
CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "mgd-emu-checkpoint", 2
# What a checkpoint holds: every clocked register and generator state (ROMs
# are rebuilt from the chip and the seed).
CHECKPOINT_ROLES = (REGISTER, NEXT, GENERATOR)
# What a sink's commit reads of the chip at the end of a chunk: its cycle
# count and event counts (Emulator.events) then.
ChunkEnd = namedtuple("ChunkEnd", ["cycle", "events"])


class Emulator:
    """A chip, built from its description and seed, ready to run cycles.

    cycle: clock cycles done; step: measurement steps done (they differ by the
    baseline cycles of cost.baseline = "remeasure"). variant: the structural
    choices its cycle kernel is compiled for (chipmap.Variant).
    """

    def __init__(self, chip: Chip, seed: int = 0, probes=(), parallel: bool | None = None,
                 rules: SynapseRules | None = None):
        """probes: probe texts (see `mgd_emu.probes`) added to those of the
        chip description's [trace] section. parallel: share each wide layer's
        neurons among numba's threads (numba.set_num_threads) when more than
        one is set; None decides by size (chipmap.PARALLEL_MIN_PARAMS) where
        numba has more than one thread. Only
        the common node-perturbation chip has a parallel path; the bits are
        the same either way. rules: the synapse's correlator, integrator and
        updater as user functions (mgd_emu.rules.SynapseRules), compiled into
        the cycle kernel; checked here (RuleError) before any cycle runs."""
        self.chip = chip
        self.seed = operator.index(seed)
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer 0..{MAX_SEED}, got {seed}")
        if rules is not None and not isinstance(rules, SynapseRules):
            raise RuleError(f"rules= takes mgd_emu.rules.SynapseRules(correlator=..., integrator=..., "
                            f"updater=...), not a {type(rules).__name__}")
        self.rules = rules if rules is not None else SynapseRules()
        self.rules.check()
        self.task = make_task(chip.task.name, **chip.task_params())
        self.variant: Variant = variant_of(chip, parallel, self.rules)
        self.st: ChipState = build_state(chip, self.seed, self.task.train)
        self._registers = registers_by_name(chip)
        tr = chip.trace
        stop = tr.window_stop if tr.window_stop > 0 else None
        self.probes = parse_probes([*tr.probes, *probes], chip, tr.every, tr.window_start, stop)
        self.pr = compile_probes(self.probes)
        self._memory = {p.name: ([], []) for p in self.probes}
        self._chunk_cycles = 4096
        self._spare_pr = None     # write-behind: the probe buffers being written, or free
        self._writer = None       # write-behind: the thread writing them

    # -------------------------------------------------------------------- run
    def run(self, n_cycles: int, order: np.ndarray = DEFAULT_ORDER, sink=None,
            progress=None) -> "Emulator":
        """Run n clock cycles in compiled code.

        The cycles run in chunks of about a quarter second (no Python per
        cycle): between chunks probe buffers are flushed to `sink` (default:
        kept in memory, see `samples`), `progress(self)` is called, and
        Ctrl-C takes effect.
        """
        if n_cycles < 0:
            raise ValueError("n_cycles must be >= 0")
        target = self.cycle + int(n_cycles)
        with self._writing_behind(sink):
            while self.cycle < target:
                self._chunk(min(target - self.cycle, self._chunk_cycles), NO_STEP_LIMIT, order, sink, progress)
        return self

    def run_steps(self, n_steps: int, order: np.ndarray = DEFAULT_ORDER, sink=None,
                  progress=None) -> "Emulator":
        """Run until n more measurement steps are done (baseline cycles included)."""
        target = self.step + int(n_steps)
        with self._writing_behind(sink):
            while self.step < target:
                self._chunk(min(2 * (target - self.step) + 1, self._chunk_cycles), target, order,
                            sink, progress)
        return self

    def kernel(self):
        """The compiled cycle loop of this chip's variant (compiled or loaded
        from the on-disk cache on first use)."""
        kernel = cycle_kernel(self.variant)
        prepare(kernel, self.variant, self.st, self.pr)
        return kernel

    def warm_up(self) -> None:
        """Compile the kernels (or load them from the cache) by running one
        cycle on a copy of the state: the chip itself does not move."""
        self.kernel()(1, NO_STEP_LIMIT, DEFAULT_ORDER, self._copy_state(), _copy(self.pr))
        self.evaluate()

    def _g_clear_now(self) -> bool:
        """Whether this chunk may skip the integrators (Config.g_clear): the
        chip clears them every cycle (chipmap.clears_every_cycle) and they
        hold 0 now, with no baseline slot pending. A G or a baseline request
        written from outside (`state_array`, a restored checkpoint) takes the
        path that reads and writes G for one chunk, which applies and clears
        it as the chip would."""
        syn, ctl = self.st.syn, self.st.ctl
        return clears_every_cycle(self.chip) and not ctl.need_baseline[0] and not syn.G.any()

    def _chunk(self, n, step_limit, order, sink, progress):
        t0, c0 = time.perf_counter(), self.cycle
        threads = self.variant.parallel and numba.get_num_threads() > 1
        g_clear = self._g_clear_now()
        if (self.st.cfg.threads, self.st.cfg.g_clear) != (threads, g_clear):
            self.st = self.st._replace(cfg=self.st.cfg._replace(threads=threads, g_clear=g_clear))
        self.kernel()(n, step_limit, np.ascontiguousarray(order, dtype=np.int64), self.st, self.pr)
        if getattr(sink, "writes_behind", False):
            self._write_behind(sink)
        else:
            self.flush(sink)
        if progress is not None:
            progress(self)
        elapsed, done = time.perf_counter() - t0, self.cycle - c0
        if done == n and elapsed < 0.1:  # aim at ~0.25 s per chunk
            self._chunk_cycles = min(self._chunk_cycles * 2, 1 << 40)
        elif elapsed > 0.5 and done > 1:
            self._chunk_cycles = max(self._chunk_cycles // 2, 1)

    def _copy_state(self) -> ChipState:
        st = self.st
        return st._replace(**{b: _copy(getattr(st, b)) for b in BLOCKS})

    # ---------------------------------------------------------------- probes
    def flush(self, sink=None) -> None:
        """Hand the buffered samples to `sink.append(probe, cycles, values)`
        (values as the registers hold them, shaped [samples, *subset shape];
        read-only views of the buffers, which the next cycles overwrite: a
        sink that keeps them keeps a copy), or keep them in memory; then
        empty the buffers."""
        self._hand_over(self.pr, sink, self)

    def _hand_over(self, pr, sink, end) -> None:
        """flush, of the probe buffers `pr`; `end` (an Emulator or a
        ChunkEnd) gives the sink's commit the cycle and the event counts."""
        for i, probe in enumerate(self.probes):
            n = int(pr.fill[i])
            if n == 0:
                continue
            col, width = int(pr.col[i]), int(pr.width[i])
            cycles = pr.cyc[:n, i]
            values = pr.buf[:n, col:col + width].reshape((n,) + probe.shape)
            if sink is not None:   # views of the buffers, read-only, valid during the call
                cycles.flags.writeable = values.flags.writeable = False
                sink.append(probe, cycles, values)
            else:
                self._memory[probe.name][0].append(cycles.copy())
                self._memory[probe.name][1].append(values.copy())
        pr.fill[:] = 0
        if sink is not None and hasattr(sink, "commit"):
            sink.commit(end)

    # A sink whose `writes_behind` is true (TraceWriter) is written while the
    # next chunk runs: the kernel releases the GIL, the filled buffers go to a
    # thread and the kernel samples into a second set. The sink sees the same
    # calls in the same order, one at a time; run() returns once all are done.
    def _write_behind(self, sink) -> None:
        """Hand this chunk's samples to a thread that writes them to `sink`
        (after the previous chunk's are written); sample into the spare buffers."""
        self._wait_for_writer()
        full, spare = self.pr, self._spare_pr or compile_probes(self.probes)
        end = ChunkEnd(self.cycle, self.events)
        failure = []

        def write():
            try:
                self._hand_over(full, sink, end)
            except BaseException as exc:    # raised in the caller's thread by _wait_for_writer
                failure.append(exc)
                full.fill[:] = 0   # what a failed write left is not written later
            self._spare_pr = full

        thread = threading.Thread(target=write, name="mgd-emu trace writer", daemon=True)
        with critical():   # a signal here would leave the buffers half handed over
            self._spare_pr = None
            thread.start()
            self._writer = (thread, failure)
            self.pr = spare

    def _wait_for_writer(self) -> None:
        """Wait until the samples handed to the writer thread are written;
        raise what writing them raised."""
        if self._writer is None:
            return
        thread, failure = self._writer
        thread.join()
        self._writer = None
        if failure:   # the sink failed: the samples taken since are not written either
            self.pr.fill[:] = 0
            raise failure[0]
        raise_deferred()   # a signal that came while the thread was writing

    @contextlib.contextmanager
    def _writing_behind(self, sink):
        """Around a run: at its end every sample handed to the writer thread
        is written. When the run ends by an exception (Ctrl-C, a full disk), a
        write that failed too is not raised over it: the sink keeps its failure."""
        try:
            yield
        except BaseException:
            while self._writer is not None:   # a second Ctrl-C does not cut the wait short
                with contextlib.suppress(BaseException):
                    self._wait_for_writer()
            raise
        self._wait_for_writer()

    def samples(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(cycles, real values) recorded in memory by the probe on `name`."""
        if name not in self._memory:
            raise KeyError(f"{name} is not probed (probes: {', '.join(self._memory) or 'none'})")
        cycles, values = self._memory[name]
        probe = next(p for p in self.probes if p.name == name)
        if not cycles:
            return np.zeros(0, dtype=np.int64), np.zeros((0,) + probe.shape)
        return np.concatenate(cycles), np.concatenate(values)

    @property
    def cycle(self) -> int:
        return int(self.st.ctl.cycle[0])

    @property
    def step(self) -> int:
        return int(self.st.ctl.step[0])

    @property
    def baseline_cycles(self) -> int:
        return int(self.st.ctl.baseline_cycles[0])

    @property
    def updates(self) -> int:
        return int(self.st.ctl.updates[0])

    @property
    def chip_time(self) -> float:
        """Seconds of chip time: cycles / clock frequency."""
        return self.cycle / self.chip.timing.clock_hz

    # ------------------------------------------------------------- registers
    def register_format(self, name: str) -> Format | None:
        """The number format of a register (None for target and sample_index)."""
        reg = self._registers.get(name)
        if reg is None:
            raise KeyError(name)
        return getattr(self.chip.formats, reg.format_class) if reg.format_class else None

    def state_array(self, source: str) -> np.ndarray:
        """The engine's array `source` ("block.field" of chipmap.ChipState), not a
        copy. A fixed-point register must only ever hold values of its format
        (as every write of the chip quantises them): the kernels rely on it,
        e.g. to sum an exact layer in any order (chipmap.exact_mac). A G (or a
        baseline request) written on a chip that clears its integrators every
        cycle is applied as the chip would apply it (_g_clear_now)."""
        block, field = source.split(".")
        return getattr(getattr(self.st, block), field)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every block's registers (and ROMs) by "block.field", not copies."""
        return {f"{b}.{r.name}": getattr(getattr(self.st, b), r.name)
                for b, (_, regs) in BLOCKS.items() for r in regs}

    @property
    def registers(self) -> dict[str, np.ndarray]:
        """Every user-visible register's real value (copies), by name."""
        out = {}
        for reg in self._registers.values():
            arr = self.state_array(reg.source).ravel()[reg.start:reg.start + reg.size].astype(float)
            out[reg.name] = arr.reshape(reg.shape) if reg.shape else arr[0]
        return out

    @property
    def codes(self) -> dict[str, np.ndarray]:
        """Integer codes of every fixed-point register, by name."""
        regs = self.registers
        out = {}
        for reg in self._registers.values():
            fmt = getattr(self.chip.formats, reg.format_class) if reg.format_class else None
            if fmt is not None and fmt.is_fixed:
                out[reg.name] = np.rint(np.asarray(regs[reg.name]) * 2.0 ** fmt.frac_bits).astype(np.int64)
        return out

    @property
    def events(self) -> dict[str, tuple[int, int]]:
        """(saturations, wraps) counted so far, per register."""
        ev, n_layers = self.st.mon.events, self.st.cfg.n_layers
        out = {}
        for layer in range(n_layers):
            for k, name in enumerate(L.LAYER_EVENT_NAMES):
                r = ev[L.E_PER_LAYER * layer + k]
                out[f"layer{layer}.{name}"] = (int(r[1]), int(r[2]))
        for k, name in enumerate(L.GLOBAL_EVENT_NAMES):
            r = ev[L.E_PER_LAYER * n_layers + k]
            out[name] = (int(r[1]), int(r[2]))
        return out

    # ------------------------------------------------------------- evaluate
    def outputs(self, dataset=None) -> np.ndarray:
        """Unperturbed network outputs of the current weights on a dataset."""
        data = dataset if dataset is not None else self.task.test
        st = self.st
        X = np.ascontiguousarray(data.inputs, dtype=np.float64)
        out = np.zeros((X.shape[0], st.cfg.n_out))
        # Rounding generators, event counters and activations are copies:
        # evaluating leaves the chip's state untouched. forward_blocked is
        # cycle.forward_dataset (the chip's neuron kernels, sample by sample)
        # with the samples batched: the same bits, the same effect on `scratch`.
        scratch = st._replace(smp=st.smp._replace(x=np.zeros_like(st.smp.x), sr=st.smp.sr.copy()),
                              neu=st.neu._replace(act_w=np.zeros_like(st.neu.act_w), sr=st.neu.sr.copy()),
                              mon=Monitor(st.mon.events.copy()))
        with blas_threads_of_numba(st.lay, X.shape[0]):
            forward_blocked(X, scratch, out)
        return out

    def evaluate(self, dataset=None) -> tuple[float, float]:
        """(mean cost, accuracy) of the unperturbed network (default: test set)."""
        data = dataset if dataset is not None else self.task.test
        out = self.outputs(data)
        kind = self.st.cfg.cost_fn
        targets = np.ascontiguousarray(data.targets, dtype=np.float64)
        cost = float(np.mean([cost_function(kind, out[i], targets[i]) for i in range(len(out))]))
        return cost, float(self.task.accuracy(out, data))

    # ----------------------------------------------------------- checkpoint
    def checkpoint(self) -> dict:
        """The whole state, copied: restore() continues bit-exactly. `state`
        holds every register and generator state by "block.field"."""
        state = {f"{b}.{r.name}": getattr(getattr(self.st, b), r.name).copy()
                 for b, (_, regs) in BLOCKS.items() for r in regs if r.role in CHECKPOINT_ROLES}
        out = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "chip": self.chip.to_toml(),
               "source": self.chip.source, "seed": self.seed, "probes": [p.text for p in self.probes],
               "state": state}
        if self.rules.custom:   # their names: restore() refuses other rules
            out["rules"] = self.rules.names()
        return out

    @classmethod
    def restore(cls, checkpoint: dict, rules: SynapseRules | None = None) -> "Emulator":
        """The emulator a checkpoint() was taken of, with its probes. Refuses
        (checkpoint.CheckpointError, a ValueError) anything
        checkpoint.validate_checkpoint does not accept. rules: the user synapse rules the run used (a
        checkpoint holds data only, never code: it records their names, and
        rules of other names, or none for a run that had some, are refused)."""
        from . import spec as spec_mod
        from .checkpoint import validate_checkpoint

        # format, version, every array's name, dtype and shape against the
        # chip's registers, the values the kernels rely on, the probes
        validate_checkpoint(checkpoint)
        saved, given = checkpoint.get("rules", {}), (rules or SynapseRules()).names()
        if saved != given:
            from .checkpoint import CheckpointError

            def said(names):
                return ", ".join(f"{k}={v}" for k, v in names.items()) or "the built-in rules"

            raise CheckpointError(f"checkpoint: it was taken of a run with {said(saved)}; restore it with the same "
                                  f"rules (Emulator.restore(checkpoint, rules=SynapseRules(...)) from Python), not "
                                  f"{said(given)}")
        chip = spec_mod.loads_chip(checkpoint["chip"], checkpoint.get("source", "<checkpoint>"))
        extra = [p for p in checkpoint.get("probes", []) if p not in chip.trace.probes]
        emu = cls(chip, checkpoint["seed"], probes=extra, rules=rules)
        blocks = {b: {} for b in BLOCKS}
        for name, a in checkpoint["state"].items():
            block, field = name.split(".")
            blocks[block][field] = np.array(a, copy=True, order="C")
        emu.st = emu.st._replace(**{b: getattr(emu.st, b)._replace(**fields) for b, fields in blocks.items()})
        return emu


def _copy(record):
    return type(record)(*(a.copy() for a in record))
