"""The results contract: the bottom layer every other package imports, and that imports none.

What a sweep's folder holds and how to read and write it: the Parquet schemas and their
version (``schema``), result locations and the one atomic writer (``storage``), the metrics
a trial reports and which way is better (``metrics``), and the record a trial reports
(``record``). Only pyarrow and the standard library here: no torch, no Ray, so ``qsweep
status`` and ``analysis`` read results without starting anything.
"""
