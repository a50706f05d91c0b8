"""Bad input: whatever a spec file holds, loading it ends in a ``SweepSpec`` or one-line
``SpecError`` (``qsweep validate``/``run``: exit 2, one line), never another exception and
nothing written; a sweep name can never leave the results folder. Corrupt, truncated or
foreign Parquet is one clear ``ResultsError`` in analysis and one line, exit 2, from
``qsweep status``/``report``. And no code path unpickles a user-supplied file.

The fuzzing runs in-process on ``service.spec_loading.parse_spec`` / ``load_spec`` (what ``qsweep
validate`` calls); a handful of cases go through the CLI too. Hypothesis runs derandomized
and without its example database, so CI sees the same cases every time and writes nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.load import ResultsError, load_results
from service.errors import SpecError, SweepError
from service.rows import trials_schema
from service.runner import SweepRun, _callbacks, sweep_location
from service.sink import config_columns
from service.spec import SweepSpec
from service.spec_loading import load_spec, parse_spec
from service.status import sweep_status
from tests.service.harness import user_error, write_spec

TRIALS_SCHEMA = trials_schema()  # the trials table as the ledger writes it

ROOT = Path(__file__).resolve().parents[2]
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

BASE = {
    "name": "fuzz",
    "grid": {"estimators": ["ste", "fogzo"], "bits": [2, 4]},
    "trial": {"num_evals": 2},
    "budget": {"steps": 10},
    "resources": {"cpus": 1},
    "retries": 1,
    "checkpoint_every": 1,
    "checkpoint_min_s": 0,
}


def _parses_or_spec_error(data) -> SweepSpec | None:
    """The contract: a SweepSpec, or SpecError with one line; any other exception fails the test."""
    try:
        return parse_spec(data)
    except SpecError as err:
        message = str(err)
        assert message and "\n" not in message and "Traceback" not in message, repr(message)
        return None


# --- strategies ----------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.sampled_from([0, -1, 2**63, -(2**63), 10**400, 1e308, -1e-308])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(
        ["../x", "a/b", "nope", "ste", "", "\u00e9\u00df\u2603", "1e3", "NaN", "-inf"]
    )
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=8) | st.sampled_from(["lr", "n", "eps", "steps"]), children, max_size=4
        )
    ),
    max_leaves=12,
)
# Every place a spec has a value, known keys and some unknown ones.
PATHS = [
    ("name",),
    ("results",),
    ("grid",),
    ("grid", "estimators"),
    ("grid", "bits"),
    ("grid", "quantizers"),
    ("grid", "models"),
    ("grid", "datasets"),
    ("grid", "seeds"),
    ("grid", "extra"),
    ("trial",),
    ("trial", "lr"),
    ("trial", "num_evals"),
    ("trial", "batch_size"),
    ("trial", "optimizer"),
    ("trial", "momentum"),
    ("trial", "quant_options"),
    ("trial", "model_options"),
    ("trial", "device"),
    ("trial", "threads"),
    ("trial", "steps"),
    ("trial", "eval_batch_size"),
    ("estimators",),
    ("estimators", "ste"),
    ("estimators", "fogzo"),
    ("estimators", "fogzo", "n"),
    ("estimators", "fogzo", "eps"),
    ("estimators", "fogzo", "lr"),
    ("estimators", "fogzo", "steps"),
    ("estimators", "quzo"),
    ("estimators", "bogus"),
    ("budget",),
    ("budget", "steps"),
    ("budget", "flops"),
    ("search",),
    ("search", "mode"),
    ("search", "num_samples"),
    ("search", "metric"),
    ("search", "space"),
    ("search", "space", "lr"),
    ("early_stopping",),
    ("early_stopping", "grace_period"),
    ("early_stopping", "reduction_factor"),
    ("resources",),
    ("resources", "cpus"),
    ("resources", "gpus"),
    ("max_concurrent",),
    ("retries",),
    ("checkpoint_every",),
    ("checkpoint_min_s",),
    ("time_limit_s",),
    ("memory_limit_mb",),
    ("pretrain",),
    ("pretrain", "steps"),
    ("scales",),
    ("unknown_top_level",),
]


def _set(data: dict, path: tuple[str, ...], value) -> dict:
    data = yaml.safe_load(yaml.safe_dump(data))  # a deep copy
    node = data
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return data


@st.composite
def mutated_specs(draw) -> dict:
    """A valid spec with one to three fields replaced by anything at all."""
    data = BASE
    for _ in range(draw(st.integers(1, 3))):
        data = _set(data, draw(st.sampled_from(PATHS)), draw(values))
    return data


# --- the spec loader -----------------------------------------------------------------------


def test_the_base_spec_is_valid():
    assert len(parse_spec(BASE).trials) == 4


@FUZZ
@given(mutated_specs())
def test_any_field_value_parses_or_is_one_spec_error(data):
    _parses_or_spec_error(data)


@FUZZ
@given(mutated_specs())
def test_every_trial_of_a_valid_spec_can_be_recorded(data):
    """What validates must also fit the typed Parquet columns: the sink writes each trial's
    row inside Ray Tune, where a value it cannot convert would break the sweep, not a trial."""
    spec = _parses_or_spec_error(data)
    if spec is None:
        return
    for trial in spec.trials:
        row = dict.fromkeys(TRIALS_SCHEMA.names)
        row.update(
            config_columns(trial.config),
            schema_version=1,
            sweep=spec.name,
            trial_id=trial.trial_id,
            status="pending",
            config="{}",
        )
        pa.Table.from_pylist([row], schema=TRIALS_SCHEMA)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"trial": {"momentum": "high"}},
            "estimators.ste: momentum: Input should be a valid number",
        ),
        (
            {"estimators": {"fogzo": {"steps": 1.5e9}}},
            "estimators.fogzo: steps: Input should be a valid integer",
        ),
        (
            {"estimators": {"fogzo": {"n": True}}},
            "estimators.fogzo: estimator_options.n: Input should be a valid integer",
        ),
        (
            {"grid": {"estimators": ["ste"], "seeds": [2**63]}},
            "grid.seeds.0: 9223372036854775808 is out of range",
        ),
        ({"trial": {"lr": 10**400}}, "trial.lr: 1000"),
        ({"estimators": {"ste": {"lr\n": 1}}}, "estimators.ste: ste: unknown option(s) lr\\n"),
    ],
)
def test_values_the_parquet_cannot_hold_are_spec_errors(section, message):
    with pytest.raises(SpecError) as info:
        parse_spec({**BASE, **section})
    assert str(info.value).startswith(message.split(" is out")[0]) and "\n" not in str(
        info.value
    ), str(info.value)


@FUZZ
@given(values)
def test_any_document_at_all_parses_or_is_one_spec_error(data):
    assert _parses_or_spec_error(data) is None  # not even a mapping with name, grid and budget


_names = st.text(min_size=0, max_size=30) | st.sampled_from(
    [
        "../x",
        "a/b",
        "..",
        ".",
        "/abs",
        "x/../y",
        "a\\b",
        "..\\x",
        "~",
        "~root",
        "a\x00b",
        "a\nb",
        " x",
        "x ",
        "-x",
        ".hidden",
        "\u2024\u2024/x",
        "\uff0e\uff0e",
        "con",
        "x" * 101,
    ]
)


@FUZZ
@given(_names)
def test_a_name_never_leads_out_of_the_results_folder(name):
    spec = _parses_or_spec_error({**BASE, "name": name})
    if spec is None:
        return
    root = "/srv/results"
    location = sweep_location(root, spec.name)
    assert os.path.dirname(location) == root and os.path.normpath(location) == location, (
        name,
        location,
    )
    assert not spec.name.startswith(".") and "/" not in spec.name and "\\" not in spec.name


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "/etc", "x/../../y", "a\\b", ""])
def test_path_like_names_are_rejected_naming_the_field(name):
    with pytest.raises(SpecError, match=r"^name: use letters, digits"):
        parse_spec({**BASE, "name": name})


@pytest.mark.parametrize("scale", ["../x", "a/b", "x/../../y", "a\\b", "/"])
def test_a_scale_cannot_smuggle_a_path_into_the_name(scale):
    """A scale's name becomes a suffix of the sweep name ("ok-<scale>")."""
    with pytest.raises(SpecError, match=r"^name: use letters, digits"):
        parse_spec({**BASE, "name": "ok", "scales": {scale: {}}}, scale)


