"""Loading a file never runs code from it: every torch.load reads tensors and plain data only, and
the ImageNet weights are checked against their published hash."""

import ast
from pathlib import Path

import pytest
import torch
from test_engine import _Payload

from ugpcl.errors import UserError
from ugpcl.models.resnet import IMAGENET_FILE, IMAGENET_HASH_PREFIX, ResNetEncoder, load_imagenet_weights

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "ugpcl"


def test_every_torch_load_in_the_package_reads_weights_only():
    calls = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                calls.append((f"{path.relative_to(PACKAGE)}:{node.lineno}", safe))
    assert calls, "no torch.load found: the check looks in the wrong place"
    assert [where for where, safe in calls if not safe] == []


def test_weights_that_would_run_code_are_refused_and_run_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "my_resnet50.pth"
    torch.save({"conv1.weight": _Payload(marker)}, path)
    with pytest.raises(UserError, match="cannot read the ResNet-50 weights") as err:
        load_imagenet_weights(ResNetEncoder(), path)
    assert not marker.exists() and str(path) in str(err.value)


def test_a_file_named_as_torchvisions_weights_must_have_their_hash(tmp_path):
    path = tmp_path / IMAGENET_FILE
    torch.save(ResNetEncoder().state_dict(), path)  # right layout, wrong file
    with pytest.raises(UserError, match=f"SHA-256 does not start with {IMAGENET_HASH_PREFIX}") as err:
        load_imagenet_weights(ResNetEncoder(), path)
    assert str(path) in str(err.value)


def test_the_hub_download_is_hash_checked_and_read_weights_only(monkeypatch):
    seen = {}

    def fake_hub(url, **kwargs):
        seen.update(kwargs, url=url)
        return {k: v for k, v in ResNetEncoder().state_dict().items()}

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_hub)
    load_imagenet_weights(ResNetEncoder(in_channels=3))
    assert seen["url"].endswith(IMAGENET_FILE) and seen["check_hash"] is True and seen["weights_only"] is True
