"""The deployment files under cluster/ and the README's cluster walkthrough parse and agree with the code.

Fast: nothing starts Ray or Spark. YAML goes through yaml.safe_load (and Ray's own cluster-config
schema), TOML through tomllib and our settings loader, shell scripts through `bash -n` (and
cluster/ray-node.sh through its argument handling, with a stand-in `ray`), every CLI command in
these files through the real `ray-backfill` parser.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from jobs.errors import ConfigError
from ray_backfill.cli import _parser
from ray_backfill.options import add_options, resolve
from ray_backfill.sessions import check_writers

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
RAY_VERSION = next(
    m.group(1) for dep in PYPROJECT["project"]["dependencies"] if (m := re.match(r"ray\[default\]==(\S+)$", dep))
)
PY_TAG = "py" + re.search(r">=3\.(\d+)", PYPROJECT["project"]["requires-python"]).expand(r"3\1")


def _text(name: str) -> str:
    return (CLUSTER / name).read_text()


def _yaml(name: str) -> dict:
    return yaml.safe_load(_text(name))


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of cluster/Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", _text("Dockerfile"))
    steps = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            steps.append((instruction.upper(), rest.strip()))
    return steps


def _image_workdir() -> str:
    return [rest for instruction, rest in _dockerfile() if instruction == "WORKDIR"][-1]


def _readme_cluster_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## On a Ray cluster\n")
    return readme[start:readme.index("\n## ", start + 1)]


# --- every file under cluster/ is parsed ------------------------------------------------------------

def _kind(name: str) -> str | None:
    if name.endswith((".yaml", ".yml")):
        return "yaml"
    if name.endswith(".toml"):
        return "toml"
    if name.endswith(".sh"):
        return "shell"
    if name.startswith("Dockerfile"):
        return "docker"
    if re.fullmatch(r"jvm-deps(-[\w-]+)?\.txt", name):
        return "manifest"
    return None


CLUSTER_FILES = sorted(p.name for p in CLUSTER.iterdir() if p.is_file())


def _of_kind(kind: str) -> list[str]:
    return [name for name in CLUSTER_FILES if _kind(name) == kind]


def test_every_cluster_file_is_of_a_kind_these_tests_parse():
    assert {"aws-cluster.yaml", "kuberay-rayjob.yaml", "warehouse-s3.toml", "warehouse-hdfs.toml", "ray-node.sh",
            "Dockerfile", "jvm-deps-s3.txt"} <= set(CLUSTER_FILES)
    unknown = [name for name in CLUSTER_FILES if _kind(name) is None]
    assert unknown == [], "give these files under cluster/ a check here"


@pytest.mark.parametrize("name", _of_kind("yaml"))
def test_yaml_files_parse(name):
    assert isinstance(_yaml(name), dict)


@pytest.mark.parametrize("name", _of_kind("toml"))
def test_toml_files_load_through_our_settings_loader(name):
    assert tomllib.loads(_text(name))
    # A bad key or value fails here; the env gives postgres files without a uri one.
    _settings(CLUSTER / name, {"RAY_BACKFILL_CATALOG_URI": "jdbc:postgresql://db:5432/lakehouse"})


@pytest.mark.parametrize("name", _of_kind("manifest"))
def test_jvm_manifests_are_maven_coordinates(name):
    assert _manifest(name)


@pytest.mark.process
@pytest.mark.parametrize("name", _of_kind("shell"))
def test_shell_scripts_parse_and_are_executable(name):
    script = CLUSTER / name
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert os.access(script, os.X_OK), f"{name} is not executable"
    assert "set -euo pipefail" in script.read_text()


# --- cluster/ray-node.sh: argument handling, with a stand-in `ray` that only records its calls ----

@pytest.fixture
def node_script(tmp_path):
    """A copy of ray-node.sh with no .venv beside it, a recording `ray` on PATH and an empty HOME."""
    (tmp_path / "cluster").mkdir()
    script = tmp_path / "cluster" / "ray-node.sh"
    script.write_text(_text("ray-node.sh"))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "ray"
    fake.write_text('#!/usr/bin/env bash\necho "RAY_AUTH_MODE=${RAY_AUTH_MODE:-} ray $*" >> "$RAY_CALLS"\n')
    fake.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    calls = tmp_path / "calls.log"

    def run(*args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
        base = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(home), "RAY_CALLS": str(calls)}
        result = subprocess.run(["bash", str(script), *args], env={**base, **env},
                                capture_output=True, text=True, timeout=30)
        return result, calls.read_text().splitlines() if calls.exists() else []

    run.home = home
    return run


@pytest.mark.process
@pytest.mark.parametrize("args, env", [
    ((), {}),
    (("launch",), {}),
    (("head", "--port"), {}),
    (("head", "--port", "abc"), {}),
    (("head", "--dashboard-port", "70000"), {}),
    (("head", "--verbose"), {}),
    (("worker",), {}),
    (("worker", "headhost"), {}),
    (("worker", "headhost:6379", "extra"), {}),
    (("stop", "now"), {}),
    (("head",), {"NUM_CPUS": "two"}),
    (("head",), {"MEMORY": "lots"}),
])
def test_ray_node_rejects_bad_arguments_with_usage_and_starts_nothing(node_script, args, env):
    result, calls = node_script(*args, **env)
    assert result.returncode != 0
    assert "usage: cluster/ray-node.sh" in result.stderr
    assert result.stderr.startswith("error: ")
    assert calls == []


@pytest.mark.process
def test_ray_node_head_starts_with_token_auth_and_prints_next_steps(node_script):
    result, calls = node_script("head", "--port", "6380", "--dashboard-port", "8266",
                                NUM_CPUS="2", MEMORY="8g", NODE_IP="10.1.2.3")
    assert result.returncode == 0, result.stderr
    assert calls[0] == "RAY_AUTH_MODE=token ray get-auth-token --generate"
    start = calls[1]
    assert start.startswith("RAY_AUTH_MODE=token ray start --head --port 6380 ")
    for flag in ("--dashboard-port 8266", "--num-cpus 2", f"--memory {8 * 2**30}", "--node-ip-address 10.1.2.3"):
        assert flag in start
    # the head keeps bounded state, the same bounds as a local cluster a run starts
    from ray_backfill.ray_bounds import DAEMON_ENV, SYSTEM_CONFIG

    assert json.loads(start.split("--system-config ", 1)[1].split(" --", 1)[0]) == SYSTEM_CONFIG
    text = _text("ray-node.sh")
    assert all(f"{key}=${{{key}:-{value}}}" in text for key, value in DAEMON_ENV.items())
    assert "Dashboard: http://127.0.0.1:8266" in result.stdout
    assert "cluster/ray-node.sh worker 10.1.2.3:6380" in result.stdout
    assert "auth_token" in result.stdout
    assert "export RAY_AUTH_MODE=token" in result.stdout
    assert "ray job submit --address http://127.0.0.1:8266 --working-dir . --" in result.stdout


@pytest.mark.process
def test_ray_node_worker_needs_the_head_token(node_script):
    result, calls = node_script("worker", "10.1.2.3:6380")
    assert result.returncode == 1
    assert "copy ~/.ray/auth_token from the head" in result.stderr
    assert calls == []
    (node_script.home / ".ray").mkdir()
    (node_script.home / ".ray" / "auth_token").write_text("t" * 32)
    result, calls = node_script("worker", "10.1.2.3:6380")
    assert result.returncode == 0, result.stderr
    assert calls == ["RAY_AUTH_MODE=token ray start --address 10.1.2.3:6380 --disable-usage-stats"]


# --- JVM manifests and cluster/fetch_jars.sh -------------------------------------------------------

def _manifest(name: str) -> list[tuple[str, str, str]]:
    coords = []
    for line in _text(name).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            parts = line.split(":")
            assert len(parts) == 3 and all(parts), f"{name}: {line!r} is not group:artifact:version"
            coords.append(tuple(parts))
    return coords


def test_s3_manifest_is_separate_and_matches_the_iceberg_version():
    default, s3 = _manifest("jvm-deps.txt"), _manifest("jvm-deps-s3.txt")
    iceberg = {v for g, a, v in default if a.startswith("iceberg-spark-runtime-")}
    assert len(iceberg) == 1
    assert ("org.apache.iceberg", "iceberg-aws-bundle", iceberg.pop()) in s3
    assert not {a for _, a, _ in s3} & {a for _, a, _ in default}, "S3 jars belong in the optional manifest only"


@pytest.mark.process
def test_fetch_jars_resolves_the_manifest_it_is_given(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "mvn"  # records the coordinate and "downloads" an empty-but-present jar
    fake.write_text('#!/usr/bin/env bash\nfor a; do case $a in -Dartifact=*) c=${a#-Dartifact=};; '
                    '-DoutputDirectory=*) d=${a#-DoutputDirectory=};; esac; done\n'
                    'IFS=: read -r g n v <<<"$c"; echo x > "$d/$n-$v.jar"; echo "$c" >> "$MVN_CALLS"\n')
    fake.chmod(0o755)
    calls = tmp_path / "mvn.log"
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path), "MVN_CALLS": str(calls)}
    dest = tmp_path / "jars"
    subprocess.run([str(CLUSTER / "fetch_jars.sh"), str(dest), str(CLUSTER / "jvm-deps-s3.txt")],
                   env=env, check=True, capture_output=True, timeout=30)
    expected = [":".join(c) for c in _manifest("jvm-deps-s3.txt")]
    assert calls.read_text().split() == expected
    subprocess.run([str(CLUSTER / "fetch_jars.sh"), str(dest)], env=env, check=True, capture_output=True, timeout=30)
    assert calls.read_text().split() == expected + [":".join(c) for c in _manifest("jvm-deps.txt")]


# --- the AWS cluster launcher config ---------------------------------------------------------------

def test_aws_cluster_config_passes_rays_own_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _yaml("aws-cluster.yaml")
    validate_config(prepare_config(copy.deepcopy(config)))
    assert config["cluster_name"]
    assert config["provider"]["type"] == "aws" and config["provider"]["region"]
    assert config["auth"]["ssh_user"]
    assert config["head_node_type"] in config["available_node_types"]
    for name, node_type in config["available_node_types"].items():
        assert {"InstanceType", "ImageId"} <= set(node_type["node_config"]), name
        assert "resources" in node_type, name


def test_aws_cluster_sets_up_every_node_and_starts_ray_with_token_auth():
    config = _yaml("aws-cluster.yaml")
    # setup_commands run on every node, head and workers alike.
    setup = "\n".join(config["setup_commands"])
    for needed in ("openjdk-17", "maven", "pip install", "-e ."):
        assert needed in setup, needed
    fetches = [c for c in config["setup_commands"] if "cluster/fetch_jars.sh" in c]
    assert any("jvm-deps-s3.txt" not in c for c in fetches), "the default manifest is fetched on every node"
    assert any("cluster/jvm-deps-s3.txt" in c for c in fetches), "the S3 manifest is fetched on every node"
    project = [remote for remote, local in config["file_mounts"].items() if local == "."]
    assert project, "file_mounts must copy the project (the folder `ray up` runs in)"
    assert f"cd {project[0].replace('/home/' + config['auth']['ssh_user'], '~')}" in setup
    assert any(remote.endswith("/.ray/auth_token") for remote in config["file_mounts"])
    assert ".venv" in config["rsync_exclude"]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), key
    assert "--head" in " ".join(config["head_start_ray_commands"])


def test_aws_cluster_documents_the_multi_host_catalog_and_warehouse():
    comments = "\n".join(line for line in _text("aws-cluster.yaml").splitlines() if line.lstrip().startswith("#"))
    for needed in ("PostgreSQL", "JDBC", "REST", "s3a://", "hdfs://", "never the sqlite"):
        assert needed in comments, needed


# --- the Docker image and the KubeRay RayJob -------------------------------------------------------

def test_dockerfile_builds_on_the_pinned_ray_and_installs_java_jars_and_project():
    steps = _dockerfile()
    assert steps[0] == ("FROM", f"rayproject/ray:{RAY_VERSION}-{PY_TAG}")
    runs = "\n".join(rest for instruction, rest in steps if instruction == "RUN")
    for needed in ("openjdk-17-jre-headless", "maven", "pip install", "-e ."):
        assert needed in runs, needed
    env = dict(re.match(r"(\w+)=(\S+)$", rest).groups() for instruction, rest in steps if instruction == "ENV")
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_BACKFILL_JARS"].startswith("/"), "the jar folder must be a fixed absolute path"
    assert 'cluster/fetch_jars.sh "$RAY_BACKFILL_JARS"' in runs
    assert "cluster/jvm-deps-s3.txt" in runs
    assert _image_workdir().startswith("/")
    for instruction, rest in steps:
        if instruction == "COPY":
            sources = [s for s in rest.split() if not s.startswith("--")][:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    ignored = _text("Dockerfile.dockerignore").split()
    assert {".venv", ".git", "warehouse"} <= set(ignored)


def test_rayjob_has_the_fields_kuberay_needs():
    job = _yaml("kuberay-rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["entrypoint"].strip()
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == RAY_VERSION
    assert cluster["authOptions"]["mode"] == "token"
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    assert len(groups) >= 2
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            assert RAY_VERSION in container["image"], "the image is built from cluster/Dockerfile on the pinned Ray"
            assert {"requests", "limits"} <= set(container["resources"])
    head_env = {e["name"]: e for e in cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    for name in ("RAY_BACKFILL_CATALOG_URI", "RAY_BACKFILL_CATALOG_PASSWORD"):
        assert "secretKeyRef" in head_env[name]["valueFrom"], name


def test_rayjob_takes_every_credential_from_a_secret():
    cluster = _yaml("kuberay-rayjob.yaml")["spec"]["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            for entry in container.get("env", []):
                if re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|_URI$", entry["name"]):
                    assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], entry["name"]


# --- every CLI command in these files is accepted by the real parser -------------------------------

def _cli_commands(text: str) -> list[list[str]]:
    """The `ray-backfill ...` / `python -m ray_backfill.cli ...` commands in a text, as argv after the program."""
    text = re.sub(r"\\\n", " ", text)
    commands = []
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip().strip("`")
        match = re.search(r"(?:python -m ray_backfill\.cli|(?<![\w/.-])ray-backfill)\s+(\S.*)", line)
        if not match or match.group(1).split()[0] not in ("run", "plan", "resume", "status", "cancel"):
            continue  # prose that names the program
        words = shlex.split(match.group(1), comments=True)
        stop = next((i for i, w in enumerate(words) if w in ("&&", "||", ";", "|")), len(words))
        commands.append(words[:stop])
    return commands


def _parse(argv: list[str], where: str) -> argparse.Namespace:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `ray-backfill {shlex.join(argv)}` is not accepted by the CLI")
    # argparse also takes abbreviations (--conf for --config): the docs must spell flags out.
    [subparsers] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    flags = {f for action in subparsers.choices[argv[0]]._actions for f in action.option_strings}
    for word in argv[1:]:
        if word.startswith("--"):
            assert word.split("=")[0] in flags, f"{where}: {word} is not a flag of `ray-backfill {argv[0]}`"
    return args


def _local(path: str) -> Path:
    """A path as the repository holds it: the image's project folder is the repository root."""
    workdir = _image_workdir().rstrip("/") + "/"
    return ROOT / path[len(workdir):] if path.startswith(workdir) else ROOT / path


