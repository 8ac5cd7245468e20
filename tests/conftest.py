"""Shared test set-up: everything offline, deterministic, and small."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Toy models built by the tests are cached inside the checkout (git-ignored), not in the user's cache.
os.environ.setdefault("IMGPREF_CACHE", os.path.join(os.path.dirname(os.path.dirname(__file__)), ".cache"))

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")
    config.addinivalue_line("markers", "slow: longer end-to-end runs")
    config.addinivalue_line("markers", "small_model: runs on the toy small model (opt-in: IMGPREF_SMALL_TESTS=1)")


def pytest_collection_modifyitems(config, items):
    skips = {}
    if not torch.cuda.is_available():
        skips["gpu"] = pytest.mark.skip(reason="needs a CUDA device")
    if os.environ.get("IMGPREF_SMALL_TESTS") != "1":
        skips["small_model"] = pytest.mark.skip(reason="builds and tunes the toy small model: make test-small")
    for item in items:
        for marker, skip in skips.items():
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def toy_micro(tmp_path_factory):
    """Folder of the toy ``micro`` model, built once per cache folder (``IMGPREF_CACHE``); the same model on
    every x86-64 CPU (the build pins its kernels). ``IMGPREF_TEST_TOY_SEED=1`` (2, ...) runs the tests on
    another build, to check that the learning tests do not lean on one lucky model."""
    from imgpref.toy.build import ensure_toy_model

    return ensure_toy_model("micro", seed=int(os.environ.get("IMGPREF_TEST_TOY_SEED", "0")), progress=False)
