"""Running a study: every (grid point, seed) as one task, serially in this
process or on a dask.distributed cluster, with a journal that survives
interruption.

The journal (DIR/journal.jsonl) holds one JSON line per event: a "study"
header each time the study is started or resumed, then one "run" record per
finished run, appended and fsynced as it finishes. A run is known by its id,
a hash of what decides its result (the base chip, the point's values, the
seed, cycles, eval_every, stop_at), so `resume` skips every run the journal
holds a success for and runs the rest; the last record of an id wins.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..saturation import saturation_warning
from ..spec import ChipError, loads_chip
from .spec import Point, Study, StudyError

JOURNAL = "journal.jsonl"
RESULTS_NC = "results.nc"
RESULTS_CSV = "results.csv"
CHECKPOINTS = "checkpoints"   # DIR/checkpoints/<run id>.npz and .json while a run is under way
JOURNAL_VERSION = 1
CONNECT_TIMEOUT = "30s"   # to reach a running scheduler
# A run's work, for the order runs start in: cycles x (parameters + this), the
# part of a cycle that does not grow with the parameters counted as so many
# parameters. The order hardly depends on it: 64 to 1024 give the same study
# times when docs/data's recorded run times are scheduled in that order.
CYCLE_OVERHEAD_PARAMS = 256


def one_line(text) -> str:
    return " ".join(str(text).split())


def chip_hash(chip) -> str:
    """The hash of a chip's resolved description."""
    return hashlib.sha256(chip.to_toml().encode()).hexdigest()[:16]


def run_id(study: Study, point: Point, seed: int) -> str:
    """What decides a run's result, hashed: equal ids give equal records."""
    key = {"base": chip_hash(study.chip), "values": point.values, "seed": seed, "cycles": study.cycles,
           "eval_every": study.eval_every, "stop_at": study.stop_at}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def structure_key(chip) -> str:
    """The compiled kernels a chip's runs need (chipmap.variant_of, one
    thread as on a study's workers): runs with equal keys share them."""
    from ..chipmap import variant_of

    return variant_of(chip, parallel=False).name


# ------------------------------------------------------------ one run (a task)