COMMAND_SOURCES = {
    "cluster/kuberay-rayjob.yaml (entrypoint)": lambda: _yaml("kuberay-rayjob.yaml")["spec"]["entrypoint"],
    "cluster/aws-cluster.yaml": lambda: _text("aws-cluster.yaml"),
    "cluster/ray-node.sh": lambda: _text("ray-node.sh"),
    "README.md (On a Ray cluster)": _readme_cluster_section,
}


@pytest.mark.parametrize("where", sorted(COMMAND_SOURCES))
def test_cli_commands_use_only_flags_the_cli_accepts(where):
    commands = _cli_commands(COMMAND_SOURCES[where]())
    assert commands, f"{where}: no ray-backfill command found"
    for argv in commands:
        args = _parse(argv, where)
        if getattr(args, "config", None):
            assert _local(str(args.config)).is_file(), f"{where}: --config {args.config} does not exist"


def test_rayjob_entrypoint_builds_a_postgres_s3a_request(monkeypatch):
    from ray_backfill.request import build_request

    [argv] = _cli_commands(_yaml("kuberay-rayjob.yaml")["spec"]["entrypoint"])
    args = _parse(argv, "RayJob entrypoint")
    args.config = _local(str(args.config))
    monkeypatch.setenv("RAY_BACKFILL_CATALOG_URI", "jdbc:postgresql://db.internal:5432/lakehouse")
    monkeypatch.setenv("RAY_BACKFILL_CATALOG_PASSWORD", "from-a-secret")
    request = build_request(args)
    catalog = request.settings.catalog
    assert catalog.kind == "postgres" and catalog.uri == "jdbc:postgresql://db.internal:5432/lakehouse"
    assert catalog.password == "from-a-secret"
    assert catalog.warehouse.startswith("s3a://")
    assert request.parallelism and request.chunks


