"""Measured performance of qsweep, written to ``BENCHMARKS.md`` by ``python -m benchmarks``.

One module per section; each has ``KEY``, ``TITLE`` and ``run(quick, workdir, log) -> Section``:

1. ``estimator_cost``   estimator step wall time vs an STE step / a forward (1 torch thread)
2. ``memory``           peak tensor bytes of a step vs inference
3. ``fogzo_compute``    the FOGZO paper's compute-to-target claim on the 2-layer MLP
4. ``service_overhead`` Ray Tune sweep vs the same trials in one process
5. ``results_path``     Parquet sink throughput; analysis load + report on 1M curve rows
6. ``small_trials``     whole ``qsweep run`` vs multiprocessing.Pool, bare Ray Tune and a loop
7. ``scale``            10,000 trivial trials: qsweep vs bare Ray Tune (embedded, 3-node
   cluster), the cost of one status event at 1k-100k trials, status and report times
   (each configuration kept in its own file: ``python -m benchmarks.scale --config ...``)

These are measurements, not timed tests: nothing fails because the machine is slow; a bar
that is missed is reported (with a profile of where the time goes), and only a crash fails.
"""

SECTIONS = (
    "estimator_cost",
    "memory",
    "fogzo_compute",
    "service_overhead",
    "results_path",
    "small_trials",
    "scale",
)
