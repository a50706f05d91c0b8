"""``qsweep``: validate, run, submit, status, resume, compact and report sweeps.

Every user mistake (bad spec, missing results, unreachable cluster, a results location
that cannot be written) prints one line ``error: ...`` naming the operation and the path
or address, and exits 2. Anything unexpected prints one line too, naming the exception and
where its full traceback was written (``service.crashlog``), and exits 1.

``run`` and ``resume`` exit 0 only when every planned trial of the sweep (earlier drivers'
too, counted from trials.parquet) completed or was stopped early by the scheduler, and 1
when some trial failed or did not run — after writing the Parquet and the report, with one
line per failed trial and a summary line; ``--allow-failures`` exits 0 despite failed trials.
``submit --wait`` exits 1 when the job ends FAILED, which includes a sweep with failed trials.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer
from rich.console import Console
from rich.table import Table

from contract.storage import StorageError
from service import crashlog
from service.errors import SpecError, SweepError

if TYPE_CHECKING:
    from service.plan import SweepPlan

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Distributed sweeps of gradient estimators x bit-widths for quantized training.",
)
console = Console(width=None if sys.stdout.isatty() else 200)  # logs and pipes: no wrapping

ResultsOpt = Annotated[
    str | None, typer.Option("--results", help="override the spec's results location")
]
ScaleOpt = Annotated[
    str | None,
    typer.Option("--scale", help="a preset's scale (e.g. smoke, paper); default: its first"),
]
AddressOpt = Annotated[
    str | None, typer.Option("--address", help="join this Ray cluster (auto, HOST:PORT, ray://...)")
]
AllowFailuresOpt = Annotated[
    bool,
    typer.Option(
        "--allow-failures",
        help="exit 0 even when trials failed (their rows and reasons are still recorded)",
    ),
]
EXIT_CODES = (
    "Exit codes: 0 every planned trial completed (or was stopped early by the scheduler); "
    "1 some trial failed or did not run (after the Parquet and report are written; "
    "--allow-failures exits 0 for failed trials), or an internal crash (a crash-log line); "
    "2 bad input: spec errors, unreachable cluster, unwritable results."
)


def user_errors(fn):
    """User mistakes: one line on stderr, exit 2. Bugs: one line plus a traceback file, exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (SpecError, SweepError, StorageError, ConnectionError) as err:
            print(f"error: {err}", file=sys.stderr)
            raise typer.Exit(2) from None
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except (typer.Exit, typer.Abort):  # typer's own classes (not click's) since typer 0.2x
            raise
        except Exception as err:  # noqa: BLE001 - the last line of defence: never a bare errno
            print(crashlog.one_line(fn.__name__, err), file=sys.stderr)
            raise typer.Exit(1) from None

    return wrapper


def _is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def warn_if_dashboard_exposed(dashboard: bool, host: str, address: str | None) -> None:
    """The embedded dashboard can run jobs: say so when it would listen beyond loopback."""
    if not dashboard or address or os.environ.get("RAY_ADDRESS") or _is_loopback(host):
        return
    print(
        f"warning: --dashboard-host {host}: the Ray dashboard (and its job API, which runs code) "
        "will listen beyond this machine; keep the default 127.0.0.1 and reach it through an SSH "
        "tunnel (ssh -L 8265:127.0.0.1:8265 THIS_HOST)",
        file=sys.stderr,
    )


