"""Measured performance of qsweep: ``python -m benchmarks`` updates BENCHMARKS.md.

One module per section, each with ``KEY``, ``TITLE`` and ``run(quick, workdir, log) ->
Section`` (tables, bars, measurements; ``benchmarks.common``). The numbers are generated;
what they mean is written by hand in BENCHMARKS.md beside them. These are measurements,
not timed tests: a missed bar is reported, only a crash fails. Not installed with qsweep.
"""

SECTIONS = (
    "estimator_cost",  # estimator step wall time vs an STE step / a forward (1 torch thread)
    "memory",  # peak tensor bytes of a step vs inference
    "fogzo_compute",  # the FOGZO paper's compute-to-target claim on the 2-layer MLP
    "service_overhead",  # Ray Tune sweep vs the same trials in one process
    "results_path",  # Parquet sink throughput; analysis load + report on 1M curve rows
    "small_trials",  # whole `qsweep run` vs multiprocessing.Pool, bare Ray Tune and a loop
    "scale",  # 10,000 trivial trials: qsweep vs bare Ray Tune, status and report times
)
