"""Prepares a dask worker process for study runs when it starts.

The LocalCluster of `mgd-emu study` preloads this module into every worker;
workers you start yourself take it with
`dask worker ... --preload mgd_emu.studies.preload`. It imports the engine
and sets up Numba's CPU target, which Numba otherwise does on the first
kernel a process loads from the cache (about 0.3-0.4 s, mostly importing
the linear-algebra modules Numba checks for): paid at worker start, not in
the study's warm-up or its first run. Long-lived workers that serve many
studies pay it once; a LocalCluster started for one study pays it in its
start-up instead of its warm-up.
"""

PREPARED = False   # set once prepare_process has run in this process


def prepare_process() -> None:
    """Import the engine and initialise Numba's CPU target in this process.

    The target set-up is an internal Numba call: where a Numba release
    lacks it, the first kernel load does the same work, so it is skipped."""
    global PREPARED
    from .. import engine  # noqa: F401
    from . import runner  # noqa: F401

    try:
        from numba.core.registry import cpu_target

        cpu_target.target_context.refresh()
    except (ImportError, AttributeError):
        pass
    PREPARED = True


def dask_setup(worker) -> None:   # called by dask when the worker starts
    prepare_process()