PATH_SOURCES = {**COMMAND_SOURCES, "cluster/Dockerfile": lambda: _text("Dockerfile"),
                "cluster/warehouse-s3.toml": lambda: _text("warehouse-s3.toml"),
                "cluster/jvm-deps-s3.txt": lambda: _text("jvm-deps-s3.txt")}


@pytest.mark.parametrize("where", sorted(PATH_SOURCES))
def test_paths_and_modules_named_in_commands_exist(where):
    text = PATH_SOURCES[where]()
    paths = set(re.findall(r"(?<![\w.-])((?:cluster|ray_backfill|jobs|tests)/[\w./-]*\w)", text))
    for path in paths:
        assert _local(path).exists(), f"{where} names {path}, which is not in the repository"
    modules = set(re.findall(r"python -m ([\w.]+)", text))
    for module in modules:
        assert importlib.util.find_spec(module) is not None, f"{where} runs python -m {module}, which does not exist"
    assert paths or modules


# --- the warehouse config files go through our own settings loader ---------------------------------

def _settings(config: Path, env: dict | None = None):
    parser = argparse.ArgumentParser()
    add_options(parser)
    return resolve(parser.parse_args(["--config", str(config)]), env or {})[0]


def test_s3_config_is_a_postgres_catalog_on_s3a_through_s3fileio():
    assert tomllib.loads(_text("warehouse-s3.toml"))
    settings = _settings(CLUSTER / "warehouse-s3.toml")
    catalog = settings.catalog
    assert catalog.kind == "postgres" and catalog.uri.startswith("jdbc:postgresql://")
    assert catalog.warehouse.startswith("s3a://") and not catalog.warehouse_is_local
    properties = dict(catalog.properties)
    assert properties["io-impl"] == "org.apache.iceberg.aws.s3.S3FileIO"
    assert {"s3.endpoint", "s3.path-style-access"} <= set(properties)
    assert catalog.password is None, "the password comes from RAY_BACKFILL_CATALOG_PASSWORD only"
    assert _settings(CLUSTER / "warehouse-s3.toml", {"RAY_BACKFILL_CATALOG_PASSWORD": "pw"}).catalog.password == "pw"