def _trial_table(plan: SweepPlan) -> Table:
    from service.protocol import role_of

    spec = plan.spec
    table = Table(
        title=f"{spec.name}: {len(plan.trials)} trials"
        + (
            f" (optuna samples {spec.search.num_samples} of these)"
            if spec.search.mode == "optuna"
            else ""
        )
    )
    for column in (
        "trial_id",
        "estimator",
        "quantizer",
        "bits",
        "model",
        "dataset",
        "seed",
        "role",
        "lr",
        "options",
    ):
        table.add_column(column)
    for trial in plan.trials:
        c = trial.config
        role = role_of(c)
        options = ", ".join(f"{k}={v}" for k, v in sorted(c["estimator_options"].items()))
        if c.get("optimizer") and role == "tuning":
            options = ", ".join(filter(None, [f"optimizer={c['optimizer']}", options]))
        table.add_row(
            trial.trial_id,
            c["estimator"],
            c["quantizer"],
            str(c["bits"]),
            c["model"],
            c["dataset"],
            str(c["seed"]),
            role,
            "its arm's best" if role == "tuned" else f"{c['lr']:.3g}" if "lr" in c else "default",
            "its arm's best" if role == "tuned" else options,
        )
    return table


def print_headline(sweep_dir: str) -> None:
    """Median [min–max] over seeds per regime x arm x bits; "within noise" where an arm's range
    overlaps the best arm's of its (regime, quantizer, bits) group (``analysis.summary``: the
    same rows as report.html's headline)."""
    from rich.markup import escape

    from analysis.summary import headline_rows
    from contract.storage import read_trials

    trials = read_trials(sweep_dir)
    if trials.num_rows == 0:
        console.print("no trials recorded yet")
        return
    frame = trials.to_pandas()
    title, rows = headline_rows(frame)
    table = Table(title=escape(title))  # [..] is not markup
    for column in rows.columns:
        table.add_column(column)
    for row in rows.itertuples(index=False):
        table.add_row(*(escape(str(cell)) for cell in row))
    console.print(table)
    failed = frame[frame["status"] == "failed"]
    for row in failed.itertuples():
        last_line = ((row.error or "").strip().splitlines() or [""])[-1]  # the exception's message
        console.print(
            f"failed: {row.trial_id}: {last_line}", markup=False, highlight=False, soft_wrap=True
        )


@app.command()
@user_errors
def validate(spec_file: Path, scale: ScaleOpt = None) -> None:
    """Parse and expand a sweep spec; print the trial table (exit 2 on errors)."""
    from service.plan import input_problems
    from service.spec_loading import load_spec

    plan = load_spec(spec_file, scale, check_files=False)
    console.print(_trial_table(plan))
    for problem in input_problems(plan):  # files may live only where the sweep will run
        console.print(f"warning: on this machine, {problem}", markup=False, soft_wrap=True)
    for note in plan.skipped:
        console.print(f"skipped: {note}")


def _spec_from(spec_file: Path | None, spec_env: str | None, scale: str | None) -> SweepPlan:
    """The spec from a file, or (a submitted job) from an environment variable."""
    from service.spec_loading import load_spec, load_spec_text

    if spec_env:
        text = os.environ.get(spec_env)
        if text is None:
            raise SpecError(f"--spec-from-env {spec_env}: no such environment variable")
        return load_spec_text(text, f"${spec_env}", scale)
    if spec_file is None:
        raise SpecError("give a sweep spec file: qsweep run SPEC.yaml")
    return load_spec(spec_file, scale)


