"""Design-space studies: a grid of chip keys x seeds, each run to a cycle cap
or a target accuracy, on dask.distributed or serially; results as xarray.

    from mgd_emu.studies import load_study, run_study
    study = load_study("studies/xor_8bit_widths.toml", {"study.cycles": 50_000})
    ds = run_study(study, "traces/widths").dataset      # a LocalCluster, one process per core
    ds = run_study(study, serial=True).dataset          # in this process, no dask
    ds = run_study(study, client=my_client).dataset     # an existing dask Client
    ds.cycles_to_target.median("seed")

See `spec` for the study file, `runner` for the journal and the cluster,
`results` for the Dataset, `plot` for the figures.
"""
from .results import collect, open_results, to_dataset, write_results
from .runner import Outcome, local_cluster, read_journal, run_study
from .spec import Study, StudyError, load_study, loads_study

__all__ = ["Outcome", "Study", "StudyError", "collect", "load_study", "loads_study", "local_cluster",
           "open_results", "read_journal", "run_study", "to_dataset", "write_results"]
