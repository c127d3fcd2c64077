"""LLaVA-1.5 as llama.cpp computes it, in PyTorch, small enough to train on a CPU.

Vision (tools/mtmd/models/llava.cpp, clip_graph_llava): patch conv without bias, the class
embedding concatenated AFTER the patches (ggml_concat(inp, class_embd, 1)), position embeddings
0..n in that order, pre-layernorm, `layers_run` pre-LN blocks (LN -> attention with biases ->
residual, LN -> fc1 -> quick-GELU -> fc2 -> residual). The GGUF stores one more block than is run
(clip.cpp runs all but the last stored one: LLaVA's penultimate layer). The projector takes rows
1..n of the sequence (llama.cpp's `patches` = i + 1: patches 1..n-1 and then the class token),
then mm.0 -> GELU (ggml_gelu, the tanh form) -> mm.2.

Text (src/models/llama.cpp): token embedding, blocks of RMSNorm -> attention (no biases, RoPE in
ggml's normal mode: adjacent pairs rotated, no q/k permutation needed since we export our own
layout) -> residual, RMSNorm -> SwiGLU -> residual; final RMSNorm; untied output matrix.
"""
import math
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class Config:
    image_size: int = 112
    patch_size: int = 14
    v_width: int = 128
    v_heads: int = 4
    v_ffn: int = 512
    v_layers_run: int = 3  # the GGUF stores v_layers_run + 1
    v_eps: float = 1e-5
    t_width: int = 192
    t_heads: int = 4
    t_layers: int = 4
    t_ffn: int = 512
    rope_base: float = 10000.0
    rms_eps: float = 1e-5
    vocab: int = 0
    context: int = 2048

    @property
    def n_patches(self):
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self):
        return asdict(self)


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


