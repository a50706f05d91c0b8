"""Gradient-quality tables from the diagnostics Parquet table
(``contract.schema.DIAGNOSTICS_SCHEMA``).

Pure pandas, like ``analysis.tradeoff``: ``by_step`` joins every probe with its trial's arm
and setting (for the cosine/variance-vs-step plot), ``summary`` averages the probes of each
estimator arm x bit-width (mean cosine to the reference, SNR, relative bias, variance) next
to STE's figures measured at the same points, so the bias of STE at low bit-width and where
FOGZO sits between STE and n-SPSA read off one table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.tradeoff import SETTING, attach_arms

SUMMARY_COLUMNS = [
    *SETTING,
    "arm",
    "estimator",
    "probes",
    "est_cosine",
    "est_snr",
    "est_rel_bias",
    "est_variance",
    "ste_cosine",
    "ste_rel_bias",
    "ref_noise",
    "probe_flops",
]


def by_step(diagnostics: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Every probe with ``arm``, ``status`` and the setting columns of its trial (empty frame
    with those columns when the sweep has no diagnostics)."""
    if diagnostics is None or diagnostics.empty:
        return pd.DataFrame(
            columns=["sweep", "trial_id", "step", "arm", "status", "estimator", *SETTING]
        )
    estimators = trials[["sweep", "trial_id", "estimator"]]
    rows = attach_arms(diagnostics, trials).merge(estimators, on=["sweep", "trial_id"], how="left")
    return rows.sort_values(["arm", "bits", "trial_id", "step"]).reset_index(drop=True)


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per setting x arm: the mean over probes (all steps, all seeds) of each figure.

    ``est_snr`` is inf for STE (no variance): it stays inf. ``probe_flops`` is the mean cost
    of one probe (not part of any trial's training compute)."""
    if rows.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    figures = [c for c in SUMMARY_COLUMNS[len(SETTING) + 3 :]]
    grouped = rows.replace([np.inf], np.nan).groupby([*SETTING, "arm", "estimator"], dropna=False)
    out = grouped[figures].mean().reset_index()
    out.insert(len(SETTING) + 2, "probes", grouped.size().to_numpy())
    deterministic = grouped["est_variance"].max().to_numpy() == 0
    out.loc[deterministic, "est_snr"] = np.inf
    return out[SUMMARY_COLUMNS].sort_values([*SETTING, "arm"]).reset_index(drop=True)


def display_summary(table: pd.DataFrame) -> pd.DataFrame:
    """``summary`` formatted for the HTML report."""

    def fmt(value: float, spec: str = ".3f") -> str:
        return "—" if pd.isna(value) else "∞" if np.isinf(value) else format(value, spec)

    return pd.DataFrame(
        {
            **{c: table[c] for c in [*SETTING, "arm", "probes"]},
            "cosine to ref": table["est_cosine"].map(fmt),
            "SNR": table["est_snr"].map(lambda v: fmt(v, ".3g")),
            "rel. bias": table["est_rel_bias"].map(fmt),
            "variance (trace)": table["est_variance"].map(lambda v: fmt(v, ".3g")),
            "STE cosine (same points)": table["ste_cosine"].map(fmt),
            "reference noise": table["ref_noise"].map(fmt),
        }
    )