@app.command(epilog=EXIT_CODES)
@user_errors
def run(
    spec_file: Annotated[Path | None, typer.Argument(help="the sweep spec (YAML)")] = None,
    results: ResultsOpt = None,
    address: AddressOpt = None,
    scale: ScaleOpt = None,
    overwrite: Annotated[
        bool, typer.Option(help="delete earlier results of this sweep first")
    ] = False,
    dashboard: Annotated[
        bool, typer.Option(help="start the Ray dashboard (local Ray only)")
    ] = True,
    dashboard_host: Annotated[str, typer.Option(help="dashboard bind address")] = "127.0.0.1",
    dashboard_port: int = 8265,
    num_cpus: Annotated[
        int | None, typer.Option(help="CPUs of the embedded Ray (default: all)")
    ] = None,
    spec_from_env: Annotated[
        str | None,
        typer.Option(
            hidden=True, help="read the spec from this environment variable (qsweep submit's jobs)"
        ),
    ] = None,
    allow_failures: AllowFailuresOpt = False,
) -> None:
    """Run a sweep: embedded local Ray by default, or --address to join a cluster.

    Exits 0 when every trial completed, 1 when some failed (0 with --allow-failures), 2 on
    bad input.
    """
    from service.runner import connect, prepare, run_sweep, stop_ray_meanwhile

    plan = _spec_from(spec_file, spec_from_env, scale)
    warn_if_dashboard_exposed(dashboard, dashboard_host, address)
    sweep = prepare(plan, results, overwrite)
    crashlog.remember_sweep_dir(sweep.sweep_dir)
    connect(address, dashboard, dashboard_host, dashboard_port, num_cpus)
    console.print(
        f"sweep {plan.name}: {len(plan.trials)} planned trials -> {sweep.sweep_dir}",
        markup=False,
        soft_wrap=True,
    )
    run_sweep(sweep)
    with stop_ray_meanwhile():
        _finish(sweep.sweep_dir)
        _exit_code(sweep.sweep_dir, allow_failures)


def _exit_code(sweep_dir: str, allow_failures: bool) -> None:
    """The summary line, and exit 1 unless every planned trial (earlier drivers' too: counted
    from trials.parquet) completed or was stopped early; failed ones are accepted with
    ``--allow-failures``, trials that never ran are not."""
    from service.status import sweep_outcome

    out = sweep_outcome(sweep_dir)
    total, failed, unfinished = out["total"], len(out["failed"]), out["unfinished"]
    parts = [f"{failed} of {total} trials failed"] if failed else []
    if unfinished:
        parts.append(f"{unfinished} of {total} trials did not run")
    if not parts:
        stopped = f" ({out['stopped']} stopped early)" if out["stopped"] else ""
        console.print(f"all {total} trials completed{stopped}; exit 0", markup=False)
        return
    if unfinished or not allow_failures:
        hint = "" if unfinished else " (--allow-failures exits 0)"
        console.print(f"{', '.join(parts)}; exit 1{hint}", markup=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"{', '.join(parts)}; exit 0 (--allow-failures)", markup=False)


def _compact_after_sweep(sweep_dir: str) -> None:
    """Fold the sweep's per-trial curve files into the compacted dataset (``qsweep compact``).
    A failure is one warning line: the flat files stay as they were, and readable."""
    from contract.curves import compact_curves
    from contract.storage import first_line

    try:
        result = compact_curves(sweep_dir)
    except Exception as err:  # noqa: BLE001 - the sweep's results are complete without it
        console.print(
            f"warning: curves not compacted ({type(err).__name__}: {first_line(err)}); they "
            f"stay readable as per-trial files, `qsweep compact {sweep_dir}` retries",
            markup=False,
            soft_wrap=True,
        )
        return
    if result.changed:
        console.print(f"curves:  {result.summary()}", markup=False, soft_wrap=True)


def _finish(sweep_dir: str) -> None:
    """After a sweep: its curves compacted, the small table, where the Parquet went, and the
    full report."""
    from analysis.load import ResultsError
    from analysis.report import report_command

    _compact_after_sweep(sweep_dir)
    print_headline(sweep_dir)
    console.print(
        f"Parquet: {sweep_dir}/trials.parquet and {sweep_dir}/curves/", markup=False, soft_wrap=True
    )
    try:
        html_path, _ = report_command([sweep_dir], None, "eval_loss", None, "nspsa", "fogzo")
        console.print(f"report:  {html_path}", markup=False, soft_wrap=True)
    except (ResultsError, OSError) as err:  # OSError: the results location is full or read-only
        console.print(f"report:  not written ({err})", markup=False, soft_wrap=True)


