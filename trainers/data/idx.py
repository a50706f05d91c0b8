"""IDX reader (the MNIST file format) in numpy, so MNIST loads without torchvision."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .base import DatasetError

# Third byte of the magic number -> big-endian element dtype (LeCun's IDX spec).
IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(
    path: str | Path, *, expect_ndim: int | None = None, dataset: str = "idx"
) -> np.ndarray:
    """Parse an IDX file (optionally gzipped, detected by its first bytes).

    Magic number: two zero bytes, a dtype code and the number of dims; then one big-endian
    uint32 per dim; then the data. Any deviation raises a one-line `DatasetError`.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{dataset}: cannot read IDX file {path}: {exc.strerror}") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DatasetError(f"{dataset}: {path} is not a valid gzip file ({exc})") from exc
    if len(raw) < 4:
        raise DatasetError(f"{dataset}: {path} is too short to be an IDX file")
    magic = int.from_bytes(raw[:4], "big")
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or code not in IDX_DTYPES or ndim == 0:
        raise DatasetError(
            f"{dataset}: bad magic number 0x{magic:08X} in {path}; expected an "
            f"IDX file (0x0000080{expect_ndim or 'N'} for uint8 data)"
        )
    if expect_ndim is not None and ndim != expect_ndim:
        raise DatasetError(
            f"{dataset}: magic number 0x{magic:08X} in {path} says {ndim} "
            f"dims; expected {expect_ndim} (is it the right file?)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{dataset}: {path} is truncated inside its IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetError(
            f"{dataset}: {path} holds {len(raw) - header} data bytes; its "
            f"header dims {dims} need {expected}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))
