"""The quick sweep, shortened, and the parts of its Parquet that must not change.

``tests/data/quick_golden/`` holds the trials and curves this wrote before the refactor
that gave the results contract its own package (issue 17); ``test_quick_golden`` reruns it
and compares. Regenerate only for an intended change of the results:
``python -m tests.service.quick_golden tests/data/quick_golden``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from contract.curves import read_curves

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "data" / "quick_golden"

# Columns that differ from run to run (time, place, package versions) or name the contract's
# version: everything else is a function of the spec and the seeds.
VOLATILE = {
    "schema_version",
    "wall_s",
    "started_at",
    "finished_at",
    "host",
    "node_id",
    "versions",
    "peak_memory_bytes",
}


def shortened_quick_spec() -> dict[str, Any]:
    """examples/quick.yaml with a tenth of its budget and one seed: the same 18 + 1 trials'
    structure (every estimator, bits 2/4/8, the pre-training stage) in seconds."""
    spec = yaml.safe_load((ROOT / "examples" / "quick.yaml").read_text())
    spec["name"] = "quick-golden"
    spec["grid"]["seeds"] = [0]
    spec["budget"] = {"flops": 1.2e7}
    spec["pretrain"]["steps"] = 30
    spec["trial"]["num_evals"] = 3
    spec["checkpoint_every"] = 0
    return spec


def comparable(table: pa.Table, key: list[str]) -> list[dict[str, Any]]:
    """Rows without the volatile columns, sorted by ``key``, the config JSON parsed."""
    keep = [name for name in table.column_names if name not in VOLATILE]
    rows = table.select(keep).to_pylist()
    for row in rows:
        if isinstance(row.get("config"), str):
            row["config"] = json.loads(row["config"])
        for name, value in row.items():
            if isinstance(value, float) and math.isnan(value):
                row[name] = "nan"  # NaN != NaN: a diverged loss is the same result both times
    return sorted(rows, key=lambda r: tuple(r[k] for k in key))


def main(out: str) -> None:
    """Run the shortened quick sweep on the embedded Ray and copy its Parquet to ``out``."""
    import tempfile

    from service.cli import app

    work = Path(tempfile.mkdtemp(prefix="golden"))
    spec_path = work / "quick-golden.yaml"
    spec_path.write_text(yaml.safe_dump(shortened_quick_spec(), sort_keys=False))
    try:
        app(["run", str(spec_path), "--results", str(work), "--no-dashboard", "--num-cpus", "2"])
    except SystemExit as exit_:
        if exit_.code:
            raise
    sweep = work / "quick-golden"
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    pq.write_table(pq.read_table(sweep / "trials.parquet"), target / "trials.parquet")
    pq.write_table(read_curves(str(sweep)), target / "curves.parquet")  # either layout


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(GOLDEN))