@app.command(epilog=EXIT_CODES)
@user_errors
def resume(
    sweep_dir: str,
    address: AddressOpt = None,
    retry_failed: Annotated[bool, typer.Option(help="also rerun trials that failed")] = False,
    dashboard: bool = True,
    dashboard_host: str = "127.0.0.1",
    dashboard_port: int = 8265,
    num_cpus: int | None = None,
    allow_failures: AllowFailuresOpt = False,
) -> None:
    """Continue an interrupted sweep: no lost and no duplicate rows.

    The exit code counts every trial of the sweep, earlier drivers' too: 1 when any failed
    (0 with --allow-failures), 2 on bad input.
    """
    from service.runner import connect, load_stored_plan, resume_sweep, stop_ray_meanwhile

    crashlog.remember_sweep_dir(sweep_dir)
    load_stored_plan(sweep_dir)  # fail before starting Ray
    warn_if_dashboard_exposed(dashboard, dashboard_host, address)
    resume_sweep(  # Ray starts only if a trial is left to run
        sweep_dir,
        retry_failed=retry_failed,
        start_ray=lambda: connect(address, dashboard, dashboard_host, dashboard_port, num_cpus),
    )
    with stop_ray_meanwhile():
        _finish(sweep_dir)
        _exit_code(sweep_dir, allow_failures)


@app.command()
@user_errors
def status(sweep_dir: str) -> None:
    """Trials done / running / failed / pending, from the Parquet."""
    from service.status import sweep_status

    crashlog.remember_sweep_dir(sweep_dir)
    info = sweep_status(sweep_dir)
    c = info["counts"]
    console.print(
        f"{info['name']}: {c['completed']} completed, {c['running']} running, "
        f"{c['failed']} failed, {c['pending']} pending of {info['total']}; "
        f"{info['curve_rows']} curve rows"
    )
    if info["trials"] is not None:
        print_headline(sweep_dir)


@app.command()
@user_errors
def compact(sweep_dir: str) -> None:
    """Fold a sweep's per-trial curve files into a few Parquet files, partitioned Hive-style
    by estimator and bits (curves/estimator=E/bits=B/). Safe to interrupt and to repeat;
    `qsweep run` and `resume` do it when their sweep ends. Run it while no driver writes
    the folder."""
    import pyarrow as pa

    from contract import journal, storage
    from contract.curves import compact_curves
    from contract.schema import CURVES_DIR, SPEC_FILE, TRIALS_FILE

    crashlog.remember_sweep_dir(sweep_dir)
    fs, root = storage.resolve(sweep_dir)
    with storage.naming("reading", sweep_dir):
        info = fs.get_file_info(root)
    if info.type == storage.pafs.FileType.NotFound:
        raise SweepError(f"{sweep_dir}: no such results folder")
    if info.type != storage.pafs.FileType.Directory:
        raise SweepError(f"{sweep_dir}: not a folder")
    if not any(
        storage.exists(fs, storage.join(root, name))
        for name in (TRIALS_FILE, SPEC_FILE, CURVES_DIR, journal.EVENTS_DIR)
    ):
        raise SweepError(
            f"{sweep_dir}: not a qsweep results folder (no {TRIALS_FILE}, {SPEC_FILE} or "
            f"{CURVES_DIR}/)"
        )
    try:
        result = compact_curves(sweep_dir)
    except (pa.ArrowException, ValueError) as err:  # a damaged or foreign file, wrong version
        raise SweepError(f"{sweep_dir}: curves not compacted: {storage.first_line(err)}") from None
    console.print(f"{sweep_dir}: {result.summary()}", markup=False, soft_wrap=True)


SUBMIT_EXIT_CODES = (
    "Exit codes: 0 submitted (with --wait: the job SUCCEEDED); 1 with --wait, the job ended "
    "FAILED or STOPPED — a sweep with failed trials exits 1, so its job is FAILED, unless "
    "--allow-failures is given — or an internal crash; 2 bad input (spec errors, a relative "
    "--results, an unreachable job server)."
)


