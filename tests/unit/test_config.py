"""Config validation: every bad input names its YAML path; good configs load."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from include.nightly_ci.config import ConfigError, load_config, resolve_local

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "include" / "config" / "nightly_ci.yaml"


def bad(tmp_path: Path, body: str) -> ConfigError:
    f = tmp_path / "c.yaml"
    f.write_text(f"extends: {SHIPPED}\n" + textwrap.dedent(body))
    with pytest.raises(ConfigError) as info:
        load_config(f)
    return info.value


def paths(err: ConfigError) -> set[str]:
    return {f.path for f in err.findings}


def test_shipped_and_local_configs_load():
    cfg = load_config(SHIPPED)
    assert cfg.dag.schedule == "0 8 * * *"
    assert list(cfg.frameworks) == ["vllm", "sglang", "trtllm"]
    assert list(cfg.arches) == ["amd64", "arm64"]
    assert cfg.dag.catchup is False
    local = load_config(ROOT / "dev" / "local.yaml")
    assert local.registries["ecr"].kind == "docker" and local.registries["acr"].kind == "acr"
    assert local.overrides == cfg.overrides


def test_env_var_points_at_another_file(tmp_path, monkeypatch):
    other = tmp_path / "other.yaml"
    other.write_text(f"extends: {SHIPPED}\ndag: {{dag_id: other_nightly}}\n")
    monkeypatch.setenv("NIGHTLY_CI_CONFIG", str(other))
    assert load_config().dag.dag_id == "other_nightly"


def test_unknown_key(tmp_path):
    err = bad(tmp_path, "frameworks:\n  vllm: {buildargs: {}}\n")
    assert "frameworks.vllm.buildargs" in paths(err)
    assert "unknown key" in str(err)
    assert "(line 3)" in str(err)


def test_wrong_types(tmp_path):
    err = bad(tmp_path, "pools:\n  gpu-l40-amd64: {slots: four}\ndag: {catchup: 'yes'}\n")
    assert {"pools.gpu-l40-amd64.slots", "dag.catchup"} <= paths(err)
    assert "wrong type" in str(err)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ("frameworks:\n  'vllm;rm -rf /': {}\n", "frameworks.vllm;rm -rf /"),
        ("frameworks:\n  VLLM: {}\n", "frameworks.VLLM"),
        (
            "arches:\n  'arm 64': {platform: linux/arm64, build_pool: cpu-amd-m5-4xlarge, test_pool: gpu-l40-amd64}\n",
            "arches.arm 64",
        ),
        ("frameworks:\n  vllm: {build_args: {CUDA_VERSION: '$(reboot)'}}\n", "frameworks.vllm.build_args.CUDA_VERSION"),
        ("frameworks:\n  vllm: {build_args: {'BAD NAME': x}}\n", "frameworks.vllm.build_args.BAD NAME"),
        ("registries:\n  ecr: {repository: 'Ai Dynamo'}\n", "registries.ecr.repository"),
        ("source: {branch: 'main; echo'}\n", "source.branch"),
        ("source: {dockerfile: ../../etc/passwd}\n", "source.dockerfile"),
        ("pools:\n  'GPU pool': {slots: 1}\n", "pools.GPU pool"),
    ],
)
def test_unsafe_names(tmp_path, body, path):
    err = bad(tmp_path, body)
    assert path in paths(err), str(err)


def test_overrides_for_unknown_framework_and_arch(tmp_path):
    err = bad(tmp_path, "overrides:\n  riscv64: {vllm: {X: '1'}}\n  arm64: {tensorflow: {X: '1'}}\n")
    assert {"overrides.riscv64", "overrides.arm64.tensorflow"} <= paths(err)
    assert "unknown arch 'riscv64'" in str(err) and "unknown framework 'tensorflow'" in str(err)


def test_pool_that_does_not_exist(tmp_path):
    err = bad(tmp_path, "arches:\n  arm64: {build_pool: cpu-arm-huge}\n")
    assert "arches.arm64.build_pool" in paths(err)
    assert "'cpu-arm-huge' is not defined under pools" in str(err)


def test_the_culprit_finders_pool_must_be_defined(tmp_path):
    err = bad(tmp_path, "culprit: {pool: gpu-bisect}\n")
    assert "culprit.pool" in paths(err) and "'gpu-bisect' is not defined under pools" in str(err)
    # One run can't tell a flake from a failure.
    assert "culprit.reruns" in paths(bad(tmp_path, "culprit: {reruns: 1}\n"))


@pytest.mark.parametrize(
    ("tags", "why"),
    [
        ("{nightly: 'nightly {framework}-{arch}'}", "valid image tag"),
        ("{run: 'nightly-{framework}-{arch}'}", "must contain {run_id}"),
        ("{nightly: 'nightly-{framework}-{arch}-{run_id}'}", "must not contain {run_id}"),
        ("{framework: 'main-{fw}-{arch}'}", "unknown placeholder"),
        ("{nightly: 'x-{arch}'}", "must contain {framework} and {arch}"),
    ],
)
def test_bad_tag_patterns(tmp_path, tags, why):
    err = bad(tmp_path, f"tags: {tags}\n")
    assert why in str(err)
    assert any(p.startswith("tags") for p in paths(err))


def test_bad_schedule_and_registry_split(tmp_path):
    err = bad(tmp_path, "dag: {schedule: 'every night'}\nregistries:\n  ecr: {images: [runtime]}\n")
    assert "dag.schedule" in paths(err)
    assert "no registry receives framework images" in str(err)


def test_every_finding_at_once(tmp_path):
    err = bad(
        tmp_path, "overrides:\n  riscv64: {}\narches:\n  arm64: {test_pool: nope}\ntags: {run: 'r-{framework}'}\n"
    )
    assert len(err.findings) >= 3


def test_duplicate_key_and_invalid_yaml(tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text("frameworks:\n  vllm: {}\n  vllm: {}\n")
    with pytest.raises(ConfigError, match=r"frameworks.vllm \(line 3\): duplicate key"):
        load_config(f)
    f.write_text("frameworks: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f)


def test_missing_file_and_missing_parent(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    f = tmp_path / "child.yaml"
    f.write_text("extends: parent.yaml\n")
    with pytest.raises(ConfigError, match=r"parent\.yaml"):
        load_config(f)


def test_fault_in_extended_file_names_that_file(tmp_path):
    parent = tmp_path / "parent.yaml"
    parent.write_text(SHIPPED.read_text().replace("build_pool: cpu-arm-r8g-4xlarge", "build_pool: missing-pool"))
    child = tmp_path / "child.yaml"
    child.write_text("extends: parent.yaml\n")
    with pytest.raises(ConfigError, match=r"arches.arm64.build_pool \(parent.yaml line \d+\)"):
        load_config(child)


def run_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "include.nightly_ci", "check", *args], cwd=ROOT, capture_output=True, text=True
    )


def test_cli_check_valid_prints_one_line():
    proc = run_check(str(SHIPPED))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1
    assert "3 frameworks x 2 arches = 6 cells" in proc.stdout


def test_cli_check_invalid_exits_1_with_every_problem(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(f"extends: {SHIPPED}\noverrides:\n  riscv64: {{}}\narches:\n  arm64: {{test_pool: nope}}\n")
    proc = run_check(str(f))
    assert proc.returncode == 1
    assert "overrides.riscv64" in proc.stderr and "arches.arm64.test_pool" in proc.stderr


def test_relative_paths_are_taken_from_the_file_that_says_them(tmp_path):
    child = tmp_path / "deeper" / "child.yaml"
    child.parent.mkdir()
    child.write_text(f"extends: {ROOT / 'dev' / 'local.yaml'}\n")
    cfg = load_config(child)
    assert cfg.source.repository == str(ROOT / ".local" / "sample-project.git")
    assert cfg.artifacts.base == str(ROOT / ".local" / "artifacts")
    child.write_text(f"extends: {ROOT / 'dev' / 'local.yaml'}\nartifacts: {{base: here}}\n")
    assert load_config(child).artifacts.base == str(tmp_path / "deeper" / "here")


def test_a_replaced_mapping_stays_replaced_through_a_chain_of_extends(tmp_path):
    """local.yaml replaces the GPU pool's Kubernetes runner with a Docker one; a file that
    extends local.yaml and only names the runner's connection must not bring the shipped
    runner's Kubernetes keys (memory 64Gi, node selector, ...) back."""
    child = tmp_path / "child.yaml"
    child.write_text(
        f"extends: {ROOT / 'dev' / 'local.yaml'}\npools:\n  gpu-l40-amd64:\n    runner: {{conn_id: gpu_host}}\n"
    )
    runner = load_config(child).pools["gpu-l40-amd64"].runner
    assert runner is not None
    assert (runner.backend, runner.conn_id, runner.gpus, runner.cpus, runner.network_mode) == (
        "docker",
        "gpu_host",
        False,
        2,
        "none",
    )
    assert (runner.memory, runner.node_selector, runner.image_pull_secrets) == (None, {}, [])
    # And a !replace in the last file of the chain replaces what both files above it said.
    child.write_text(
        f"extends: {ROOT / 'dev' / 'local.yaml'}\n"
        "pools:\n  gpu-l40-amd64:\n    runner: !replace {backend: docker, cpus: 4}\n"
    )
    runner = load_config(child).pools["gpu-l40-amd64"].runner
    assert runner is not None
    assert (runner.conn_id, runner.gpus, runner.cpus, runner.network_mode, runner.memory) == (None, True, 4, None, None)


