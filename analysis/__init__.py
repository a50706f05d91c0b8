"""Quality-vs-compute analysis of sweep results, from the Parquet alone (no Ray, no torch).

Layers, each its own module: ``tradeoff`` (pure functions on the trials and curves tables)
-> ``report_data`` (the ``Report``: every table of the report, as data) -> renderers that
take a ``Report`` and recompute nothing: ``report_text`` (the headline text) and
``report_html`` (the static page, drawing with ``plots``). ``report`` is the command that
wires them. ``load`` reads and checks the Parquet contract. Nothing is imported here, so
``import analysis.load`` stays cheap (no matplotlib) for ``qsweep status``.
"""