@app.command(epilog=SUBMIT_EXIT_CODES)
@user_errors
def submit(
    spec_file: Path,
    address: Annotated[str, typer.Option(help="Ray job server, http://HEAD:8265")],
    results: ResultsOpt = None,
    scale: ScaleOpt = None,
    wait: Annotated[bool, typer.Option(help="follow the job's logs until it ends")] = False,
    allow_failures: Annotated[
        bool,
        typer.Option(
            "--allow-failures",
            help="the job succeeds even when trials failed (qsweep run --allow-failures)",
        ),
    ] = False,
) -> None:
    """Send the sweep to a running cluster as a Ray Job; print the job id and how to follow it.

    The job is `qsweep run`: it ends FAILED when trials failed (unless --allow-failures), and
    --wait then exits 1.
    """
    from service.jobs import submit_sweep
    from service.spec_loading import load_spec

    plan = load_spec(spec_file, scale, check_files=False)  # the job checks them on the cluster
    job_id, status_text, note = submit_sweep(
        plan.spec,
        address,
        results,
        wait,
        echo=lambda text: console.print(text, markup=False, highlight=False),
        allow_failures=allow_failures,
    )
    console.print(f"job {job_id} submitted to {address}", markup=False)
    console.print(f"follow: ray job logs --follow {job_id} --address {address}", markup=False)
    console.print(f"dashboard: {address} (Jobs tab)", markup=False)
    if wait:  # a FAILED job's note: qsweep could not start, or the sweep's log above says why
        console.print(f"job {job_id} ended: {status_text}{note}", markup=False, soft_wrap=True)
        if status_text != "SUCCEEDED":
            raise typer.Exit(1)


@app.command()
@user_errors
def report(
    results: Annotated[
        list[str], typer.Argument(help="one or more sweep results folders to compare")
    ],
    out: Annotated[
        str | None,
        typer.Option(help="folder for report.html and plots/ (default: the first results folder)"),
    ] = None,
    metric: Annotated[str, typer.Option(help="eval_loss, eval_metric or train_loss")] = "eval_loss",
    target: Annotated[
        float | None,
        typer.Option(
            help="compute-to-target threshold (default: the reference's worst-seed final value)"
        ),
    ] = None,
    reference: Annotated[str, typer.Option(help="arm whose final value sets the target")] = "nspsa",
    focus: Annotated[str, typer.Option(help="arm whose compute ratios are headlined")] = "fogzo",
    claims: Annotated[
        bool,
        typer.Option(
            "--claims",
            help="also print the FOGZO / QuZO paper claims "
            "found in the results, each with its verdict",
        ),
    ] = False,
    png: Annotated[
        bool,
        typer.Option(
            "--png",
            help="also write plots/*.png and report-static.html (PNGs embedded; needs matplotlib)",
        ),
    ] = False,
    markdown: Annotated[
        bool,
        typer.Option(
            "--markdown",
            help="with --claims: print the claims as Markdown and write them to claims.md "
            "beside report.html",
        ),
    ] = False,
) -> None:
    """
    Write report.html (tables, interactive plots, spec, versions, paper claims) and print the
    headline table.
    """
    from analysis.load import ResultsError
    from analysis.report import report_command

    crashlog.remember_sweep_dir(results[0])
    try:
        html_path, text = report_command(
            results, out, metric, target, reference, focus, claims and not markdown, png=png
        )
        if markdown:
            from analysis import claims as paper_claims
            from analysis.report import build_report, load_sweeps
            from contract import storage

            found = build_report(load_sweeps(results), metric, target, reference, focus).claims
            document = paper_claims.markdown(found)
            fs, md_path = storage.resolve(str(html_path.parent / "claims.md"))
            storage.write_text_atomic(fs, md_path, document)
            text += f"\n\n{document}claims: {html_path.parent / 'claims.md'}"
    except ResultsError as err:
        raise SweepError(str(err)) from None
    console.print(text, markup=False, highlight=False)
    console.print(f"report: {html_path}", markup=False)


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
