"""ResNet-50 encoder with torchvision's parameter names, so its ImageNet weights load as they are.

`width` is the base width (64 = ResNet-50); every channel count scales with it, so stage
outputs are [w, 4w, 8w, 16w, 32w]. The forward returns the six feature maps smp's encoder
returns: the input, then strides 2, 4, 8, 16 and 32.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError

IMAGENET_FILE = "resnet50-19c8e357.pth"  # torchvision V1 weights, as smp uses
IMAGENET_URL = f"https://download.pytorch.org/models/{IMAGENET_FILE}"
IMAGENET_HASH_PREFIX = "19c8e357"  # torch.hub's check_hash: the SHA-256 starts with the digits in the name
STANDARD_WIDTH = 64
EXPANSION = 4


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (stride on the 3x3 conv)."""

    def __init__(self, in_channels: int, planes: int, stride: int = 1):
        super().__init__()
        out_channels = planes * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetEncoder(nn.Module):
    """Bottleneck ResNet [3, 4, 6, 3]; `out_channels` lists the channels of f0..f5."""

    def __init__(self, in_channels: int = 3, width: int = STANDARD_WIDTH, blocks=(3, 4, 6, 3)):
        super().__init__()
        self.in_channels = in_channels
        self.width = width
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = width
        for i, n in enumerate(blocks):
            planes = width * 2**i
            stride = 1 if i == 0 else 2
            layer = [Bottleneck(channels, planes, stride)]
            channels = planes * EXPANSION
            layer += [Bottleneck(channels, planes) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.out_channels = [in_channels, width] + [width * 2**i * EXPANSION for i in range(len(blocks))]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.relu(self.bn1(self.conv1(x)))
        f2 = self.layer1(self.maxpool(f1))
        f3 = self.layer2(f2)
        f4 = self.layer3(f3)
        f5 = self.layer4(f4)
        return [x, f1, f2, f3, f4, f5]


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Turn the RGB conv1 weight (O x 3 x k x k) into one for `in_channels` inputs (as smp does).

    Grey: the channel sum, which on a grey image equals the RGB net fed the grey image repeated.
    Otherwise: the RGB channels repeated cyclically and scaled by 3 / in_channels.
    """
    if in_channels == weight.shape[1]:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    index = torch.arange(in_channels) % weight.shape[1]
    return weight[:, index] * (weight.shape[1] / in_channels)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()

# The safetensors format (huggingface/safetensors, README "Format"): an 8-byte little-endian header
# length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
# then the tensors' bytes, little-endian and C-contiguous, offsets relative to the end of the header.
# Hugging Face's caches hold timm's copy of torchvision's weights (resnet50.tv_in1k) in this form.
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file, read without executing anything (it is plain data)."""
    data = Path(path).read_bytes()

    def corrupt(why: str) -> UserError:
        return UserError(f"not a readable .safetensors file: {why}", path=path,
                         fix="download the file again (or give torchvision's resnet50 .pth instead)")

    if len(data) < 8:
        raise corrupt(f"{len(data)} bytes, shorter than its 8-byte header length")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise corrupt(f"its header claims {size} bytes, the file holds {len(data) - 8} after the length")
    try:
        header = json.loads(data[8:8 + size])
    except ValueError as exc:
        raise corrupt(f"its header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise corrupt("its header is not a JSON object")
    body = memoryview(data)[8 + size:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = SAFETENSORS_DTYPES[entry["dtype"]]
            shape = [int(n) for n in entry["shape"]]
            begin, end = (int(n) for n in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise corrupt(f"tensor {name!r} has an unsupported or malformed entry {entry!r}") from exc
        nbytes = math.prod(shape) * dtype.itemsize
        if not 0 <= begin <= end <= len(body) or end - begin != nbytes:
            raise corrupt(f"tensor {name!r}: bytes [{begin}, {end}) do not hold {entry['dtype']} {shape} "
                          f"within the {len(body)} data bytes")
        raw = bytearray(body[begin:end])  # a writable copy: torch.frombuffer shares memory
        flat = torch.frombuffer(raw, dtype=dtype) if nbytes else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(shape)
    return tensors


def _read_state_dict(weights_path: str | Path | None) -> tuple[dict, str]:
    """The state dict at `weights_path`, or from torch.hub's cache / download when None.

    Always loaded with weights_only=True (a pickle cannot run code). torchvision's file carries
    the first digits of its SHA-256 in its name (resnet50-19c8e357.pth): the hub copy is checked
    against them, and so is a local file of that name; a file of another name is the user's own
    ResNet-50 weights, loaded as they are (their keys and shapes are checked below). A .safetensors
    file (timm's resnet50.tv_in1k in a Hugging Face cache holds torchvision's weights under the same
    names) is read as plain data.
    """
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise UserError("ResNet-50 weights file not found", path=path,
                            fix=f"download {IMAGENET_URL} to that path")
        if path.name == IMAGENET_FILE and not _sha256(path).startswith(IMAGENET_HASH_PREFIX):
            raise UserError(f"SHA-256 does not start with {IMAGENET_HASH_PREFIX}, the published hash of {IMAGENET_FILE}",
                            path=path, fix=f"the file is corrupt or another one: download {IMAGENET_URL} again")
        if path.suffix == ".safetensors":
            return read_safetensors(path), str(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch.load raises many types for a corrupt, foreign or unsafe file
            raise UserError(
                f"cannot read the ResNet-50 weights ({type(exc).__name__}: {exc})",
                path=path,
                fix=f"download {IMAGENET_URL} again to that path (a torchvision resnet50 state dict)",
            ) from exc
        source = str(path)
    else:
        try:
            state = torch.hub.load_state_dict_from_url(IMAGENET_URL, map_location="cpu", progress=False,
                                                       check_hash=True, weights_only=True)
        except Exception as exc:  # no network, proxy errors, a broken or tampered cache file
            raise UserError(
                f"cannot get the ImageNet ResNet-50 weights from the torch.hub cache or {IMAGENET_URL} "
                f"({type(exc).__name__}: {exc})",
                fix=f"on a machine with network, download {IMAGENET_URL} into $TORCH_HOME/hub/checkpoints/ "
                "(default ~/.cache/torch/hub/checkpoints/) on this machine, or give the file's path "
                "(params.yaml: model.weights), or train from scratch (model.pretrained: false)",
            ) from exc
        source = IMAGENET_URL
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(
            "not a state dict (a mapping of parameter names to tensors)",
            path=source,
            fix=f"use torchvision's resnet50 state dict, {IMAGENET_URL}",
        )
    return state, source


def load_imagenet_weights(model: ResNetEncoder, weights_path: str | Path | None = None) -> None:
    """Load torchvision's ImageNet resnet50 weights into `model` (strict keys, `fc.*` ignored).

    `weights_path`: a local copy of the state dict; None reads torch.hub's cache (downloading once).
    """
    if model.width != STANDARD_WIDTH:
        raise ValueError(f"ImageNet weights exist only for ResNet-50 width {STANDARD_WIDTH}, not width {model.width}")
    state, source = _read_state_dict(weights_path)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if "conv1.weight" in state:
        state["conv1.weight"] = adapt_first_conv(state["conv1.weight"], model.in_channels)
    expected = model.state_dict()
    # Weights saved before PyTorch 0.4.1 have no BN counters; BatchNorm fills those in itself.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong_shape:
        problems = []
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                problems.append(f"{len(keys)} {title} ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})")
        raise UserError(
            "not a torchvision resnet50 state dict: " + "; ".join(problems),
            path=source,
            fix=f"use torchvision's resnet50 weights, {IMAGENET_URL}",
        )
    model.load_state_dict(state, strict=False)
