"""Prepares a dask worker process for study runs when it starts.

The LocalCluster of `mgd-emu study` preloads this module into every worker;
workers you start yourself take it with
`dask worker ... --preload mgd_emu.studies.preload`. It imports the engine
and sets up Numba's CPU target, which Numba otherwise does on the first
kernel a process loads from the cache (about 0.3-0.4 s, mostly importing
the linear-algebra modules Numba checks for): paid at worker start, not in
the study's warm-up or its first run.
"""


def prepare_process() -> None:
    """Import the engine and initialise Numba's CPU target in this process."""
    from numba.core.registry import cpu_target

    from .. import engine  # noqa: F401
    from . import runner  # noqa: F401

    cpu_target.target_context.refresh()


def dask_setup(worker) -> None:   # called by dask when the worker starts
    prepare_process()
