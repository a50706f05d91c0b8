"""DeiT-Tiny/Small: a plain ViT with DeiT's dimensions, written for quantization.

Module names follow timm's DeiT (``patch_embed.proj``, ``blocks.0.attn.qkv``, ``head``)
so checkpoints and ``QuantSpec.exclude`` patterns carry over. Attention is written with
``nn.Linear`` (qkv, proj) and ``F.scaled_dot_product_attention`` on purpose:
``nn.MultiheadAttention`` reads its weights directly instead of calling its submodules'
forward, so ``quantize_model`` would swap nothing and the attention weights would train
in float. The patch embedding is an ``nn.Conv2d`` for the same reason: every weight
layer is a Linear or Conv2d, hence quantized.

The distillation token of DeiT is left out: the FOGZO experiments train from scratch
with plain cross-entropy, which uses only the class token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: name -> (embedding dim, depth, heads), from the DeiT paper (MLP ratio 4 for both).
DEIT_SIZES: dict[str, tuple[int, int, int]] = {
    "deit_tiny": (192, 12, 3),
    "deit_small": (384, 12, 6),
}
MLP_RATIO = 4


class Attention(nn.Module):
    """Multi-head self-attention: one qkv projection, SDPA, one output projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, MLP_RATIO * dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens, as a strided conv (so it gets quantized)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """Patch embedding + cls token + learned positions -> blocks -> LayerNorm -> head(cls)."""

    def __init__(
        self,
        image_size: tuple[int, int],
        in_channels: int,
        num_classes: int,
        patch_size: int,
        dim: int,
        depth: int,
        heads: int,
    ) -> None:
        super().__init__()
        num_patches = (image_size[0] // patch_size) * (image_size[1] // patch_size)
        self.patch_embed = PatchEmbed(in_channels, dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        # DeiT/timm init: truncated normal(0.02) for positions, cls token and Linear weights.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embed(x)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(tokens))[:, 0])


def default_patch_size(image_side: int) -> int:
    """16 for ImageNet-size images (>= 128 px); else an 8x8 token grid (4 px at 32 px).

    Patch 16 on a 32 px CIFAR image would leave 4 tokens; CIFAR ViTs use patch 4.
    """
    return 16 if image_side >= 128 else max(1, image_side // 8)


def _build(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    patch_size: int | None,
    depth: int | None,
) -> VisionTransformer:
    if len(input_shape) != 3:
        raise ValueError(f"{name} needs a (C, H, W) input_shape, got {tuple(input_shape)}")
    for option, value in (("patch_size", patch_size), ("depth", depth)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value <= 0
        ):
            raise ValueError(
                f"{name}: option {option}={value!r} must be a positive integer or null"
            )
    channels, height, width = input_shape
    patch = patch_size if patch_size is not None else default_patch_size(min(height, width))
    if height % patch or width % patch:
        raise ValueError(f"{name}: image {height}x{width} is not divisible by patch_size={patch}")
    dim, default_depth, heads = DEIT_SIZES[name]
    return VisionTransformer(
        (height, width),
        channels,
        num_classes,
        patch,
        dim,
        depth if depth is not None else default_depth,
        heads,
    )


def build_deit_tiny(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    patch_size: int | None = None,
    depth: int | None = None,
) -> VisionTransformer:
    """DeiT-Tiny: dim 192, 12 blocks, 3 heads. ``depth`` overrides the block count (smoke
    runs); ``patch_size=None`` picks 16 for >= 128 px images, else side // 8."""
    return _build("deit_tiny", input_shape, num_classes, patch_size, depth)


def build_deit_small(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    patch_size: int | None = None,
    depth: int | None = None,
) -> VisionTransformer:
    """DeiT-Small: dim 384, 12 blocks, 6 heads; options as for ``build_deit_tiny``."""
    return _build("deit_small", input_shape, num_classes, patch_size, depth)
