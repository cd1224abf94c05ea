"""The Swin-UNet-style decoder of UGPCL (METHODS.md §3.1): encoder maps f2..f5 become tokens at
strides 4..32, and a transformer decoder upsamples them with skip connections to full resolution.

Tokens are kept channels-last (B x H x W x C), the layout MONAI's Swin blocks take. MONAI is
imported when a decoder is built, not with this module: `import monai` loads every MONAI
submodule (about 2 s), and every `ugpcl` command imports the model registry, most only for its
names.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class PatchEmbed(nn.Module):
    """1x1 conv (patch size 1) to `dim` channels, then LayerNorm over channels; returns B x H x W x dim."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, 1)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchExpand(nn.Module):
    """Linear dim -> scale^2 * dim / factor, rearranged into a scale x scale larger grid, LayerNorm.

    scale 2: dim -> dim / 2 channels (Linear d -> 2d); scale 4 (final): dim -> dim (Linear d -> 16d).
    """

    def __init__(self, dim: int, scale: int, out_dim: int):
        super().__init__()
        self.scale = scale
        self.expand = nn.Linear(dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rearrange(self.expand(x), "b h w (p1 p2 c) -> b (h p1) (w p2) c", p1=self.scale, p2=self.scale)
        return self.norm(x)


class SwinStage(nn.Module):
    """`depth` Swin blocks on a fixed `size` x `size` token map; windows adapt to small maps."""

    def __init__(self, dim: int, size: int, depth: int, heads: int, window: int, mlp_ratio: float, drop_path):
        super().__init__()
        from monai.networks.nets.swin_unetr import SwinTransformerBlock, compute_mask

        window = min(window, size)
        shift = window // 2 if size > window else 0
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim,
                heads,
                window_size=(window, window),
                shift_size=(shift, shift) if i % 2 else (0, 0),
                mlp_ratio=mlp_ratio,
                qkv_bias=True,
                drop_path=drop_path[i],
            )
            for i in range(depth)
        )
        padded = -(-size // window) * window  # MONAI pads the map to a multiple of the window
        mask = compute_mask([padded, padded], (window, window), (shift, shift), None) if shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x, self.attn_mask if i % 2 else None)
        return x


class SwinDecoder(nn.Module):
    """f2..f5 (strides 4..32) -> logits at full resolution.

    Position embeddings are absolute, one per token grid of the `image_size` input. With
    `train_pos_embed` false they are fixed buffers: saved with the model but never trained,
    like the authors' code (which keeps them in an unregistered list).
    """

    def __init__(
        self,
        encoder_channels: list[int],
        num_classes: int,
        image_size: int,
        embed_dim: int = 96,
        depths=(2, 2, 2),
        heads=(3, 6, 12),
        window: int = 7,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.1,
        train_pos_embed: bool = True,
    ):
        super().__init__()
        for i, h in enumerate(heads):
            if (embed_dim * 2**i) % h:
                raise ValueError(f"heads[{i}] = {h} does not divide the stage width embed_dim * 2**{i} = {embed_dim * 2**i}")
        self.image_size = image_size
        dims = [embed_dim * 2**i for i in range(4)]  # strides 4, 8, 16, 32
        sizes = [image_size // 2 ** (i + 2) for i in range(4)]
        self.embeds = nn.ModuleList(PatchEmbed(c, d) for c, d in zip(encoder_channels[2:6], dims))
        for i, (d, s) in enumerate(zip(dims, sizes)):
            pos = nn.init.trunc_normal_(torch.empty(1, s, s, d), std=0.02)
            if train_pos_embed:
                self.register_parameter(f"pos_embed{i}", nn.Parameter(pos))
            else:
                self.register_buffer(f"pos_embed{i}", pos)

        # The authors' rates span the depths of four stages, [2, 2, 2, 2]: their decoder builds no
        # blocks for the fourth (7 px), so its slots go unused and the last block used gets 5/7 of
        # drop_path (METHODS §3.1: linspace(0, 0.1, 8), slots 0-5). A fourth stage as deep as the last.
        rates = torch.linspace(0, drop_path, sum(depths) + depths[-1]).tolist()
        starts = [sum(depths[:i]) for i in range(3)]
        # Decoder stages run from stride 16 (index 2) up to stride 4 (index 0).
        self.expands = nn.ModuleList(PatchExpand(dims[i + 1], 2, dims[i]) for i in range(3))
        self.concat_proj = nn.ModuleList(nn.Linear(2 * dims[i], dims[i]) for i in range(3))
        self.stages = nn.ModuleList(
            SwinStage(dims[i], sizes[i], depths[i], heads[i], window, mlp_ratio, rates[starts[i] :])
            for i in range(3)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.final_expand = PatchExpand(embed_dim, 4, embed_dim)
        self.output = nn.Conv2d(embed_dim, num_classes, 1, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if features[2].shape[-2:] != (self.image_size // 4,) * 2:
            raise ValueError(
                f"the Swin decoder was built for {self.image_size} px inputs (position embeddings), "
                f"got {features[0].shape[-2]} x {features[0].shape[-1]}"
            )
        tokens = [
            embed(f) + getattr(self, f"pos_embed{i}") for i, (embed, f) in enumerate(zip(self.embeds, features[2:]))
        ]
        x = tokens[3]
        for i in (2, 1, 0):
            x = self.expands[i](x)
            x = self.concat_proj[i](torch.cat([x, tokens[i]], dim=-1))
            x = self.stages[i](x)
        x = self.final_expand(self.norm(x))
        return self.output(x.permute(0, 3, 1, 2))
