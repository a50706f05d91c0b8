"""One headline: report.html's headline table is the terminal's, row for row (regime column,
ranking within a regime), computed by one function (``analysis.summary.headline_rows``)."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

from analysis.load import load_results
from analysis.report import report_command
from analysis.summary import headline_rows
from tests.service.quick_golden import GOLDEN


def _cells(table_html: str) -> list[list[str]]:
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table_html, flags=re.S)
    cells = [
        [html.unescape(c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, flags=re.S)]
        for r in rows
    ]
    return [c for c in cells if c]  # the header row has <th> cells only


def test_the_html_and_terminal_headlines_agree_on_the_quick_sweep(tmp_path: Path, capsys):
    from service.cli import print_headline

    folder = tmp_path / "quick-golden"
    folder.mkdir()
    shutil.copy(GOLDEN / "trials.parquet", folder / "trials.parquet")
    shutil.copy(GOLDEN / "curves.parquet", folder / "curves.parquet")
    trials = load_results(str(folder)).trials
    _, rows = headline_rows(trials)
    regimes = set(rows["regime"])
    assert {"from scratch", "fine-tune", "pre-training"} <= regimes
    expected = [[str(c) for c in row] for row in rows.itertuples(index=False)]

    page_path, _ = report_command([str(folder)], str(tmp_path / "out"))
    page = Path(page_path).read_text()
    headline = page[page.index("<h2>Headline</h2>") :]
    headline = headline[: headline.index("</table>")]
    assert _cells(headline) == expected

    print_headline(str(folder))
    terminal = capsys.readouterr().out
    lines = [line for line in terminal.splitlines() if line.startswith("│")]
    shown = [[c.strip() for c in line.strip("│").split("│")] for line in lines]
    assert shown == expected
    # "vs best" ranks within a regime: each (regime, quantizer, bits) group has one "best"
    for _, group in rows[rows["regime"] != "pre-training"].groupby(["regime", "quantizer", "bits"]):
        assert (group["vs best"] == "best").sum() == 1