def test_hdfs_config_is_a_shared_catalog_on_hdfs():
    assert tomllib.loads(_text("warehouse-hdfs.toml"))
    settings = _settings(CLUSTER / "warehouse-hdfs.toml")
    catalog = settings.catalog
    assert catalog.kind in ("hadoop", "postgres")
    assert catalog.warehouse.startswith("hdfs://") and not catalog.warehouse_is_local
    check_writers(catalog, writers=8)  # the Hadoop catalog is refused only on a local file system
    assert all(key.startswith("spark.") for key, _ in settings.spark.extra) and settings.spark.extra


@pytest.mark.parametrize("body, fragment", [
    ('[spark_conf]\nspark.hadoop.fs.defaultFS = "hdfs://nn:8020"\n', "spark_conf key 'spark' holds a table"),
    ('[spark_conf]\n"spark.executor.cores" = 2\n', "spark_conf 'spark.executor.cores' = 2 is not a string"),
    ('[spark_conf]\n"hadoop.fs.defaultFS" = "hdfs://nn:8020"\n', "'hadoop.fs.defaultFS' is not a spark.* setting"),
    ('[catalog_properties]\n"s3.secret-access-key" = "abc"\n', "'s3.secret-access-key' is a credential"),
    ('[spark_conf]\n"spark.hadoop.fs.s3a.access.key" = "abc"\n', "'spark.hadoop.fs.s3a.access.key' is a credential"),
    ('catalog_properties = "io-impl"\n', "catalog_properties must be a [catalog_properties] table"),
])
def test_config_file_tables_refuse_bad_values_in_one_line(tmp_path, body, fragment):
    config = tmp_path / "c.toml"
    config.write_text(body)
    with pytest.raises(ConfigError) as err:
        _settings(config)
    message = str(err.value)
    assert fragment in message and "\n" not in message and str(config) in message


