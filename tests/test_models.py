"""The UNet-R50 network: output shapes of every head, ImageNet weight loading, position
embeddings, gradient flow, and one forward at the paper's 224 px and width 64."""

from __future__ import annotations

import dataclasses
import urllib.error

import pytest
import torch
import torch.nn.functional as F

from ugpcl.config import load_config
from ugpcl.errors import UserError
from ugpcl.methods import setup_from_config
from ugpcl.models import build_unet as build_from_config
from ugpcl.models.resnet import ResNetEncoder

NUM_CLASSES = 4


def build_unet(model_cfg: dict, num_classes: int, in_channels: int, *, image_size: int = 224, swin: bool = False,
               **heads):
    """params.yaml's `model:` section through the one translation into UNetConfig, then the model."""
    cfg = {"model": model_cfg, "data": {"image_size": image_size}, "train": {"iterations": 1, "dice_background": False}}
    setup = setup_from_config(cfg, num_classes, in_channels)
    return build_from_config(dataclasses.replace(setup.net, swin=setup.swin if swin else None, **heads))


@pytest.fixture(scope="module")
def demo_model_cfg() -> dict:
    cfg = load_config(profile="demo")["model"]
    assert cfg["width"] == 16 and not cfg["pretrained"]
    return cfg


def paper_model_cfg(**changes) -> dict:
    cfg = load_config(profile="paper")["model"]
    cfg.update(changes)
    return cfg