class VisionBlock(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        w = c.v_width
        self.heads = c.v_heads
        self.ln1 = nn.LayerNorm(w, eps=c.v_eps)
        self.q = nn.Linear(w, w)
        self.k = nn.Linear(w, w)
        self.v = nn.Linear(w, w)
        self.o = nn.Linear(w, w)
        self.ln2 = nn.LayerNorm(w, eps=c.v_eps)
        self.fc1 = nn.Linear(w, c.v_ffn)
        self.fc2 = nn.Linear(c.v_ffn, w)

    def forward(self, x):
        b, n, w = x.shape
        h = self.ln1(x)
        d = w // self.heads
        q = self.q(h).view(b, n, self.heads, d).transpose(1, 2)
        k = self.k(h).view(b, n, self.heads, d).transpose(1, 2)
        v = self.v(h).view(b, n, self.heads, d).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        a = (att @ v).transpose(1, 2).reshape(b, n, w)
        x = x + self.o(a)
        return x + self.fc2(quick_gelu(self.fc1(self.ln2(x))))


class Vision(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        w = c.v_width
        self.patch = nn.Conv2d(3, w, c.patch_size, c.patch_size, bias=False)
        self.cls = nn.Parameter(torch.randn(w) * 0.02)
        self.pos = nn.Parameter(torch.randn(c.n_patches + 1, w) * 0.02)
        self.pre_ln = nn.LayerNorm(w, eps=c.v_eps)
        self.blocks = nn.ModuleList([VisionBlock(c) for _ in range(c.v_layers_run)])
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, pixels_u8):
        """pixels_u8: [B, S, S, 3] uint8 (the prepared image). Returns the whole sequence [B, n+1, W]:
        patch tokens 0..n-1 in raster order, then the class token."""
        x = (pixels_u8.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        p = self.patch(x).flatten(2).transpose(1, 2)
        seq = torch.cat([p, self.cls.view(1, 1, -1).expand(p.shape[0], 1, -1)], dim=1)
        seq = self.pre_ln(seq + self.pos)
        for blk in self.blocks:
            seq = blk(seq)
        return seq

    @staticmethod
    def llava_features(seq):
        """What llama.cpp hands the projector: rows 1..n of the sequence."""
        return seq[:, 1:]


class Projector(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.mm0 = nn.Linear(c.v_width, c.t_width)
        self.mm2 = nn.Linear(c.t_width, c.t_width)

    def forward(self, f):
        return self.mm2(gelu_tanh(self.mm0(f)))


class RMSNorm(nn.Module):
    def __init__(self, w, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(w))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, pos, base):
    """ggml rope mode 0 (LLAMA_ROPE_TYPE_NORM): rotate adjacent pairs (x[2i], x[2i+1]).
    x: [B, H, L, D]; pos: [L]."""
    d = x.shape[-1]
    inv = base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
    ang = pos.float()[:, None] * inv[None, :]
    cos, sin = torch.cos(ang), torch.sin(ang)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    r0 = x0 * cos - x1 * sin
    r1 = x0 * sin + x1 * cos
    return torch.stack([r0, r1], dim=-1).flatten(-2)


class TextBlock(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        w = c.t_width
        self.heads = c.t_heads
        self.base = c.rope_base
        self.attn_norm = RMSNorm(w, c.rms_eps)
        self.q = nn.Linear(w, w, bias=False)
        self.k = nn.Linear(w, w, bias=False)
        self.v = nn.Linear(w, w, bias=False)
        self.o = nn.Linear(w, w, bias=False)
        self.ffn_norm = RMSNorm(w, c.rms_eps)
        self.gate = nn.Linear(w, c.t_ffn, bias=False)
        self.up = nn.Linear(w, c.t_ffn, bias=False)
        self.down = nn.Linear(c.t_ffn, w, bias=False)
        # training only: keep head 0's attention weights and the block's output of the last forward
        # (train.py's lookup supervision)
        self.keep_internals = False
        self.attention = None
        self.hidden = None

    def forward(self, x, pos, mask, cache=None):
        b, n, w = x.shape
        d = w // self.heads
        h = self.attn_norm(x)
        q = rope(self.q(h).view(b, n, self.heads, d).transpose(1, 2), pos, self.base)
        k = rope(self.k(h).view(b, n, self.heads, d).transpose(1, 2), pos, self.base)
        v = self.v(h).view(b, n, self.heads, d).transpose(1, 2)
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        s = (q @ k.transpose(-1, -2)) / math.sqrt(d) + mask
        att = torch.softmax(s, dim=-1)
        if self.keep_internals:
            self.attention = att[:, 0]
        a = (att @ v).transpose(1, 2).reshape(b, n, w)
        x = x + self.o(a)
        h = self.ffn_norm(x)
        out = x + self.down(F.silu(self.gate(h)) * self.up(h))
        if self.keep_internals:
            self.hidden = out
        return out


class Text(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c.vocab, c.t_width)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.blocks = nn.ModuleList([TextBlock(c) for _ in range(c.t_layers)])
        self.norm = RMSNorm(c.t_width, c.rms_eps)
        self.output = nn.Linear(c.t_width, c.vocab, bias=False)

    def forward(self, emb, caches=None, select=None):
        """emb: [B, L, T] input embeddings (images already in place). Returns logits [B, L, V].
        With `caches` (a list of dicts, one per block, for batch 1 inference), continues after the
        positions already cached."""
        n = emb.shape[1]
        start = 0 if caches is None or "k" not in caches[0] else caches[0]["k"].shape[2]
        pos = torch.arange(start, start + n)
        mask = torch.full((n, start + n), float("-inf")).triu(start + 1)
        x = emb
        for i, blk in enumerate(self.blocks):
            x = blk(x, pos, mask, None if caches is None else caches[i])
        if select is not None:  # a bool mask [B, L]: logits of those positions only, flattened
            x = x[select]
        return self.output(self.norm(x))


class Llava(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.vision = Vision(c)
        self.projector = Projector(c)
        self.text = Text(c)

    def image_embeddings(self, pixels_u8):
        return self.projector(Vision.llava_features(self.vision(pixels_u8)))

    def embed(self, ids, images):
        """ids: [B, L] long, image token positions hold -1 (first image) or -2 (second image).
        images: dict slot(-1/-2) -> [B, n, T] projected embeddings (rows for samples without that
        image are ignored). Returns [B, L, T]."""
        emb = self.text.embed(ids.clamp(min=0))
        for slot, feats in images.items():
            m = ids == slot
            if m.any():
                # each row has exactly n positions of this slot, in order
                rows = m.any(1)
                emb = emb.clone() if not emb.requires_grad else emb
                emb[m] = feats[rows].reshape(-1, feats.shape[-1]).to(emb.dtype)
        return emb
