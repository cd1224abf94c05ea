import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()

# Two cores, often two pytest workers: one intra-op thread per worker avoids oversubscription.
torch.set_num_threads(int(os.environ.get("UGPCL_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def acdc_dir() -> Path:
    path = SHARED_DATA / "ACDC"
    assert path.is_dir(), f"real ACDC data expected at {path} (../shared/data beside the repo)"
    return path


@pytest.fixture(scope="session")
def isic_dir() -> Path:
    path = SHARED_DATA / "ISIC2018-mini"
    assert path.is_dir(), f"real ISIC data expected at {path} (../shared/data beside the repo)"
    return path