@pytest.mark.parametrize("size", [64, 96])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_plain_unet_outputs_logits_at_input_size(demo_model_cfg, size, in_channels):
    model = build_unet(demo_model_cfg, NUM_CLASSES, in_channels, image_size=size)
    x = torch.rand(2, in_channels, size, size)
    assert model(x).shape == (2, NUM_CLASSES, size, size)
    out = model.forward_heads(x)
    assert set(out) == {"seg", "features"}
    w = demo_model_cfg["width"]
    assert model.encoder_channels == [in_channels, w, 4 * w, 8 * w, 16 * w, 32 * w]
    strides = [1, 2, 4, 8, 16, 32]
    for f, c, s in zip(out["features"], model.encoder_channels, strides):
        assert f.shape == (2, c, size // s, size // s)


@pytest.mark.parametrize("size", [64, 96])
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("stage, stride", [("conv1", 4), ("conv2", 8), ("conv3", 16), ("conv4", 32)])
def test_all_heads_shapes_and_unit_embeddings(demo_model_cfg, size, in_channels, stage, stride):
    model = build_unet(
        demo_model_cfg, NUM_CLASSES, in_channels, swin=True, rotation_head=True, embed_stage=stage, image_size=size
    )
    out = model.forward_heads(torch.rand(2, in_channels, size, size))
    assert out["seg"].shape == (2, NUM_CLASSES, size, size)
    assert out["seg_tf"].shape == (2, NUM_CLASSES, size, size)
    assert out["rot"].shape == (2, 4)
    embed_dim = demo_model_cfg["embed_dim"]
    assert out["embed"].shape == (2, embed_dim, size // stride, size // stride)
    norms = out["embed"].norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_cnn_path_takes_other_sizes_but_swin_path_refuses(demo_model_cfg):
    model = build_unet(demo_model_cfg, NUM_CLASSES, 1, swin=True, image_size=64)
    assert model(torch.rand(1, 1, 128, 96)).shape == (1, NUM_CLASSES, 128, 96)
    with pytest.raises(ValueError, match="64 px"):
        model.forward_heads(torch.rand(1, 1, 96, 96))


def test_swin_windows_adapt_to_small_maps(demo_model_cfg):
    model = build_unet(demo_model_cfg, NUM_CLASSES, 1, swin=True, image_size=64)
    stage16, stage8, stage4 = model.swin_decoder.stages  # maps of 16, 8 and 4 px at 64 px input
    assert [b.window_size for b in stage16.blocks] == [(8, 8), (8, 8)]   # the demo's window 8 tiles 16
    assert [b.shift_size for b in stage16.blocks] == [(0, 0), (4, 4)]
    assert [b.window_size for b in stage4.blocks] == [(4, 4), (4, 4)]
    assert [b.shift_size for b in stage4.blocks] == [(0, 0), (0, 0)]


def test_head_dropout_only_when_asked(demo_model_cfg):
    plain = build_unet(demo_model_cfg, NUM_CLASSES, 1, image_size=64)
    mc = build_unet(demo_model_cfg, NUM_CLASSES, 1, image_size=64, head_dropout=0.5)
    assert isinstance(plain.decoder.dropout, torch.nn.Identity)
    assert type(mc.decoder.dropout) is torch.nn.Dropout and mc.decoder.dropout.p == 0.5  # element-wise (SSL4MIS)
    x = torch.rand(1, 1, 64, 64)
    assert not torch.equal(mc(x), mc(x))  # train mode: MC-dropout samples differ
    features = torch.ones(1, 8, 64, 64)
    kept = (mc.decoder.dropout(features) > 0).float().mean(dim=(2, 3))
    assert ((kept > 0.4) & (kept < 0.6)).all()  # each channel keeps about half its pixels, not all or none


# --- ImageNet weights -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def torchvision_style_weights(tmp_path_factory):
    """A width-64 ResNet-50 state dict under torchvision's names, with random BN statistics and fc."""
    torch.manual_seed(123)
    encoder = ResNetEncoder(3, 64)
    state = encoder.state_dict()
    for key, value in state.items():
        if key.endswith(("running_mean", "running_var", "bn1.weight", "bn3.bias")):
            value.copy_(torch.rand_like(value))
    state["fc.weight"] = torch.randn(1000, 2048)
    state["fc.bias"] = torch.randn(1000)
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("in_channels", [3, 1])
def test_pretrained_weights_load_from_file(torchvision_style_weights, in_channels):
    path, saved = torchvision_style_weights
    model = build_unet(paper_model_cfg(weights=str(path)), NUM_CLASSES, in_channels)
    loaded = model.encoder.state_dict()
    assert set(loaded) == {k for k in saved if not k.startswith("fc.")}
    for key, value in loaded.items():
        if key == "conv1.weight" and in_channels == 1:
            torch.testing.assert_close(value, saved[key].sum(dim=1, keepdim=True))
        else:
            assert torch.equal(value, saved[key]), key
    if in_channels == 1:  # summed weights on grey == RGB weights on the grey image repeated
        rgb = ResNetEncoder(3, 64)
        rgb.load_state_dict({k: v for k, v in saved.items() if not k.startswith("fc.")})
        grey = torch.rand(1, 1, 32, 32)
        model.eval()
        rgb.eval()
        with torch.no_grad():
            torch.testing.assert_close(model.encode(grey)[1], rgb(grey.repeat(1, 3, 1, 1))[1], rtol=1e-4, atol=1e-5)


def test_missing_key_names_key_and_file(torchvision_style_weights, tmp_path):
    _, saved = torchvision_style_weights
    state = dict(saved)
    del state["layer3.2.bn2.running_var"]
    path = tmp_path / "incomplete.pth"
    torch.save(state, path)
    with pytest.raises(UserError, match="layer3.2.bn2.running_var") as err:
        build_unet(paper_model_cfg(weights=str(path)), NUM_CLASSES, 3)
    assert str(path) in str(err.value)


def test_corrupt_or_absent_file_is_user_error(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read") as err:
        build_unet(paper_model_cfg(weights=str(corrupt)), NUM_CLASSES, 3)
    assert str(corrupt) in str(err.value)
    with pytest.raises(UserError, match="not found"):
        build_unet(paper_model_cfg(weights=str(tmp_path / "absent.pth")), NUM_CLASSES, 3)


# tests/data/tensors.safetensors was written by the safetensors library itself (0.8.0, save_file)
# from these tensors, so the reader is checked against the format's reference writer.
def safetensors_fixture_tensors() -> dict[str, torch.Tensor]:
    return {
        "conv1.weight": torch.arange(2 * 3 * 3 * 3, dtype=torch.float32).reshape(2, 3, 3, 3) / 7,
        "bn1.num_batches_tracked": torch.tensor(5, dtype=torch.int64),
        "half": torch.linspace(-2, 2, 6, dtype=torch.float16).reshape(2, 3),
        "bf": torch.linspace(-1, 1, 4, dtype=torch.bfloat16),
        "f64": torch.tensor([1.5, -2.25], dtype=torch.float64),
        "u8": torch.tensor([0, 255, 7], dtype=torch.uint8),
        "flag": torch.tensor([True, False]),
        "empty": torch.zeros(0, 4),
    }


def test_safetensors_reader_matches_the_reference_writer():
    from pathlib import Path

    from ugpcl.models.resnet import read_safetensors

    read = read_safetensors(Path(__file__).parent / "data" / "tensors.safetensors")
    expected = safetensors_fixture_tensors()
    assert set(read) == set(expected)
    for name, value in expected.items():
        assert read[name].dtype == value.dtype and read[name].shape == value.shape, name
        assert torch.equal(read[name], value), name


def write_safetensors(state: dict[str, torch.Tensor], path) -> None:
    """The format by hand (float32 only), for a whole ResNet-50 state dict."""
    import json
    import struct

    header, blobs, offset = {}, [], 0
    for name, value in state.items():
        blob = value.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(value.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_pretrained_weights_load_from_safetensors(torchvision_style_weights, tmp_path):
    """timm's resnet50.tv_in1k (Hugging Face cache) holds torchvision's weights as .safetensors."""
    _, saved = torchvision_style_weights
    path = tmp_path / "model.safetensors"
    write_safetensors({k: v for k, v in saved.items() if not k.endswith("num_batches_tracked")}, path)
    model = build_unet(paper_model_cfg(weights=str(path)), NUM_CLASSES, 3)
    for key, value in model.encoder.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, saved[key]), key
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(UserError, match="not a readable .safetensors file") as err:
        build_unet(paper_model_cfg(weights=str(truncated)), NUM_CLASSES, 3)
    assert str(truncated) in str(err.value) and "download the file again" in str(err.value)
    (tmp_path / "short.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(UserError, match="shorter than its 8-byte header"):
        build_unet(paper_model_cfg(weights=str(tmp_path / "short.safetensors")), NUM_CLASSES, 3)


def test_unreachable_hub_explains_how_to_get_weights(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(UserError) as err:
        build_unet(paper_model_cfg(weights=None), NUM_CLASSES, 3)
    message = str(err.value)
    assert "resnet50-19c8e357.pth" in message
    assert "TORCH_HOME/hub/checkpoints" in message and "model.weights" in message


def test_pretrained_needs_standard_width():
    from ugpcl.config import load_config
    from ugpcl.config_checks import RESNET50_WIDTH
    from ugpcl.models.resnet import STANDARD_WIDTH

    assert RESNET50_WIDTH == STANDARD_WIDTH
    with pytest.raises(UserError, match="model.pretrained is true but model.width is 16"):  # at load (config_checks)
        load_config(profile="demo", overrides=["model.pretrained=true"])


# --- position embeddings and gradients ------------------------------------------------------
@pytest.mark.parametrize("trainable", [True, False])
def test_position_embeddings_trained_or_fixed(demo_model_cfg, trainable):
    cfg = dict(demo_model_cfg, swin=dict(demo_model_cfg["swin"], train_pos_embed=trainable))
    model = build_unet(cfg, NUM_CLASSES, 1, swin=True, image_size=64)
    params = dict(model.named_parameters())
    state = model.state_dict()
    d = cfg["swin"]["embed_dim"]
    for i, (grid, dim) in enumerate([(16, d), (8, 2 * d), (4, 4 * d), (2, 8 * d)]):
        name = f"swin_decoder.pos_embed{i}"
        assert state[name].shape == (1, grid, grid, dim)
        assert (name in params and params[name].requires_grad) == trainable
        assert (name in params) == trainable


def test_gradients_reach_every_trainable_parameter(demo_model_cfg):
    torch.manual_seed(0)
    model = build_unet(
        demo_model_cfg, NUM_CLASSES, 1, swin=True, rotation_head=True, embed_stage="conv2", image_size=64
    )
    out = model.forward_heads(torch.rand(2, 1, 64, 64))
    label = torch.randint(0, NUM_CLASSES, (2, 64, 64))
    loss = (
        F.cross_entropy(out["seg"], label)
        + F.cross_entropy(out["seg_tf"], label)
        + F.cross_entropy(out["rot"], torch.tensor([1, 3]))
        + out["embed"][:, :, :4].sum()  # pixels differ, so the normalised embeddings carry gradient
    )
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_paper_size_forward_width64():
    model = build_unet(
        paper_model_cfg(pretrained=False), NUM_CLASSES, 3, swin=True, rotation_head=True, embed_stage="conv2"
    ).eval()
    assert sum(p.numel() for p in model.encoder.parameters()) == 23_508_032  # torchvision resnet50 minus fc
    stage56 = model.swin_decoder.stages[0]
    assert [b.shift_size for b in stage56.blocks] == [(0, 0), (3, 3)]
    with torch.no_grad():
        out = model.forward_heads(torch.rand(1, 3, 224, 224))
    assert out["seg"].shape == out["seg_tf"].shape == (1, NUM_CLASSES, 224, 224)
    assert out["rot"].shape == (1, 4)
    assert out["embed"].shape == (1, 256, 28, 28)
    assert [f.shape[1] for f in out["features"]] == [3, 64, 256, 512, 1024, 2048]


def test_swin_drop_path_rates_are_the_authors_slots():
    """METHODS §3.1: linspace(0, 0.1, 8) over the authors' four stages of depth 2; the decoder's
    blocks at 56, 28 and 14 px take slots 0-1, 2-3 and 4-5 (the 7 px stage has none)."""
    from ugpcl.models.swin import SwinDecoder

    decoder = SwinDecoder([1, 64, 256, 512, 1024, 2048], NUM_CLASSES, 224)
    rates = [getattr(block.drop_path, "drop_prob", 0.0) for stage in decoder.stages for block in stage.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.1, 8)[:6].tolist())
