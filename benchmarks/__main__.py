"""``python -m benchmarks [--quick] [--out FILE] [--only SECTION ...]`` or ``--gpu [--dry-run]``.

Runs the sections and replaces their generated blocks in the Markdown file
(``<!-- generated:KEY -->`` ... ``<!-- /generated:KEY -->``), then the machine block and the
summary of every bar in the file. Everything outside the blocks is hand-written and kept: a
file without a section's block gets it appended under the section's title. The GPU section
runs only with ``--gpu`` (on a CUDA machine); CPU runs never touch its block.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import SECTIONS
from benchmarks.common import Bar, Section, Table, bars_from_json, machine_info, to_json

BEGIN, END = "<!-- generated:{} -->", "<!-- /generated:{} -->"
DATA = "<!-- data: "


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def section_block(section: Section, mode: str) -> str:
    """The generated part of one section: when and how it ran, its tables, its bars."""
    load = os.getloadavg()[0]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"_{mode}, {when}, load {load:.1f} at the end; ran in {section.seconds:.0f} s._"]
    parts += [table.markdown() for table in section.tables]
    if section.bars:
        parts.append(bars_table("Bars", section.bars).markdown())
    parts.append(DATA + to_json(section) + " -->")
    return "\n\n".join(parts)


def bars_table(caption: str, bars: list[Bar]) -> Table:
    rows = [
        [b.name, f"{b.value:.3g}", f"{b.op} {b.limit:g}", "yes" if b.met else "**no**"]
        for b in bars
    ]
    return Table(caption, ["bar", "measured", "limit", "met"], rows)


def blocks(text: str) -> dict[str, str]:
    """Every generated block's content, by key, in file order."""
    pattern = r"<!-- generated:([\w-]+) -->\n(.*?)\n<!-- /generated:\1 -->"
    return {m.group(1): m.group(2) for m in re.finditer(pattern, text, re.S)}


def replace_block(text: str, key: str, content: str, title: str) -> str:
    """``text`` with block ``key`` holding ``content``; appended under ``## title`` if absent."""
    block = f"{BEGIN.format(key)}\n{content}\n{END.format(key)}"
    pattern = re.escape(BEGIN.format(key)) + r".*?" + re.escape(END.format(key))
    if re.search(pattern, text, re.S):
        return re.sub(pattern, lambda _: block, text, count=1, flags=re.S)
    return f"{text.rstrip()}\n\n## {title}\n\n{block}\n"


def with_summary(text: str) -> str:
    """Rebuild the summary block from the bars of every section block in the file."""
    bars = [
        bar
        for key, content in blocks(text).items()
        if key not in ("machine", "summary")
        for line in content.splitlines()
        if line.startswith(DATA)
        for bar in bars_from_json(line[len(DATA) : -len(" -->")])
    ]
    met = sum(b.met for b in bars)
    content = f"{met} of {len(bars)} bars met.\n\n" + bars_table("Every bar", bars).markdown()
    return replace_block(text, "summary", content, "Summary of the bars")


def machine_block(argv: list[str]) -> str:
    info = Table("Machine", ["", ""], [[k, v] for k, v in machine_info().items()])
    command = " ".join(["python -m benchmarks", *argv])
    return f"{info.markdown()}\n\nLast run: `{command}`."


def write(out: Path, text: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="fast smoke version of every section")
    parser.add_argument("--out", default="BENCHMARKS.md", help="the Markdown file to update")
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        metavar="SECTION",
        help=f"run only this section (repeatable): {', '.join(SECTIONS)}",
    )
    parser.add_argument("--gpu", action="store_true", help="run only the GPU section (needs CUDA)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="with --gpu: every part at tiny sizes on the CPU, to test the path (no GPU numbers)",
    )
    args = parser.parse_args(argv)
    if args.dry_run and not args.gpu:
        parser.error("--dry-run goes with --gpu")
    if args.gpu and (args.only or args.quick):
        parser.error("--gpu runs the GPU section alone (--dry-run is its smoke version)")
    out = Path(args.out)
    text = out.read_text(encoding="utf-8") if out.exists() else "# BENCHMARKS\n"
    if args.gpu:
        return _main_gpu(out, text, args.dry_run)
    text = replace_block(text, "machine", machine_block(argv), "Machine")
    mode = "quick (smoke) mode" if args.quick else "full mode"
    with tempfile.TemporaryDirectory(prefix="qsweep-bench-") as workdir:
        for key in [k for k in SECTIONS if not args.only or k in args.only]:
            module = importlib.import_module(f"benchmarks.{key}")
            log(f"[benchmarks] {module.TITLE}")
            started = time.perf_counter()
            section = module.run(args.quick, Path(workdir) / key, log)
            section.seconds = time.perf_counter() - started
            text = with_summary(
                replace_block(text, key, section_block(section, mode), section.title)
            )
            write(out, text)  # after every section: a crash keeps what ran
            log(f"[benchmarks] {key} done in {section.seconds:.0f} s")
    log(f"[benchmarks] wrote {out}")
    return 0


def _main_gpu(out: Path, text: str, dry_run: bool) -> int:
    """The GPU section alone; exit 1 (one line) without CUDA unless ``dry_run``, or when a
    part crashed (after writing the file)."""
    import torch

    from benchmarks import gpu

    if not dry_run and not torch.cuda.is_available():
        print(gpu.NO_CUDA, file=sys.stderr)
        return 1
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qsweep-bench-gpu-") as workdir:
        section, crashed = gpu.run(Path(workdir), log, dry_run=dry_run)
    section.seconds = time.perf_counter() - started
    mode = "dry run on the CPU (tiny sizes, not GPU numbers)" if dry_run else "GPU run"
    write(
        out, with_summary(replace_block(text, gpu.KEY, section_block(section, mode), section.title))
    )
    log(f"[benchmarks] wrote {out}")
    if crashed:
        log(f"[benchmarks] gpu: part(s) crashed: {', '.join(crashed)} (see the section)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
