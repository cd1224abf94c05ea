"""UNet with a ResNet-50 encoder and the optional heads of UGPCL's UNetTF (METHODS.md §3.1).

One encoder feeds a CNN UNet decoder (smp's UnetDecoder), and optionally a Swin decoder, a
rotation classifier (4 classes of rot90) and a pixel embedding head for contrastive learning.
Inputs are B x C x H x W in [0, 1], H and W multiples of 32, with no ImageNet normalisation
(the authors' code applies none).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .resnet import ResNetEncoder, load_imagenet_weights
from .swin import SwinDecoder

EMBED_STAGES = {"conv1": 2, "conv2": 3, "conv3": 4, "conv4": 5}  # stage name -> feature index (stride 4..32)


@dataclass(frozen=True)
class SwinConfig:
    """The Swin decoder: stages at strides 16, 8 and 4 (none at 32, as the authors' code)."""

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 2)
    heads: tuple[int, ...] = (3, 6, 12)
    window: int = 7
    mlp_ratio: float = 4.0
    drop_path: float = 0.1
    train_pos_embed: bool = True      # False: fixed random position embeddings, as the authors' code


@dataclass(frozen=True)
class UNetConfig:
    """Everything `build_unet` needs. Defaults: the paper's network without optional heads."""

    num_classes: int
    in_channels: int
    image_size: int = 224             # fixes the Swin decoder's position-embedding grids
    width: int = 64                   # ResNet base width; 64 is ResNet-50
    blocks: tuple[int, ...] = (3, 4, 6, 3)  # Bottleneck blocks per encoder stage; (3, 4, 6, 3) is ResNet-50
    pretrained: bool = False          # torchvision's ImageNet weights in the encoder
    weights: Path | None = None       # a local copy of them; None: torch.hub's cache (or download)
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    head_dropout: float = 0.0         # dropout before the seg head
    swin: SwinConfig | None = None    # a second, Swin decoder (UGPCL)
    rotation_head: bool = False       # the 4-class rotation classifier on f5 (UGPCL)
    rotation_dropout: float = 0.2
    embed_stage: str | None = None    # the contrastive embedding head on this encoder stage (UGPCL)
    embed_dim: int = 256


def kaiming_init(module: nn.Module) -> None:
    """The authors' init for the CNN decoder and heads: Kaiming-normal convs, trunc-normal Linear."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DecoderBlock(nn.Module):
    """Nearest x2 upsample, concat the skip (if any), two conv-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = conv_bn_relu(in_channels + skip_channels, out_channels)
        self.conv2 = conv_bn_relu(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class UNetDecoder(nn.Module):
    """smp's UnetDecoder (5 blocks, skips f4, f3, f2, f1, none) plus the 3x3 seg head.

    `forward(features)` takes the encoder list f0..f5 and returns B x num_classes x H x W logits.
    """

    def __init__(self, encoder_channels: list[int], decoder_channels, num_classes: int, head_dropout: float = 0.0):
        super().__init__()
        in_channels = [encoder_channels[5]] + list(decoder_channels[:-1])
        skip_channels = [encoder_channels[4], encoder_channels[3], encoder_channels[2], encoder_channels[1], 0]
        self.blocks = nn.ModuleList(
            DecoderBlock(i, s, o) for i, s, o in zip(in_channels, skip_channels, decoder_channels)
        )
        # element-wise, as SSL4MIS's nn.Dropout in its UNet (whole channels of this 16-channel map,
        # Dropout2d, would make UA-MT's MC passes far more different from one another)
        self.dropout = nn.Dropout(head_dropout) if head_dropout > 0 else nn.Identity()
        self.head = nn.Conv2d(decoder_channels[-1], num_classes, 3, padding=1)
        kaiming_init(self)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        skips = [features[4], features[3], features[2], features[1], None]
        x = features[5]
        for block, skip in zip(self.blocks, skips):
            x = block(x, skip)
        return self.head(self.dropout(x))


class EmbeddingHead(nn.Module):
    """conv1x1 C->C, BN, ReLU, conv1x1 C->embed_dim, L2-normalised over channels."""

    def __init__(self, in_channels: int, embed_dim: int):
        super().__init__()
        self.embed = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 1),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, embed_dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embed(x), p=2, dim=1)


class UNetR50(nn.Module):
    """ResNet-50 UNet; `forward` gives the CNN decoder's logits, `forward_heads` every head at once."""

    def __init__(
        self,
        encoder: ResNetEncoder,
        decoder: UNetDecoder,
        swin_decoder: SwinDecoder | None = None,
        rotation_head: nn.Module | None = None,
        embed_head: EmbeddingHead | None = None,
        embed_stage: str | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        self.encoder_channels = list(encoder.out_channels)
        self.decoder = decoder
        self.swin_decoder = swin_decoder
        self.rotation_head = rotation_head
        self.embed_head = embed_head
        self.embed_index = EMBED_STAGES[embed_stage] if embed_stage else None

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x))

    def rotation_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The rotation head on x, through the encoder alone (UGPCL's eq. 12 over all four turns)."""
        return self.rotation_head(self.encode(x)[5])

    def forward_heads(self, x: torch.Tensor) -> dict:
        features = self.encode(x)
        out = {"seg": self.decoder(features), "features": features}
        if self.swin_decoder is not None:
            out["seg_tf"] = self.swin_decoder(features)
        if self.rotation_head is not None:
            out["rot"] = self.rotation_head(features[5])
        if self.embed_head is not None:
            out["embed"] = self.embed_head(features[self.embed_index])
        return out


def build_decoder(config: UNetConfig, encoder_channels: list[int]) -> UNetDecoder:
    """A CNN decoder with its seg head (CCT builds its auxiliary decoders with this)."""
    return UNetDecoder(encoder_channels, config.decoder_channels, config.num_classes, config.head_dropout)


def build_unet(config: UNetConfig) -> UNetR50:
    """The network `config` describes; torchvision's ImageNet weights in the encoder when `pretrained`."""
    if config.embed_stage is not None and config.embed_stage not in EMBED_STAGES:
        raise ValueError(f"unknown embedding stage {config.embed_stage!r}; expected one of {', '.join(EMBED_STAGES)}")
    if config.image_size % 32:
        raise ValueError(f"image size {config.image_size} is not a multiple of 32")
    encoder = ResNetEncoder(config.in_channels, config.width, config.blocks)
    if config.pretrained:
        load_imagenet_weights(encoder, config.weights)
    channels = encoder.out_channels
    decoder = build_decoder(config, channels)
    swin_decoder = None
    if config.swin is not None:
        s = config.swin
        swin_decoder = SwinDecoder(channels, config.num_classes, config.image_size, embed_dim=s.embed_dim,
                                   depths=s.depths, heads=s.heads, window=s.window, mlp_ratio=s.mlp_ratio,
                                   drop_path=s.drop_path, train_pos_embed=s.train_pos_embed)
    rot = None
    if config.rotation_head:
        rot = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(config.rotation_dropout),
                            nn.Linear(channels[5], 4))
        kaiming_init(rot)
    embed = None
    if config.embed_stage is not None:
        embed = EmbeddingHead(channels[EMBED_STAGES[config.embed_stage]], config.embed_dim)
        kaiming_init(embed)
    return UNetR50(encoder, decoder, swin_decoder, rot, embed, config.embed_stage)
