"""Quality-vs-compute analysis of sweep results, from the Parquet alone (no Ray, no torch).

Three layers, each its own module: ``tradeoff`` (pure functions on the trials and curves
tables) -> ``report`` (the ``Report`` of tables, its text and HTML) -> ``plots`` (draws
what it is given). ``load`` reads and checks the Parquet contract. Nothing is imported
here, so ``import analysis.load`` stays cheap (no matplotlib) for ``qsweep status``.
"""
