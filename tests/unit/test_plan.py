"""Plan expansion: names, tags, registries and the seed's overrides, exactly."""

from __future__ import annotations

from pathlib import Path

from include.nightly_ci.config import load_config
from include.nightly_ci.plan import build_plan, load_plan

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "include" / "config" / "nightly_ci.yaml"


def test_six_cells_with_their_names_and_tags():
    plan = load_plan(str(SHIPPED))
    assert [c.group_id for c in plan.cells] == [
        "vllm_amd64",
        "vllm_arm64",
        "sglang_amd64",
        "sglang_arm64",
        "trtllm_amd64",
        "trtllm_arm64",
    ]
    cell = plan.cell("vllm", "arm64")
    assert cell.platform == "linux/arm64"
    assert cell.framework_tag == "main-vllm-framework-arm64"
    assert cell.nightly_tag == "nightly-vllm-arm64"
    assert cell.run_tag("scheduled__2026-11-28T08:00:00+00:00") == "nightly-vllm-arm64-run-scheduled-20261128T080000Z"
    assert cell.build_pool == "cpu-arm-r8g-4xlarge" and cell.test_pool == "cpu-arm-r8g-4xlarge"
    amd = plan.cell("trtllm", "amd64")
    assert amd.build_pool == "cpu-amd-m5-4xlarge" and amd.test_pool == "gpu-l40-amd64"
    assert plan.pools == {
        "cpu-amd-m5-4xlarge": (4, "16 vCPU, 64GB RAM: amd64 builds"),
        "cpu-arm-r8g-4xlarge": (4, "16 vCPU, 64GB RAM: arm64 builds, dry-run tests"),
        "gpu-l40-amd64": (8, "L40 GPU, 48GB VRAM: GPU tests (one slot per GPU)"),
        "culprit": (2, "The culprit finder's builds and test runs: a few at once, so it never starves the nightly"),
    }
    assert plan.culprit.pool == "culprit"


def test_arm64_overrides_exactly_as_the_seed():
    plan = load_plan(str(SHIPPED))
    args = {(c.framework, c.arch): dict(c.build_args) for c in plan.cells}
    assert args[("vllm", "arm64")] == {
        "FRAMEWORK": "vllm",
        "ARCH": "arm64",
        "ARCH_ALT": "aarch64",
        "BASE_IMAGE_TAG": "25.06-cuda12.9-devel-ubuntu24.04",
        "CUDA_VERSION": "129",
        "TORCH_BACKEND": "cu129",
    }
    assert args[("trtllm", "arm64")] == {
        "FRAMEWORK": "trtllm",
        "ARCH": "arm64",
        "ARCH_ALT": "aarch64",
        "BASE_IMAGE_TAG": "25.06-py3",
        "CUDA_VERSION": "129",
        "TORCH_BACKEND": "cu129",
    }
    # sglang keeps the defaults on arm64; amd64 has no overrides at all.
    assert args[("sglang", "arm64")] == {"FRAMEWORK": "sglang", "ARCH": "arm64", "ARCH_ALT": "aarch64"}
    for fw in ("vllm", "sglang", "trtllm"):
        assert args[(fw, "amd64")] == {"FRAMEWORK": fw, "ARCH": "amd64", "ARCH_ALT": "x86_64"}


def test_ecr_gets_framework_and_runtime_acr_runtime_only():
    plan = load_plan(str(SHIPPED))
    for cell in plan.cells:
        assert [p.task.local_id for p in cell.framework_pushes] == ["push_framework_ecr"]
        assert [p.task.local_id for p in cell.runtime_pushes] == ["push_runtime_ecr", "push_runtime_acr"]
        assert cell.cache_registry == "ecr"


def test_adding_a_framework_and_an_arch_is_a_yaml_edit(tmp_path):
    f = tmp_path / "more.yaml"
    f.write_text(
        f"extends: {SHIPPED}\n"
        "frameworks:\n  tensorrt_edge: {build_args: {FLAVOR: edge}}\n"
        "arches:\n  riscv64: {platform: linux/riscv64, build_pool: cpu-amd-m5-4xlarge, test_pool: gpu-l40-amd64}\n"
        "overrides:\n  riscv64: {tensorrt_edge: {CUDA_VERSION: 130}}\n"
    )
    plan = build_plan(load_config(f))
    assert len(plan.cells) == 4 * 3
    cell = plan.cell("tensorrt_edge", "riscv64")
    assert dict(cell.build_args) == {
        "FRAMEWORK": "tensorrt_edge",
        "ARCH": "riscv64",
        "FLAVOR": "edge",
        "CUDA_VERSION": "130",
    }
    assert cell.nightly_tag == "nightly-tensorrt_edge-riscv64"


def test_the_plan_carries_a_pools_volumes(tmp_path):
    f = tmp_path / "volumes.yaml"
    f.write_text(
        f"extends: {SHIPPED}\n"
        "pools:\n  gpu-l40-amd64:\n    runner: {volumes: {/srv/z: /data/z, /srv/hf-cache/hub: /models/hub}}\n"
    )
    plan = build_plan(load_config(f))
    gpu = plan.cell("vllm", "amd64").tests[0].runner
    assert gpu.volumes == (("/srv/hf-cache/hub", "/models/hub"), ("/srv/z", "/data/z"))  # sorted: a stable plan
    assert plan.cell("vllm", "arm64").tests[0].runner.volumes == ()