@pytest.mark.parametrize("estimator", ["sgd", "STE", "fogzo ", "", "../ste"])
def test_unknown_estimators_are_one_spec_error_listing_the_valid_ones(estimator):
    with pytest.raises(
        SpecError, match=r"^grid\.estimators(\.0)?: unknown estimator .*; valid: ste, "
    ):
        parse_spec({**BASE, "grid": {"estimators": [estimator]}})


@FUZZ
@given(
    st.one_of(
        st.builds(lambda d: yaml.safe_dump(d, allow_unicode=True), mutated_specs()),
        st.text(max_size=200),
        st.builds(lambda d, cut: yaml.safe_dump(d)[:cut], mutated_specs(), st.integers(0, 400)),
    ),
    st.booleans(),
)
def test_any_yaml_text_loads_or_is_one_spec_error(tmp_path_factory, text, as_latin1):
    """YAML documents, arbitrary text, and documents cut anywhere; written as UTF-8 or as
    Latin-1 (then not always valid UTF-8) into a folder that must stay as it was."""
    folder = tmp_path_factory.mktemp("yaml")
    path = folder / "spec.yaml"
    path.write_bytes(text.encode("latin-1", errors="replace") if as_latin1 else text.encode())
    try:
        load_spec(path)
    except SpecError as err:
        assert "\n" not in str(err)
    assert os.listdir(folder) == ["spec.yaml"]


