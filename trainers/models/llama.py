"""A small LLaMA-style decoder for the FOGZO paper's W2A2 language-modelling experiment.

Pre-RMSNorm blocks of causal self-attention with rotary position embeddings and a SwiGLU
MLP, a final RMSNorm and an untied LM head. Every weight matrix except the token
embedding is a plain ``nn.Linear`` (no bias), so ``quantize_model`` swaps all of them,
the head included; the embedding is a lookup table, not a matmul, and stays float.

The forward is functional in its parameters (no in-place writes to parameters or
buffers), so the zeroth-order estimators can evaluate perturbed copies with
``torch.func.vmap`` over ``functional_call``. The rotary tables are non-persistent
buffers computed once at build time: they move with ``.to(device)`` but never enter a
``state_dict`` nor the estimators' perturbations (those touch parameters only).

Named sizes (vocabulary 32,000, sequence length irrelevant: rotary adds no parameters)::

    size   dim  depth heads  ffn   parameters
    95m    640   11    10   1792    96,844,160
    200m   896   14    14   2560   198,665,600
    300m  1024   18    16   2816   296,784,896

Per block ``4 dim^2 + 3 dim ffn + 2 dim``; plus ``2 vocab dim + dim`` for the embedding,
the head and the final norm. ``ffn`` follows LLaMA's rule (``8 dim / 3`` rounded up to a
multiple of 256) and head_dim is 64 for every paper-scale size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: name -> (dim, depth, heads). tiny is a smoke model (trains in seconds on a CPU).
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (64, 2, 4),
    "small": (256, 4, 4),
    "95m": (640, 11, 10),
    "200m": (896, 14, 14),
    "300m": (1024, 18, 16),
}

ROPE_BASE = 10_000.0
INIT_STD = 0.02


def ffn_dim(dim: int, multiple_of: int = 256) -> int:
    """LLaMA's SwiGLU width: two thirds of 4*dim (same FLOPs as a 4*dim GELU MLP), rounded up."""
    hidden = int(8 * dim / 3)
    return multiple_of * math.ceil(hidden / multiple_of)


def llama_num_params(vocab: int, dim: int, depth: int, ffn: int | None = None) -> int:
    """Closed-form parameter count, to check the named sizes without building them."""
    ffn = ffn_dim(dim) if ffn is None else ffn
    return 2 * vocab * dim + dim + depth * (4 * dim * dim + 3 * dim * ffn + 2 * dim)


def rotary_tables(
    seq_len: int, head_dim: int, base: float = ROPE_BASE, device: torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """cos/sin tables ``[seq_len, head_dim]`` for the rotate-half (GPT-NeoX) layout.

    Pair i of a head (coordinates i and i + head_dim/2) turns by angle ``t * base^(-2i/d)``
    at position t; rotations compose, so ``rot_t(q) . rot_s(k) = q . rot_{s-t}(k)``
    depends on the offset s - t only (relative positions, with no parameters).
    """
    if head_dim % 2:
        raise ValueError(f"llama: rotary embeddings need an even head_dim, got {head_dim}")
    inv_freq = base ** (
        -torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim
    )
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each coordinate pair of ``x [..., T, head_dim]`` by its position's angle."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


class RMSNorm(nn.Module):
    """``x / rms(x) * weight``; written out (not nn.RMSNorm) so it is plainly vmap-safe."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    """Multi-head causal self-attention with rotary queries and keys."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        # [B, T, dim] -> [B, heads, T, head_dim]
        q, k, v = (
            proj(x).unflatten(-1, (self.heads, -1)).transpose(-3, -2)
            for proj in (self.q, self.k, self.v)
        )
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(out.transpose(-3, -2).flatten(-2))


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``: LLaMA's gated MLP."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    """Pre-norm residual block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp_norm = RMSNorm(dim)
        self.mlp = SwiGLU(dim, hidden)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    """Token ids ``[B, T]`` (T <= max_seq_len) -> next-token logits ``[B, T, vocab]``."""

    def __init__(self, vocab: int, max_seq_len: int, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"llama: dim={dim} must be divisible by heads={heads}")
        self.max_seq_len = max_seq_len
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, ffn_dim(dim)) for _ in range(depth))
        self.norm = RMSNorm(dim)
        self.head = nn.Linear(
            dim, vocab, bias=False
        )  # untied, registered last: quantize_model's "last" layer
        cos, sin = rotary_tables(max_seq_len, dim // heads)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self._init_weights(depth)

    def _init_weights(self, depth: int) -> None:
        # LLaMA/GPT-2 style: N(0, 0.02) everywhere; the two projections that write into the
        # residual stream shrink with depth so its variance stays O(1) at init.
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue  # RMSNorm gains stay 1
            residual = name.endswith(("attn.o.weight", "mlp.down.weight"))
            nn.init.normal_(p, std=INIT_STD / math.sqrt(2 * depth) if residual else INIT_STD)

    def forward(self, tokens: Tensor) -> Tensor:
        seq_len = tokens.shape[-1]
        if seq_len > self.max_seq_len:
            raise ValueError(
                f"llama: sequence of {seq_len} tokens exceeds max_seq_len={self.max_seq_len}"
            )
        cos, sin = self.rope_cos[:seq_len], self.rope_sin[:seq_len]
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.head(self.norm(x))


def build_llama(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    size: str = "tiny",
    dim: int = 0,
    depth: int = 0,
    heads: int = 0,
) -> Llama:
    """A LLaMA-style decoder over ``num_classes`` tokens with context ``input_shape == (T,)``.

    ``size`` picks (dim, depth, heads) from ``SIZES``; a positive ``dim``, ``depth`` or
    ``heads`` overrides that entry (the SwiGLU width always follows ``ffn_dim(dim)``).
    Build under ``torch.device("meta")`` to inspect a large size without allocating it.
    """
    if size not in SIZES:
        raise ValueError(f"llama: unknown size {size!r}; valid sizes: {', '.join(SIZES)}")
    if len(input_shape) != 1:
        raise ValueError(f"llama: input_shape must be (seq_len,), got {tuple(input_shape)}")
    base_dim, base_depth, base_heads = SIZES[size]
    return Llama(
        vocab=num_classes,
        max_seq_len=int(input_shape[0]),
        dim=dim or base_dim,
        depth=depth or base_depth,
        heads=heads or base_heads,
    )
