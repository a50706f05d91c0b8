"""The sweep service: spec -> Ray Tune trials -> Parquet. The only package that imports Ray
(lazily: ``service.spec`` and ``contract.schema`` work without starting anything)."""

__version__ = "0.1.0"