VALID_HEAD = "name: x\ngrid: {estimators: [ste]}\nbudget: {steps: 1}\n"
ALIAS_BOMB = (
    VALID_HEAD
    + "trial:\n  model_options:\n    a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
    + "".join(f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10))
)
# name -> (document, the start of its error after "<path>: " where the loader names the file)
HOSTILE = {
    "deep brackets": ("[" * 5000, "not valid YAML"),
    "deep mappings": ("a: " + "{b: " * 3000, "not valid YAML"),
    "not utf-8": ("\xff\xfe\x00name: x", "not UTF-8 text"),
    "python object": (
        "!!python/object/apply:os.system ['touch /tmp/qsweep-pwned']",
        "not valid YAML",
    ),
    "python name": ("name: !!python/name:os.system x", "not valid YAML"),
    "alias cycle": ("a: &a [*a]", "a.0: a YAML alias that contains itself"),
    "alias cycle in a free-form setting": (
        VALID_HEAD + "trial: {model_options: &m {x: *m}}\n",
        "trial.model_options.x: a YAML alias that contains itself",
    ),
    "alias bomb (9**10 values)": (
        ALIAS_BOMB,
        "spec: more than 100000 values once YAML aliases are expanded",
    ),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_yaml_is_one_spec_error_quickly_and_runs_nothing(tmp_path, case):
    text, expected = HOSTILE[case]
    path = tmp_path / "spec.yaml"
    path.write_bytes(text.encode("latin-1"))
    started = time.thread_time()  # CPU seconds of this thread: a busy machine's load is not
    with pytest.raises(SpecError) as info:  # counted (the worst case here takes ~1 s of CPU)
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message and (
        message.startswith(f"{path}: {expected}") or message.startswith(expected)
    ), message
    assert time.thread_time() - started < 10
    assert not Path("/tmp/qsweep-pwned").exists()


CLI_CASES = {  # spec file contents -> the start of the error line
    "traversal": (
        "name: ../../escape\ngrid: {estimators: [ste]}\nbudget: {steps: 1}\n",
        "name: use letters",
    ),
    "estimator": (
        "name: x\ngrid: {estimators: [adamw]}\nbudget: {steps: 1}\n",
        "grid.estimators: unknown estimator",
    ),
    "budget": (
        "name: x\ngrid: {estimators: [ste]}\nbudget: {steps: -5}\n",
        "budget.steps: Input should be greater",
    ),
    "binary": (b"\x89PNG\r\n\x1a\n\xff\xfe".decode("latin-1"), "not UTF-8 text"),
}


def test_bad_specs_through_the_cli_exit_2_with_one_line_and_write_nothing(qsweep, tmp_path):
    for case, (text, expected) in CLI_CASES.items():
        path = tmp_path / f"{case}.yaml"
        path.write_bytes(text.encode("latin-1"))
        error = user_error(qsweep("validate", path, timeout=120))
        assert expected in error, (case, error)
    before = sorted(p.name for p in tmp_path.iterdir())
    run = qsweep(
        "run",
        tmp_path / "traversal.yaml",
        "--results",
        tmp_path / "results",
        "--no-dashboard",
        timeout=120,
    )
    assert "name: use letters" in user_error(run)
    assert (
        sorted(p.name for p in tmp_path.iterdir()) == before
    )  # no results folder, nothing escaped
    assert not (tmp_path.parent / "escape").exists()


# --- corrupt Parquet -----------------------------------------------------------------------


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _foreign_table(path: Path) -> None:
    pq.write_table(pa.table({"trial_id": ["x"], "loss": [0.5]}), path)


def _other_version(path: Path) -> None:
    table = pq.read_table(path)
    pq.write_table(
        table.replace_schema_metadata({**table.schema.metadata, b"qsweep_schema_version": b"999"}),
        path,
    )


def _missing_columns(path: Path) -> None:
    table = pq.read_table(path)
    pq.write_table(
        table.drop_columns(["status", "error"]).replace_schema_metadata(table.schema.metadata), path
    )


CORRUPTIONS = {  # name -> (which file, how), and a phrase of the one-line error
    "truncated trials": ("trials", _cut_in_half, "unreadable Parquet"),
    "truncated curve": ("curve", _cut_in_half, "unreadable Parquet"),
    "empty trials": ("trials", lambda p: p.write_bytes(b""), "unreadable Parquet"),
    "garbage curve": ("curve", lambda p: p.write_bytes(os.urandom(3000)), "unreadable Parquet"),
    "foreign trials": ("trials", _foreign_table, "written with qsweep schema version ?"),
    "foreign curve": ("curve", _foreign_table, "written with qsweep schema version ?"),
    "other version": ("trials", _other_version, "written with qsweep schema version 999"),
    "missing columns": ("trials", _missing_columns, ""),
}


def _corrupt_copy(finished_sweep, tmp_path: Path, case: str) -> Path:
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(
        finished_sweep.sweep_dir,
        sweep_dir,
        ignore=shutil.ignore_patterns("tune", "plots", "*.html"),
    )
    which, corrupt, _ = CORRUPTIONS[case]
    corrupt(
        sweep_dir / "trials.parquet"
        if which == "trials"
        else sorted((sweep_dir / "curves").rglob("*.parquet"))[0]  # a compacted part file
    )
    return sweep_dir


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_corrupt_parquet_is_one_results_error_and_one_sweep_error(finished_sweep, tmp_path, case):
    sweep_dir = _corrupt_copy(finished_sweep, tmp_path, case)
    phrase = CORRUPTIONS[case][2]
    with pytest.raises(ResultsError) as info:
        load_results(str(sweep_dir))
    message = str(info.value)
    assert message.startswith(str(sweep_dir)) and "\n" not in message and phrase in message, message
    with pytest.raises(SweepError) as info:  # qsweep status
        sweep_status(str(sweep_dir))
    assert str(info.value).startswith(f"{sweep_dir}: unreadable results (") and "\n" not in str(
        info.value
    )
    with pytest.raises(
        SweepError, match="cannot continue from unreadable results"
    ):  # qsweep resume, before Ray
        _callbacks(SweepRun(load_spec(finished_sweep.spec_file), str(sweep_dir)), live=False)


def test_status_and_report_of_corrupt_parquet_exit_2_with_one_line(finished_sweep, tmp_path):
    cli = finished_sweep.qsweep
    for case in ("truncated trials", "foreign curve"):
        sweep_dir = _corrupt_copy(finished_sweep, tmp_path / case.replace(" ", "-"), case)
        for command in ("status", "report"):
            error = user_error(cli(command, sweep_dir, timeout=120))
            assert error.startswith(f"error: {sweep_dir}"), (
                case,
                command,
                error,
            )  # names the folder or file
            assert "unreadable" in error or "schema version ?" in error, (case, command, error)
        assert not (sweep_dir / "report.html").exists()


def test_a_spec_that_is_not_utf8_or_not_yaml_fails_to_write_as_well(tmp_path):
    """write_spec is the tests' own helper: make sure the CLI cases above are what they claim."""
    spec = load_spec(write_spec(tmp_path, "ok"))
    assert spec.name == "ok"


# --- no unpickling of user-supplied files ---------------------------------------------------

UNSAFE = {
    r"\byaml\.(load|load_all|unsafe_load|full_load)\s*\(": "YAML must be read with yaml.safe_load",
    r"Loader\s*=\s*yaml\.(Loader|UnsafeLoader|FullLoader)": "YAML must be read with yaml.safe_load",
    r"\b(c?[Pp]ickle|dill|cloudpickle)\.loads?\s*\(": "pickle runs code named by the file",
    r"\bjoblib\.load\s*\(|\bread_pickle\s*\(": "pickle runs code named by the file",
    r"\bpickle\.Unpickler\b": "pickle runs code named by the file",
}
# The only exceptions, each with its reason.
ALLOWED = {
    (
        "service/tuner.py",
        "torch.load",
    ): "the trainable reloads the state.pt it saved itself into Tune's checkpoint "
    "(optimizer and RNG state need full unpickling); no user file",
    (
        "trainers/data/safe_pickle.py",
        r"\bpickle\.Unpickler\b",
    ): "RestrictedUnpickler: find_class answers only an allow-list of numpy globals",
}


def _calls(source: str, name: str) -> list[str]:
    """The text of every call ``name(...)`` in ``source`` (balanced parentheses)."""
    found = []
    for match in re.finditer(re.escape(name) + r"\s*\(", source):
        depth, end = 0, match.end() - 1
        for end in range(match.end() - 1, len(source)):
            depth += {"(": 1, ")": -1}.get(source[end], 0)
            if depth == 0:
                break
        found.append(source[match.start() : end + 1])
    return found


def test_no_user_supplied_file_is_unpickled_and_yaml_is_safe_loaded_only():
    problems, safe_yaml = [], 0
    for package in ("service", "analysis", "trainers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            source = path.read_text()
            safe_yaml += source.count("yaml.safe_load(")
            for pattern, why in UNSAFE.items():
                if re.search(pattern, source) and (rel, pattern) not in ALLOWED:
                    problems.append(f"{rel}: {pattern}: {why}")
            for call in _calls(source, "torch.load"):
                if "weights_only=True" not in call and (rel, "torch.load") not in ALLOWED:
                    problems.append(f"{rel}: {call}: torch.load needs weights_only=True")
            for call in _calls(source, "np.load"):
                if "allow_pickle=False" not in call:
                    problems.append(f"{rel}: {call}: np.load needs allow_pickle=False")
    assert problems == []
    assert safe_yaml >= 3  # the spec, the stored spec, analysis: the scan did see them
    tuner = (ROOT / "service/tuner.py").read_text()
    assert len(_calls(tuner, "torch.load")) == 1 and "STATE_FILE" in _calls(tuner, "torch.load")[0]