def execute(task: dict) -> dict:
    """Run one (chip, seed) to its cap or its stop accuracy, evaluating every
    `eval_every` cycles; the record the journal keeps. Never raises: an error
    is the record's one-line `error`."""
    rec = {k: task[k] for k in ("run_id", "index", "values", "seed")}
    rec.update(kind="run", worker=f"{socket.gethostname()}:{os.getpid()}", mgd_emu_version=__version__)
    t0 = time.perf_counter()
    try:
        from ..baseline import Backprop
        from ..engine import Emulator

        chip = loads_chip(task["chip"], task["source"])
        backprop = task.get("trainer") == "backprop"
        ck, ck_every = task.get("checkpoint"), task.get("checkpoint_every")
        emu, at, cost, acc = _resume(ck, chip, task["seed"]) if ck else (None, [], [], [])
        rec["resumed_from_cycle"] = emu.cycle if emu is not None else None
        if emu is None:
            emu = (Backprop if backprop else Emulator)(chip, task["seed"])
        _compile(emu)
        startup = time.perf_counter() - t0
        cycles, every, stop_at = task["cycles"], task["eval_every"], task["stop_at"]
        t1 = time.perf_counter()
        while emu.cycle < cycles and not (stop_at is not None and acc and acc[-1] >= stop_at):
            emu.run(min(every, cycles - emu.cycle))
            c, a = emu.evaluate()
            at.append(emu.cycle)
            cost.append(c)
            acc.append(a)
            if ck and emu.cycle % ck_every == 0 and emu.cycle < cycles:
                _save_progress(ck, emu, at, cost, acc)
        wall = time.perf_counter() - t1
        hz = chip.timing.clock_hz
        reached = {str(t): reached_cycle(at, acc, t) for t in task["targets"]}
        rec.update(
            status="ok", error=None, trainer=task.get("trainer", "mgd"), n_parameters=chip.n_parameters,
            chip_hash=chip_hash(chip),
            cycles=emu.cycle, chip_time_s=emu.chip_time, clock_hz=hz,
            eval_cycles=at, cost=cost, accuracy=acc, final_cost=cost[-1], final_accuracy=acc[-1],
            reached=reached, events={k: list(v) for k, v in emu.events.items()},
            saturation_warning=saturation_warning(emu.events, chip, emu.cycle),
            data=[emu.task.train.identity, emu.task.test.identity],
            wall_s=wall, startup_s=startup,
            cycles_per_s=(emu.cycle - (rec["resumed_from_cycle"] or 0)) / wall if wall > 0 else None)
        # its checkpoint stays until the study has recorded the run (_run): a
        # record lost on the way (the study interrupted meanwhile) resumes from it
    except Exception as exc:  # noqa: BLE001 - the run fails, the study goes on
        rec.update(status="failed", error=error_line(exc), wall_s=time.perf_counter() - t0)
    rec["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return rec


def _save_progress(ck: str, emu, at, cost, acc) -> None:
    """A run's checkpoint (CK.npz, mgd_emu.checkpoint: no pickle) and its
    evaluations so far (CK.json), each written beside and renamed into place
    by safe_io.output (a failed write, a full disk say, leaves nothing)."""
    from ..checkpoint import save_checkpoint
    from ..safe_io import write_text

    Path(ck).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(emu, ck + ".npz")
    write_text(ck + ".json", json.dumps({"cycle": emu.cycle, "eval_cycles": at, "cost": cost, "accuracy": acc}),
               option="checkpoint")


def _cycles_left(ck: str | None, cycles: int) -> int:
    """Cycles a run has left: fewer than `cycles` when its checkpoint's
    progress file (_save_progress) says it got part of the way (an estimate
    for the order runs start in; _resume decides what really resumes)."""
    if ck is None:
        return cycles
    try:
        done = json.loads(Path(ck + ".json").read_text())["cycle"]
    except (OSError, ValueError, KeyError, TypeError):
        return cycles
    return max(cycles - done, 0) if isinstance(done, int) else cycles


def _resume(ck: str, chip, seed: int):
    """(emulator, evaluations) from a run's checkpoint when it has a usable one
    of this chip and seed, else (None, [], [], []): the run starts over."""
    from ..checkpoint import load_checkpoint

    try:
        progress = json.loads(Path(ck + ".json").read_text())
        emu = load_checkpoint(ck + ".npz")
    except (OSError, ValueError):   # none yet, or unusable (CheckpointError is a ValueError)
        return None, [], [], []
    if emu.cycle != progress["cycle"] or emu.seed != seed or emu.chip.to_toml() != chip.to_toml():
        return None, [], [], []
    return emu, list(progress["eval_cycles"]), list(progress["cost"]), list(progress["accuracy"])


def error_line(exc: BaseException) -> str:
    """A failure on one line: a chip refusal as its message, anything else
    with its exception type."""
    if isinstance(exc, ChipError):
        return one_line(exc)
    return one_line(f"{type(exc).__name__}: {exc}")


def reached_cycle(at, acc, target: float) -> int | None:
    """The first evaluated cycle with accuracy >= target (None: never)."""
    for c, a in zip(at, acc):
        if a >= target:
            return int(c)
    return None


def warm(chip_toml: str, source: str) -> float:
    """Compile (or load from the on-disk cache) the kernels a chip needs; seconds taken."""
    t0 = time.perf_counter()
    from ..engine import Emulator

    _compile(Emulator(loads_chip(chip_toml, source), 0))
    return time.perf_counter() - t0


def warm_on_host(chip_toml: str, source: str, structure: str) -> float:
    """`warm` on every worker, with the compiling done once per host.

    The workers of one host share the on-disk kernel cache. The first to
    take the structure's lock there compiles what it needs, or loads it when
    already cached, and marks the structure warm; the others wait for the
    lock, then load from the cache, all at once. Seconds taken."""
    from ..kernel_cache import CACHE_DIR

    t0 = time.perf_counter()
    name = hashlib.sha256(f"{structure} {numba_version()}".encode()).hexdigest()[:16]
    mark = CACHE_DIR / f"warm-{name}"
    with _host_lock(CACHE_DIR / f"warm-{name}.lock") as locked:
        if locked and not mark.exists():
            try:
                warm(chip_toml, source)
            finally:   # a structure that fails to build fails once here, not once per worker
                mark.touch()
            return time.perf_counter() - t0
    warm(chip_toml, source)
    return time.perf_counter() - t0


@contextlib.contextmanager
def _host_lock(path: Path):
    """An exclusive flock on `path` while the block runs; yields whether it
    is held (False where there is none: not POSIX, no cache folder, or a
    file system without locks, such as some NFS)."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a")
    except (ImportError, OSError):
        yield False
        return
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        except OSError:
            yield False
            return
        yield True


def numba_version() -> str:
    import numba

    return numba.__version__


def _compile(emu) -> None:
    """Compile (or load) what `emu` runs on without moving it: its warm_up
    where the engine has one, else one cycle and an evaluation of a copy."""
    if hasattr(emu, "warm_up"):
        emu.warm_up()
    else:
        probe = type(emu)(emu.chip, emu.seed)
        probe.run(1)
        probe.evaluate()


# -------------------------------------------------------------------- journal

class SchedulerLost(StudyError):
    """The dask scheduler went away with runs unfinished: they are not
    failures (nothing is recorded for them), and resuming runs them."""


class Journal:
    """Append-only JSON lines, each fsynced as written."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._f = None
        self._failed = False   # a write failed (a full disk): closing may fail the same way

    def open(self) -> "Journal":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                # a line cut short by a crash is dropped before appending
                data = self.path.read_bytes()
                if data and not data.endswith(b"\n"):
                    with open(self.path, "r+b") as f:
                        f.truncate(data.rfind(b"\n") + 1)
            self._f = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise self._error(exc) from None
        try:
            import fcntl

            fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no lock
            pass
        except OSError:
            self._f.close()
            self._f = None
            raise StudyError(str(self.path), "", "another mgd-emu study is writing this journal now; wait for it "
                             "to end, or choose another output folder") from None
        return self

    def write(self, record: dict) -> None:
        try:
            self._f.write(json.dumps(record, default=_json_value) + "\n")
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as exc:
            self._failed = True
            raise self._error(exc) from None

    def _error(self, exc: OSError):
        from ..errors import describe
        from ..safe_io import OutputError

        return OutputError(f"the journal {self.path}: cannot be written ({describe(exc)})")

    def close(self) -> None:
        """Close the file. After a failed write, the failure of flushing the
        rest of that record again is not raised: the first one was, and the
        line cut short is dropped when the journal is next opened."""
        if self._f is not None:
            f, self._f = self._f, None
            try:
                f.close()
            except OSError:
                if not self._failed:
                    raise


def _json_value(v):
    import numpy as np

    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(type(v))


def read_journal(path) -> tuple[list[dict], dict[str, dict]]:
    """(study headers in order, last record per run id). A last line cut
    short by a crash is ignored; any other unreadable line is an error."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        raise StudyError(str(path), "", "no such journal") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyError(str(path), "", f"cannot be read ({exc})") from None
    headers, runs = [], {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):      # no newline after it: cut short
                continue
            raise StudyError(str(path), f"line {n}", "is not a journal record (not JSON)") from None
        kind = rec.get("kind") if isinstance(rec, dict) else None
        if kind == "study":
            if rec.get("version") != JOURNAL_VERSION:
                raise StudyError(str(path), f"line {n}", f"journal version {rec.get('version')!r}; "
                                 f"this mgd-emu reads version {JOURNAL_VERSION}")
            headers.append(rec)
        elif kind == "run":
            runs[rec["run_id"]] = rec
        else:
            raise StudyError(str(path), f"line {n}", "is not a journal record (no kind study/run)")
    if not headers:
        raise StudyError(str(path), "", "is not a study journal (no study header)")
    return headers, runs


# ---------------------------------------------------------------------- study

@dataclass
class Outcome:
    """What `run_study` did."""

    study: Study
    out: Path | None
    dataset: object                      # xarray.Dataset
    ran: int = 0                         # runs executed now
    skipped: int = 0                     # runs the journal already held
    failures: list[dict] = field(default_factory=list)
    startup_s: float = 0.0               # cluster start (or connection)
    compile_s: float = 0.0               # warm-up before the runs fan out
    wall_s: float = 0.0
    paths: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def plan(study: Study, done: set[str], checkpoints: Path | None = None):
    """(tasks to run, failed records for points the chip refuses, ids skipped).
    checkpoints: the folder of per-run checkpoints (study.checkpoint_every)."""
    tasks, refused, skipped = [], [], []
    for point in study.points():
        ids = [(seed, run_id(study, point, seed)) for seed in study.seeds]
        todo = [(s, i) for s, i in ids if i not in done]
        skipped += [i for s, i in ids if i in done]
        if not todo:
            continue
        try:
            chip = study.point_chip(point)
        except ChipError as exc:
            for seed, rid in todo:
                refused.append({"kind": "run", "run_id": rid, "index": list(point.index), "values": point.values,
                                "seed": seed, "status": "failed", "error": f"{study.source}: {error_line(exc)}",
                                "worker": None, "mgd_emu_version": __version__,
                                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            continue
        toml = chip.to_toml()
        backprop = point.trainer == "backprop"   # the baseline: nothing to compile, nothing to checkpoint
        for seed, rid in todo:
            ck = str(checkpoints / rid) if checkpoints and study.checkpoint_every and not backprop else None
            tasks.append({"run_id": rid, "index": list(point.index), "values": point.values, "seed": seed,
                          "chip": toml, "source": f"{study.chip_path} [{point.label}]", "trainer": point.trainer,
                          "structure": None if backprop else structure_key(chip), "cycles": study.cycles,
                          "eval_every": study.eval_every, "stop_at": study.stop_at, "targets": study.targets,
                          "work": _cycles_left(ck, study.cycles) * (chip.n_parameters + CYCLE_OVERHEAD_PARAMS),
                          "checkpoint": ck, "checkpoint_every": study.checkpoint_every})
    return tasks, refused, skipped


def run_study(study: Study, out=None, *, client=None, scheduler: str | None = None,
              scheduler_file: str | None = None, workers: int | None = None, serial: bool = False,
              resume: bool = False, progress: bool = False, log=None, announce: str | None = None) -> Outcome:
    """Run every (grid point, seed) of `study` and return the results.

    out: folder for the journal and results (None: nothing is written, and
    nothing can be resumed). client: a dask.distributed Client to use;
    otherwise one connects to `scheduler` / `scheduler_file`, or starts a
    LocalCluster of `workers` processes (default: one per core), one thread
    each. serial: run in this process, one run after another, without dask.
    resume: continue the journal in `out`, running only what it lacks.
    progress: a progress bar on stderr. log(text): one-line messages;
    announce: one logged once the study is under way (the scheduler
    reached, the journal open), so that a study refused before that says
    only why.

    Raises StudyError for a study that cannot run, SchedulerLost (a
    StudyError) when the dask scheduler goes away or cancels runs, and
    safe_io.OutputError when the journal or the results cannot be written
    (a full disk): in each case every run recorded before it is kept in the
    journal, and resume=True runs the rest.
    """
    t_start = time.perf_counter()
    journal, done, records = None, set(), {}
    jpath = None
    if out is not None:
        out = Path(out)
        jpath = out / JOURNAL
        if jpath.exists() and not resume:
            raise StudyError(str(jpath), "", "this folder holds a study already: add --resume to continue it, "
                             "or choose another output folder")
        if resume and jpath.exists():
            headers, records = read_journal(jpath)
            theirs = headers[-1]["study"] if headers else {}
            if theirs and theirs.get("name") != study.name:
                raise StudyError(str(jpath), "", f"holds the study {theirs.get('name')!r} ({theirs.get('source')}), "
                                 f"not {study.name!r}: resume it with its own file (or name this one {theirs.get('name')!r}: "
                                 "[study] name), or choose another output folder")
            done = {i for i, r in records.items() if r.get("status") == "ok"}
            mine = {run_id(study, p, s) for p in study.points() for s in study.seeds}
            other = len(set(records) - mine)
            if other and log:
                log(f"{other} run(s) in {jpath} belong to another version of the study (base chip, seeds, "
                    "cycles, eval_every, stop_at or grid changed) and are not part of these results")
    tasks, refused, skipped = plan(study, done, out.resolve() / CHECKPOINTS if out is not None else None)
    outcome = Outcome(study, out, None, skipped=len(skipped))
    # the cluster first: a scheduler that cannot be reached leaves nothing behind
    cluster, own_client = None, False
    if tasks and not serial:
        t0 = time.perf_counter()
        client, cluster, own_client = _connect(client, scheduler, scheduler_file, workers)
        outcome.startup_s = time.perf_counter() - t0
    try:
        if jpath is not None:
            journal = Journal(jpath).open()
            journal.write({"kind": "study", "version": JOURNAL_VERSION, "study": study.to_dict(),
                           "study_hash": study.hash(), "mgd_emu_version": __version__,
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(),
                           "resume": bool(resume and done)})
        if announce and log:
            log(announce)
        return _run(study, out, journal, records, tasks, refused, skipped, outcome, client, serial, progress,
                    log, t_start)
    finally:
        if journal is not None:
            journal.close()
        if own_client:
            client.close()
        if cluster is not None:
            cluster.close()   # a worker busy with a run gets 4 s to finish it, then is killed


def _run(study, out, journal, records, tasks, refused, skipped, outcome, client, serial, progress, log, t_start):
    from .results import to_dataset, write_results

    def record(rec):
        records[rec["run_id"]] = rec
        if journal is not None:
            journal.write(rec)
        if rec["status"] != "ok":
            outcome.failures.append(rec)
        elif out is not None:   # recorded for good: its checkpoint is done with
            for suffix in (".npz", ".json"):
                (out.resolve() / CHECKPOINTS / (rec["run_id"] + suffix)).unlink(missing_ok=True)
        outcome.ran += 1

    # the points the chip refuses fail at once: counted in the bar's start, not its rate
    bar = _Bar(study.n_runs, len(skipped) + len(refused), progress, study.name, done=len(skipped),
               work=sum(t["work"] for t in tasks))
    failing = False
    try:
        for rec in refused:
            record(rec)
            bar.finished(rec, advance=False)
        if tasks:
            if serial:
                bar.start()
                for n, task in enumerate(tasks):
                    bar.running(1)
                    rec = execute(task)
                    record(rec)
                    bar.running(int(n + 1 < len(tasks)))
                    bar.finished(rec, task["work"], startup=rec.get("startup_s"))
            else:
                _run_dask(tasks, record, bar, outcome, client, log)
    except BaseException:
        failing = True
        raise
    finally:
        bar.close()
        if journal is not None:
            journal.close()
        outcome.wall_s = time.perf_counter() - t_start
        mine = {run_id(study, p, s) for p in study.points() for s in study.seeds}
        outcome.dataset = to_dataset(study, {i: r for i, r in records.items() if i in mine})
        if out is not None:
            try:
                outcome.paths = write_results(outcome.dataset, out)
            except (OSError, ValueError):   # ValueError: safe_io.OutputError
                # the results of a study stopped by an error (a full disk,
                # say) are a courtesy: that error is the one to report
                if not failing:
                    raise
    return outcome


def _connect(client, scheduler, scheduler_file, workers):
    """(client, the cluster this call started or None, whether the client is ours to close)."""
    from dask.distributed import Client

    if client is not None:
        return client, None, False
    if scheduler or scheduler_file:
        try:
            return Client(scheduler, scheduler_file=scheduler_file, timeout=CONNECT_TIMEOUT), None, True
        except (OSError, TimeoutError, ValueError) as exc:
            where = scheduler or scheduler_file
            raise StudyError(str(where), "", f"cannot connect to the dask scheduler ({one_line(exc)})") from None
        except (AssertionError, KeyError, TypeError):   # what dask makes of a file that is not its own
            raise StudyError(str(scheduler_file or scheduler), "", "is not a dask scheduler file (the JSON that "
                             "`dask scheduler --scheduler-file FILE` writes)") from None
    cluster = local_cluster(workers)
    try:
        return Client(cluster), cluster, True
    except BaseException:
        cluster.close()
        raise


def _run_dask(tasks, record, bar, outcome, client, log):
    from concurrent.futures import CancelledError

    from dask.distributed import as_completed

    t0 = time.perf_counter()
    futures = []
    recorded = 0
    try:
        if not client.scheduler_info().get("workers"):
            if log:
                log("waiting for a dask worker to connect to the scheduler")
            client.wait_for_workers(1)
        outcome.startup_s += time.perf_counter() - t0
        t1 = time.perf_counter()
        _warm_up(client, tasks)
        outcome.compile_s = time.perf_counter() - t1
        if client.status != "running":   # the warm-up's tasks were lost with the scheduler
            raise SchedulerLost(_scheduler_name(client), "", f"lost the dask scheduler during the warm-up with "
                                f"{len(tasks)} run(s) unfinished (nothing is recorded for them)")
        by_key = {}
        # Largest runs first (longest-processing-time order): the study then
        # ends with small runs filling in around the last large ones, not
        # with a large run started last while the other workers idle.
        ranked = sorted(tasks, key=lambda t: -t["work"])
        for rank, task in enumerate(ranked):
            fut = client.submit(execute, task, pure=False, priority=len(ranked) - rank,
                                key=f"mgd-run-{task['run_id']}-{uuid.uuid4().hex[:8]}")
            by_key[fut.key] = task
            futures.append(fut)
        threads = sum(client.nthreads().values()) or 1
        bar.start()
        bar.running(min(threads, len(futures)))
        pending = len(futures)
        cancelled = {}   # why -> runs: the scheduler cancelled them (went away, restarted, forgot them)
        done = as_completed(futures)
        for fut in done:
            task = by_key[fut.key]
            if fut.status not in ("finished", "error", "cancelled"):
                done.add(fut)   # lost with its worker after it finished: computed again
                continue
            pending -= 1
            try:
                if fut.status == "cancelled":
                    fut.result()   # raises the cancellation, with its reason
                if fut.status == "finished":
                    rec = fut.result()
                else:  # the task itself never raises: its worker died too often (KilledWorker)
                    rec = {k: task[k] for k in ("run_id", "index", "values", "seed")}
                    rec.update(kind="run", status="failed", error=error_line(fut.exception()), worker=None,
                               mgd_emu_version=__version__, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            except CancelledError as why:
                reason = getattr(why, "reason", None) or "cancelled"
                cancelled[reason] = cancelled.get(reason, 0) + 1
                continue
            record(rec)
            recorded += 1
            fut.release()
            bar.running(min(threads, pending))
            bar.finished(rec, task["work"])
        if cancelled:
            n = sum(cancelled.values())
            why = ("went away" if set(cancelled) == {"scheduler-connection-lost"} else
                   "cancelled them (" + ", ".join(sorted(cancelled)) + ")")
            raise SchedulerLost(_scheduler_name(client), "", f"the dask scheduler {why} with {n} run(s) unfinished "
                                "(nothing is recorded for them)")
    except BrokenPipeError:
        raise
    except OSError as exc:   # the connection to the scheduler (CommClosedError, a timeout) failed
        raise SchedulerLost(_scheduler_name(client), "", f"lost the dask scheduler ({one_line(exc)}) with "
                            f"{len(tasks) - recorded} run(s) unfinished (nothing is recorded for them)") from None
    finally:
        for fut in futures:
            if not fut.done():
                fut.cancel()


def _scheduler_name(client) -> str:
    return str(getattr(client.scheduler, "address", None) or "the dask scheduler")


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


DASHBOARD_PORT = 8787   # dask's own default


def local_cluster(workers: int | None = None, dashboard_port: int = DASHBOARD_PORT):
    """A LocalCluster of worker processes, one thread each, NUMBA_NUM_THREADS=1.

    Its scheduler sends a worker its next run only when the last one ends
    (worker saturation 1.0; dask's default 1.1 queues a second run on each
    1-thread worker, so at the end of a study a fast worker can sit idle
    while a slow one still holds a run it has not started). Each worker
    preloads `mgd_emu.studies.preload` as it starts. The scheduler's HTTP
    server (dask's dashboard) listens on this machine only (127.0.0.1), on
    `dashboard_port` when it is free, else on any free port (dask would take
    one too, with a warning)."""
    import logging

    import dask
    from dask.distributed import LocalCluster

    n = workers or cores()
    # The worker processes inherit SIGINT ignored: Ctrl-C in a terminal reaches
    # the whole process group, and it is the client's to handle (it closes
    # the cluster); workers that died of it would print tracebacks. An ignored
    # signal is the only disposition a spawned process keeps, so this process
    # ignores SIGINT too while the cluster starts, and a sentinel process (in
    # the same group, with a handler) notes a Ctrl-C of those seconds.
    main = threading.current_thread() is threading.main_thread()
    sentinel = _CtrlCSentinel() if main else None
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    cluster = None
    try:
        # the user's own worker preloads (dask config) too: an explicit list replaces them
        preload = list(dask.config.get("distributed.worker.preload", None) or []) + ["mgd_emu.studies.preload"]
        with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
            http = f"127.0.0.1:{dashboard_port if _port_free(dashboard_port) else 0}"
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=http,
                                   silence_logs=logging.ERROR, env={"NUMBA_NUM_THREADS": "1"}, preload=preload)
    finally:
        pressed = sentinel is not None and sentinel.stop()   # first: a Ctrl-C after this is the handler's
        if main:
            signal.signal(signal.SIGINT, previous)
    if pressed:   # Ctrl-C while the cluster started: stop now, as it would have then
        cluster.close()
        from ..errors import Interrupted

        raise Interrupted(signal.SIGINT)
    return cluster


class _CtrlCSentinel:
    """A small process in this one's process group that notes a SIGINT (the
    terminal sends Ctrl-C to the whole group) while this one ignores it."""

    CODE = ("import os, signal\n"
            "signal.signal(signal.SIGINT, lambda *a: (os.write(1, b'I'), os._exit(0)))\n"
            "os.write(1, b'R')\n"
            "while True:\n"
            "    signal.pause()\n")

    def __init__(self):
        import subprocess

        self.proc = subprocess.Popen([sys.executable, "-S", "-c", self.CODE], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.proc.stdout.read(1)   # b"R": its handler is set

    def stop(self) -> bool:
        """End the sentinel; whether a SIGINT reached it. (Ended by a signal,
        not by closing a pipe: workers forked from this process would hold
        the pipe open.)"""
        self.proc.terminate()
        said = self.proc.stdout.read()   # its only writer is the sentinel itself
        self.proc.wait()
        return b"I" in said


def _port_free(port: int) -> bool:
    """Whether a TCP port of 127.0.0.1 is free to listen on now (one in
    TIME_WAIT counts as free, as it does for the server that takes it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _warm_up(client, tasks) -> None:
    """Have each worker compile or load each chip structure's kernels before
    the runs fan out (warm_on_host: compiled once per host). The tasks are
    placed on every worker; dask may still move one (a worker that lost
    its warm-up then loads the kernels in its first run)."""
    first = {}
    for task in tasks:
        if task["structure"] is not None:
            first.setdefault(task["structure"], task)
    structures = list(first.items())
    if not structures:
        return
    workers = list(client.scheduler_info()["workers"])
    futs = []
    for n, addr in enumerate(workers):
        # each worker starts with another structure, so that different
        # structures compile at once rather than one lock after another
        for s, t in structures[n % len(structures):] + structures[:n % len(structures)]:
            futs.append(client.submit(warm_on_host, t["chip"], t["source"], s, workers=[addr],
                                      allow_other_workers=True, pure=False,
                                      key=f"mgd-warm-{s}-{uuid.uuid4().hex[:8]}"))
    for f in futs:
        try:
            f.result()
        except Exception:  # noqa: BLE001 - a failing chip fails its runs, with its message
            pass


class _Bar:
    """Runs done / failed / running, elapsed, and the time left: a tqdm bar
    on stderr when it is a terminal, else (a batch job's log) a line at every
    tenth of the runs. The time left is weighted by each run's work (plan's
    "work"), not counted in runs: with the largest runs first, a count would
    call the study longer than it is until the small runs came through."""

    FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} runs [{elapsed}{postfix}]"

    def __init__(self, total, initial, enabled, name, done=0, work=0):
        self.done, self.failed, self.n_running = done, 0, 0
        self.total, self.n, self.name = total, initial, name
        self.work_left, self.work_done = work, 0
        self.t0 = self.t_begin = time.perf_counter()
        self.bar = None
        self.lines = enabled and not sys.stderr.isatty()
        self.next_line = initial + max(total // 10, 1)
        if enabled and not self.lines:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, file=sys.stderr, dynamic_ncols=True, desc=name,
                            leave=False, bar_format=self.FORMAT)
            self._post()

    def start(self):
        """The runs start now (after the workers' warm-up): the clock of the time left."""
        self.t0 = time.perf_counter()

    def seconds_left(self) -> float | None:
        """Time so far x work left / work done; None before a run has finished."""
        if self.work_done <= 0:
            return None
        return (time.perf_counter() - self.t0) * self.work_left / self.work_done

    def _status(self) -> str:
        from tqdm import tqdm

        left = self.seconds_left()
        return f"done={self.done} failed={self.failed} running={self.n_running}" + (
            f", about {tqdm.format_interval(left)} left" if left else "")

    def _post(self):
        if self.bar is not None:
            self.bar.set_postfix_str(self._status(), refresh=True)

    def running(self, n):
        self.n_running = n
        self._post()

    def finished(self, rec, work=0, advance=True, startup=0.0):
        """A run ended; startup: seconds of it spent building (and compiling),
        left out of the time left (a serial study compiles in its first runs)."""
        self.t0 += startup or 0.0
        if rec["status"] == "ok":
            self.done += 1
        else:
            self.failed += 1
        if rec["status"] == "ok":   # a failed run may have ended at once: not a measure of the rate
            self.work_done += work
        self.work_left -= work
        if self.bar is not None:   # the counts first: the bar redraws as it advances
            self.bar.set_postfix_str(self._status(), refresh=not advance)
        if advance:
            self.n += 1
            if self.bar is not None:
                self.bar.update(1)
                self.bar.refresh()
        if self.lines and advance and (self.n >= self.next_line or self.n == self.total):
            from tqdm import tqdm

            self.next_line = self.n + max(self.total // 10, 1)
            print(f"mgd-emu: {self.name}: {self.n}/{self.total} runs, "
                  f"{tqdm.format_interval(time.perf_counter() - self.t_begin)} elapsed, {self._status()}",
                  file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
