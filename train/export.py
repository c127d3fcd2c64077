"""Exports a trained checkpoint as raw weights that lib/models/demo-model.ts writes into a LLaVA-1.5
GGUF pair (the text model and its mmproj, projector type `mlp`).

  /usr/bin/python3 train/export.py CHECKPOINT OUT_DIR

OUT_DIR gets weights.bin (float32, little-endian, tensors one after another) and weights.json
(config and, per tensor, its GGUF name, file, ggml shape, type and offset). A tensor's ggml shape
is its PyTorch shape reversed and its bytes are PyTorch's contiguous bytes: ggml's ne[0] is the
innermost dimension. Matrices are stored F16, vectors F32 (what llama.cpp's converters do); the
weights written are already rounded to F16 where stored so, and OUT_DIR/rounded.pt holds the model
with exactly the shipped values, for the parity check.
"""
import json
import os
import sys

import numpy as np
import torch

from model import Config, Llava


def tensors(model: Llava):
    c = model.c
    v, p, t = model.vision, model.projector, model.text
    mm = [
        ("mm.0.weight", p.mm0.weight), ("mm.0.bias", p.mm0.bias),
        ("mm.2.weight", p.mm2.weight), ("mm.2.bias", p.mm2.bias),
        ("v.class_embd", v.cls), ("v.patch_embd.weight", v.patch.weight),
        ("v.position_embd.weight", v.pos),
        ("v.pre_ln.weight", v.pre_ln.weight), ("v.pre_ln.bias", v.pre_ln.bias),
    ]
    blocks = list(v.blocks)
    for i in range(c.v_layers_run + 1):
        # clip.cpp runs all stored layers but the last: the last is stored (zeros) and never run.
        b = blocks[i] if i < len(blocks) else None
        z = lambda *shape: torch.zeros(*shape)
        w, f = c.v_width, c.v_ffn
        pre = f"v.blk.{i}"
        mm += [
            (f"{pre}.attn_k.weight", b.k.weight if b else z(w, w)), (f"{pre}.attn_k.bias", b.k.bias if b else z(w)),
            (f"{pre}.attn_v.weight", b.v.weight if b else z(w, w)), (f"{pre}.attn_v.bias", b.v.bias if b else z(w)),
            (f"{pre}.attn_q.weight", b.q.weight if b else z(w, w)), (f"{pre}.attn_q.bias", b.q.bias if b else z(w)),
            (f"{pre}.attn_out.weight", b.o.weight if b else z(w, w)), (f"{pre}.attn_out.bias", b.o.bias if b else z(w)),
            (f"{pre}.ln1.weight", b.ln1.weight if b else z(w)), (f"{pre}.ln1.bias", b.ln1.bias if b else z(w)),
            # legacy names: ffn_down holds fc1 (width -> ffn), ffn_up fc2; clip.cpp swaps them back
            (f"{pre}.ffn_down.weight", b.fc1.weight if b else z(f, w)), (f"{pre}.ffn_down.bias", b.fc1.bias if b else z(f)),
            (f"{pre}.ffn_up.weight", b.fc2.weight if b else z(w, f)), (f"{pre}.ffn_up.bias", b.fc2.bias if b else z(w)),
            (f"{pre}.ln2.weight", b.ln2.weight if b else z(w)), (f"{pre}.ln2.bias", b.ln2.bias if b else z(w)),
        ]
    text = [("token_embd.weight", t.embed.weight)]
    for i, b in enumerate(t.blocks):
        pre = f"blk.{i}"
        text += [
            (f"{pre}.attn_norm.weight", b.attn_norm.weight),
            (f"{pre}.attn_q.weight", b.q.weight), (f"{pre}.attn_k.weight", b.k.weight),
            (f"{pre}.attn_v.weight", b.v.weight), (f"{pre}.attn_output.weight", b.o.weight),
            (f"{pre}.ffn_norm.weight", b.ffn_norm.weight),
            (f"{pre}.ffn_gate.weight", b.gate.weight), (f"{pre}.ffn_up.weight", b.up.weight),
            (f"{pre}.ffn_down.weight", b.down.weight),
        ]
    text += [("output_norm.weight", t.norm.weight), ("output.weight", t.output.weight)]
    return [("mmproj", n, x) for n, x in mm] + [("text", n, x) for n, x in text]


def round_to_f16(model: Llava):
    """Rounds every tensor stored as F16 (2-D and up) to F16 in place."""
    with torch.no_grad():
        for _, _, x in tensors(model):
            if x.dim() >= 2 and isinstance(x, torch.nn.Parameter):
                x.copy_(x.half().float())


def load(path):
    st = torch.load(path)
    cfg = Config(**st["config"])
    model = Llava(cfg)
    model.load_state_dict(st["model"])
    model.eval()
    return model


def export(ckpt, out):
    model = load(ckpt)
    round_to_f16(model)
    os.makedirs(out, exist_ok=True)
    manifest = {"config": model.c.to_dict(), "tensors": []}
    offset = 0
    with open(os.path.join(out, "weights.bin"), "wb") as f:
        for file, name, x in tensors(model):
            a = x.detach().float().contiguous().numpy().astype("<f4")
            f.write(a.tobytes())
            manifest["tensors"].append({
                "file": file, "name": name, "shape": list(reversed(a.shape)),
                "type": "f16" if a.ndim >= 2 else "f32", "offset": offset, "count": int(a.size),
            })
            offset += a.nbytes
    with open(os.path.join(out, "weights.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    torch.save({"model": model.state_dict(), "config": model.c.to_dict()}, os.path.join(out, "rounded.pt"))
    print(f"{len(manifest['tensors'])} tensors, {offset / 1e6:.1f} MB f32 -> {out}")


if __name__ == "__main__":
    export(sys.argv[1], sys.argv[2])