def test_config_file_tables_fill_catalog_properties_and_spark_extra(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[catalog_properties]\nio-impl = "x.FileIO"\n"client.region" = "eu-central-1"\n'
                      '[spark_conf]\n"spark.hadoop.fs.s3a.aws.credentials.provider" = "p.Provider"\n')
    settings = _settings(config)
    assert settings.catalog.properties == (("client.region", "eu-central-1"), ("io-impl", "x.FileIO"))
    assert settings.spark.extra == (("spark.hadoop.fs.s3a.aws.credentials.provider", "p.Provider"),)


# --- no file carries a credential, and every image is on the pinned Ray ----------------------------

_LITERAL_SECRET = re.compile(
    r"(?i)(password|passwd|secret[_.-]?(access[_.-]?)?key|access[_.-]?key[_.-]?id|auth[_.-]?token|session[_.-]?token)"
    r"""["']?\s*(?:=|:)\s*["']?(?P<value>[A-Za-z0-9+/_-]{4,})"""
)
_AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")


def _literal_secrets(text: str) -> list[str]:
    found = [m.group(0) for m in _LITERAL_SECRET.finditer(text) if not m.group("value").startswith(("$", "{"))]
    return found + _AWS_KEY_ID.findall(text)


def test_the_secret_scan_finds_planted_credentials():
    planted = ['password = "hunter22"', "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENG", "auth_token: 5f2b9c1d",
               "key_id AKIAIOSFODNN7EXAMPLE", '"s3.secret-access-key" = "abc123"']
    for line in planted:
        assert _literal_secrets(line), line
    assert not _literal_secrets('--from-literal=password="$PGPASSWORD"\nsecretKeyRef: {name: s, key: password}')


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_no_file_holds_a_literal_credential(name):
    assert _literal_secrets(_text(name)) == []


def test_readme_cluster_section_holds_no_literal_credential():
    assert _literal_secrets(_readme_cluster_section()) == []


def test_every_ray_image_is_the_pinned_version():
    texts = {name: _text(name) for name in CLUSTER_FILES}
    images = [(name, m.group(1)) for name, text in texts.items()
              for m in re.finditer(r"(?:FROM|image:)\s+(\S+)", text)]
    assert images
    for name, image in images:
        assert RAY_VERSION in image, f"{name}: image {image} is not on Ray {RAY_VERSION} (pyproject.toml)"
