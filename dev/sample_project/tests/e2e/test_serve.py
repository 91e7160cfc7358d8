import subprocess

import pytest
from dynamo_sample.backends import BACKENDS, current_backend


@pytest.mark.e2e
@pytest.mark.gpu_1
@pytest.mark.parametrize("name", [pytest.param(name, marks=getattr(pytest.mark, name)) for name in BACKENDS])
def test_serve_single_gpu(name, framework):
    if name != framework:
        pytest.skip(f"this image serves {framework}")
    out = subprocess.run(["serve"], capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"{name} serving on")
    assert current_backend().generate("abc") == f"[{name} x1] cba"


@pytest.mark.e2e
@pytest.mark.gpu_2
@pytest.mark.nightly
def test_generate_two_gpus():
    assert current_backend().generate("ab", gpus=2).endswith("x2] ba")