def test_a_memory_size_in_the_wrong_backends_units_is_a_config_error(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(
        f"extends: {SHIPPED}\n"
        "pools:\n"
        "  cpu-arm-r8g-4xlarge:\n    runner: {memory: 64Gi}\n"
        "  gpu-l40-amd64:\n    runner: {memory: 64g}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(f)
    text = str(err.value)
    assert (
        "pools.cpu-arm-r8g-4xlarge.runner.memory (line 4): '64Gi' is not a docker memory size (like 64g or 512m)"
        in text
    )
    assert (
        "pools.gpu-l40-amd64.runner.memory (line 6): '64g' is not a kubernetes memory size (like 64Gi or 512Mi)" in text
    )
    f.write_text(
        f"extends: {SHIPPED}\n"
        "pools:\n"
        "  cpu-arm-r8g-4xlarge:\n    runner: {memory: 1.5g}\n"
        "  gpu-l40-amd64:\n    runner: {memory: 512Mi}\n"
    )
    runner = load_config(f).pools["cpu-arm-r8g-4xlarge"].runner
    assert runner is not None and runner.memory == "1.5g"


@pytest.mark.parametrize(
    "size", ["64g", "512m", "1.5g", "64GB", "512mb", "1024", "2k", "10Kb", "0.5G", "64Gi", "1e3g", "64 g", "g", ""]
)
def test_a_docker_memory_size_the_config_takes_is_one_docker_takes(size):
    """The config checks Docker sizes without importing docker at parse time: what it
    accepts must be a subset of what docker-py's own parser (the one the runner uses) takes."""
    from docker.errors import DockerException
    from docker.utils import parse_bytes

    from include.nightly_ci.config.checks import DOCKER_MEMORY

    if DOCKER_MEMORY.fullmatch(size):
        try:
            assert parse_bytes(size) > 0 or size.strip("0.") == ""
        except DockerException as exc:
            pytest.fail(f"the config takes {size!r} but docker-py refuses it: {exc}")
    assert bool(DOCKER_MEMORY.fullmatch(size)) == (
        size in {"64g", "512m", "1.5g", "64GB", "512mb", "1024", "2k", "10Kb", "0.5G"}
    )


def test_the_dockerfile_may_name_the_cell_and_nothing_else(tmp_path):
    from include.nightly_ci.plan import build_plan

    f = tmp_path / "c.yaml"
    f.write_text(f"extends: {SHIPPED}\nsource:\n  dockerfile: container/{{arch}}/Dockerfile.{{framework}}\n")
    plan = build_plan(load_config(f))
    assert plan.cell("trtllm", "arm64").dockerfile == "container/arm64/Dockerfile.trtllm"
    f.write_text(f"extends: {SHIPPED}\nsource:\n  dockerfile: container/Dockerfile.{{flavor}}\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert "source.dockerfile (line 3): unknown placeholder(s) ['flavor'] in 'container/Dockerfile.{flavor}'" in str(
        err.value
    )
    f.write_text(f"extends: {SHIPPED}\nsource:\n  dockerfile: ../Dockerfile.{{framework}}\n")
    with pytest.raises(ConfigError, match=r"source\.dockerfile .*not a relative path inside the repository"):
        load_config(f)


def test_a_build_secret_names_a_connection_field(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(f"extends: {SHIPPED}\nbuild:\n  secrets:\n    aws-key-id: {{conn_id: aws_default, field: token}}\n")
    with pytest.raises(ConfigError, match=r"build.secrets.aws-key-id.field \(line 4\): 'token' is not a valid"):
        load_config(f)


def test_the_shipped_artifact_store_is_an_object_store_every_host_reaches():
    art = load_config(SHIPPED).artifacts
    assert art.base.startswith("s3://") and art.conn_id == "aws_default" and not art.single_host


@pytest.mark.parametrize("base", ["/srv/artifacts", "file:///srv/artifacts", "relative/folder"])
def test_a_folder_as_the_artifact_store_needs_a_config_that_says_it_is_one_host(tmp_path, base):
    err = bad(tmp_path, f"artifacts: {{base: {base}, conn_id: null}}\n")
    assert paths(err) == {"artifacts.base"}
    assert "single_host" in str(err) and "folder on each worker" in str(err)
    f = tmp_path / "one_host.yaml"
    f.write_text(f"extends: {SHIPPED}\nartifacts: {{base: {base}, conn_id: null, single_host: true}}\n")
    assert load_config(f).artifacts.single_host


def test_an_object_store_without_a_connection_is_a_config_error(tmp_path):
    err = bad(tmp_path, "artifacts: {base: 'abfs://nightly/ci', conn_id: null}\n")
    assert paths(err) == {"artifacts.conn_id"}


# AUDIT-RELIABILITY.md M11: the loader's gaps.


def alias_bomb(levels: int) -> str:
    """`x{i}: &a{i} [*a{i-1} x9]`: a few hundred bytes that expand to 9**LEVELS nodes."""
    lines = ["x0: &a0 [lol]"]
    lines += [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    """7 levels (about 450 bytes) once took the dag-processor's memory; 6 took 38 s."""
    f = tmp_path / "c.yaml"
    f.write_text(alias_bomb(7))
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"aliases expand to more than 100000 values") as info:
        load_config(f)
    assert time.monotonic() - started < 1.0
    assert "(line 6)" in str(info.value)  # x5: 125,479 values, the first node over the limit


def test_aliases_of_a_normal_size_still_load(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(f"extends: {SHIPPED}\ndag: {{tags: [&t nightly, *t, ci]}}\n")
    assert load_config(f).dag.tags == ["nightly", "nightly", "ci"]


def test_an_extends_cycle_names_every_file(tmp_path):
    for name, parent in (("a", "b"), ("b", "c"), ("c", "a")):
        (tmp_path / f"{name}.yaml").write_text(f"extends: {parent}.yaml\n")
    with pytest.raises(ConfigError, match=r"extends cycle: a\.yaml -> b\.yaml -> c\.yaml -> a\.yaml"):
        load_config(tmp_path / "a.yaml")


def test_tag_patterns_that_give_two_cells_one_tag_are_refused(tmp_path):
    """`{framework}_{arch}` gives cells a_b x c and a x b_c the same tags."""
    f = tmp_path / "c.yaml"
    f.write_text(
        textwrap.dedent(f"""\
        extends: {SHIPPED}
        tags:
          framework: "fw_{{framework}}_{{arch}}"
          nightly: "{{framework}}_{{arch}}"
          run: "{{framework}}_{{arch}}_run_{{run_id}}"
        frameworks: !replace
          a_b: {{}}
          a: {{}}
        arches: !replace
          c: {{build_pool: cpu-amd64, test_pool: gpu-l40-amd64, platform: linux/amd64}}
          b_c: {{build_pool: cpu-amd64, test_pool: gpu-l40-amd64, platform: linux/amd64}}
        overrides: !replace {{}}
        """)
    )
    with pytest.raises(ConfigError) as info:
        load_config(f)
    assert "tags.nightly" in paths(info.value)
    assert "a_b x c and a x b_c both get 'a_b_c'" in str(info.value)


@pytest.mark.parametrize("field", ["workdir", "results_dir"])
@pytest.mark.parametrize("value", ['/w/"; import os#', "relative/dir", "/w/$(id)", "/w/../etc"])
def test_test_folders_are_plain_absolute_paths(tmp_path, field, value):
    """results_dir is pasted into the pod's Python script and the container's command."""
    err = bad(tmp_path, f"tests:\n  {field}: {json.dumps(value)}\n")
    assert f"tests.{field}" in paths(err)


@pytest.mark.parametrize(
    "url",
    ["ci@git.example.com:org/repo.git", "git@github.com:ai-dynamo/dynamo.git", "ssh://ci@host/org/repo.git"],
)
def test_scp_style_urls_of_any_user_are_not_taken_for_paths(url):
    assert resolve_local(url, "/opt/airflow/include/config") == url


def test_extends_names_a_yaml_file_of_the_project_or_beside_the_config(tmp_path):
    """M11: `extends` could read any file of the machine, and its parse error echoed it."""
    secret = tmp_path / "outside" / "secret.yaml"
    secret.parent.mkdir()
    secret.write_text("token: ghp_SECRET123 [\n")
    config = tmp_path / "configs" / "c.yaml"
    config.parent.mkdir()
    for parent in ("/etc/passwd", "../outside/secret.yaml"):
        config.write_text(f"extends: {parent}\n")
        with pytest.raises(ConfigError, match=r"extends \(line 1\): must name a \.yaml file inside") as info:
            load_config(config)
        assert "ghp_SECRET123" not in str(info.value) and "root:" not in str(info.value)


def test_a_type_error_does_not_echo_a_long_value(tmp_path):
    """A token pasted under the wrong key must not reach the DAG's import error."""
    err = bad(tmp_path, "dag: {catchup: ghp_0123456789abcdefghijklmnopqrstuvwxyz}\n")
    assert "dag.catchup" in paths(err)
    assert "ghp_0123456789" not in str(err) and "a str of 40 characters" in str(err)
    assert "'yes'" in str(bad(tmp_path, "dag: {catchup: 'yes'}\n"))  # a short one still helps


def test_a_pools_volumes_are_absolute_folders_that_leave_the_tests_alone(tmp_path):
    """runner.volumes: host folder -> folder in the container, both absolute; a folder the
    tests need writable or visible (the workdir, the results, /tmp) can't be covered."""
    err = bad(
        tmp_path,
        """\
        pools:
          cpu-arm-r8g-4xlarge:
            runner: {volumes: {hf-cache/hub: /root/.cache/huggingface/hub}}
          gpu-l40-amd64:
            runner: {volumes: {/srv/models: models, /srv/a: /data/, /srv/d: /}}
        """,
    )
    text = str(err)
    assert (
        "pools.cpu-arm-r8g-4xlarge.runner.volumes.hf-cache/hub (line 4): invalid key: "
        "'hf-cache/hub' is not a valid absolute path on the runner's host" in text
    )
    assert "pools.gpu-l40-amd64.runner.volumes./srv/models (line 6): 'models' is not a valid absolute path" in text
    assert "pools.gpu-l40-amd64.runner.volumes./srv/a (line 6): '/data/' is not a valid absolute path" in text
    assert "pools.gpu-l40-amd64.runner.volumes./srv/d (line 6): '/' is not a valid absolute path" in text
    err = bad(
        tmp_path,
        """\
        pools:
          gpu-l40-amd64:
            runner: {volumes: {/srv/a: /data, /srv/b: /data}}
        """,
    )
    assert "pools.gpu-l40-amd64.runner (line 4): volumes: /srv/a and /srv/b both mount at /data" in str(err)
    err = bad(
        tmp_path,
        """\
        tests: {workdir: /opt/app/src}
        pools:
          cpu-arm-r8g-4xlarge:
            runner: {volumes: {/srv/c: /opt/app, /srv/d: /workspace/test-results, /srv/e: /tmp, /srv/f: /opt/app2}}
          gpu-l40-amd64:
            runner: {volumes: {/srv/g: /opt/app/src, /srv/h: /opt/app/src/models}}
        """,
    )
    found = {f.path: f.message for f in err.findings}
    where = "pools.cpu-arm-r8g-4xlarge.runner.volumes./srv/"
    assert found == {
        f"{where}c": "/opt/app would hide the tests' workdir /opt/app/src (tests.workdir), or make it read-only",
        f"{where}d": "/workspace/test-results would hide the JUnit folder /workspace/test-results "
        "(tests.results_dir), or make it read-only",
        f"{where}e": "/tmp would hide pytest's temporary folder /tmp, or make it read-only",
        "pools.gpu-l40-amd64.runner.volumes./srv/g": "/opt/app/src would hide the tests' workdir /opt/app/src "
        "(tests.workdir), or make it read-only",
    }  # a folder inside the workdir (/opt/app/src/models) is fine: the tests read it


def test_a_pools_volumes_load(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(
        f"extends: {SHIPPED}\n"
        "pools:\n  gpu-l40-amd64:\n    runner: {volumes: {/srv/hf-cache/hub: /root/.cache/huggingface/hub}}\n"
    )
    runner = load_config(f).pools["gpu-l40-amd64"].runner
    assert runner is not None and runner.volumes == {"/srv/hf-cache/hub": "/root/.cache/huggingface/hub"}
    shipped = load_config(SHIPPED).pools["gpu-l40-amd64"].runner
    assert shipped is not None and shipped.volumes == {}
