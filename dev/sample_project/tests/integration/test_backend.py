import platform

import pytest
from dynamo_sample.backends import current_backend


@pytest.mark.integration
@pytest.mark.post_merge
def test_backend_matches_image(build_info, framework):
    assert build_info["framework"] == framework == current_backend().name


@pytest.mark.integration
@pytest.mark.nightly
def test_image_arch_matches_machine(build_info):
    assert build_info["arch_alt"] == platform.machine()
