import pytest
from dynamo_sample.router import Router


@pytest.mark.unit
@pytest.mark.pre_merge
def test_round_robin():
    router = Router(["a", "b"])
    assert [router.route("x")[0] for _ in range(3)] == ["a", "b", "a"]


@pytest.mark.unit
@pytest.mark.pre_merge
def test_needs_a_worker():
    with pytest.raises(ValueError):
        Router([])


@pytest.mark.unit
@pytest.mark.nightly
def test_version_is_set():
    import dynamo_sample

    assert dynamo_sample.__version__.count(".") == 2
