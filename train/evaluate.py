"""Scores the demo model on a scenes set, in PyTorch and (with --package) as the package ran it.

  /usr/bin/python3 train/evaluate.py CHECKPOINT SCENES_DIR TOKENS_JSONL VOCAB_JSON
      [--package RUN_JSONL [--package-pid PID] [--package-timeout SECONDS]] [--out REPORT_JSON]

PyTorch runs both conversations greedily from the same token ids as the SDK (train/tokenize.js):
turn one from the original image (up to 48 tokens), the region cropped and zoomed exactly as
lib/image/image.ts does (Pillow), turn two continuing the same sequence (up to 16 tokens); the
baseline is one plain turn. Turn one is unconstrained here, where the SDK (package-run.js asks
with the defaults) generates it under the box grammar (BOX_GRAMMAR, lib/procedure/box.ts). So a
box is read back only when turn one's text is exactly the grammar's format (BOX_RE, the same
format as BOX_PATTERN), else the region is the whole padded image. Where each greedy token of
turn one is one the grammar admits and the box is followed by </s>, the two generate the same
tokens; where the model strays, the grammar keeps the SDK's box well formed and PyTorch falls back
(the rate of well-formed boxes is reported).

Reported: exact-match accuracy of both, the rate of turn-one boxes with IoU >= 0.5 against the
true box (also per background kind and per tag colour), and, with --package, the same for the
package plus how often the package's outputs equal PyTorch's and the largest logit difference on
the questions the run recorded logits for. With --package it waits, after PyTorch's run, for
RUN_JSONL.done (package-run.js writes it last) and fails if process PID ends first or SECONDS
(default 3600) pass.
"""
import argparse
import json
import os
import re
import sys
import time

import numpy as np
import torch
from PIL import Image

import data
from export import load
from package_wait import wait_for_package

EOS = 2
BOX_RE = re.compile(r"^ ?\[(0\.0|1\.0|0\.[0-9]{0,2}[1-9]), (0\.0|1\.0|0\.[0-9]{0,2}[1-9]), (0\.0|1\.0|0\.[0-9]{0,2}[1-9]), (0\.0|1\.0|0\.[0-9]{0,2}[1-9])\]$")


def detok(pieces, ids):
    out = bytearray()
    for i in ids:
        p = pieces[i]
        m = re.fullmatch(r"<0x([0-9A-F]{2})>", p)
        if m:
            out.append(int(m.group(1), 16))
        elif p in ("<s>", "</s>", "<unk>"):
            continue
        else:
            out += p.replace("\u2581", " ").encode()
    return out.decode("utf-8", errors="replace")


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


class Runner:
    def __init__(self, model):
        self.m = model
        self.n = model.c.n_patches
        self.size = model.c.image_size

    def image_emb(self, pixels):
        return self.m.image_embeddings(torch.from_numpy(pixels)[None])

    def embed(self, ids, images):
        out = []
        for t in ids:
            if t < 0:
                out.append(images[t][0])
            else:
                out.append(self.m.text.embed(torch.tensor([t])))
        return torch.cat(out)[None]

    def generate(self, caches, emb, max_tokens):
        logits = self.m.text(emb, caches)[0, -1]
        first = logits.clone()
        toks = []
        for _ in range(max_tokens):
            t = int(logits.argmax())
            if t == EOS:
                break
            toks.append(t)
            logits = self.m.text(self.m.text.embed(torch.tensor([[t]])), caches)[0, -1]
        return toks, first

    @torch.no_grad()
    def ask(self, square_img, tok, pieces, max_box=48, max_ans=16):
        caches = [dict() for _ in self.m.text.blocks]
        whole = np.asarray(square_img.resize((self.size, self.size), Image.BICUBIC), dtype=np.uint8)
        e1 = self.embed(tok["t1"], {-1: self.image_emb(whole)})
        box_toks, l1 = self.generate(caches, e1, max_box)
        text = detok(pieces, box_toks).strip()
        m = BOX_RE.match(text)
        box = [float(m.group(i)) for i in range(1, 5)] if m else [0.0, 0.0, 1.0, 1.0]
        if box[0] > box[2] or box[1] > box[3]:
            box = [min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])]
        region, _ = data.prepare_region(square_img, box, self.size)
        e2 = self.embed(tok["t2"], {-2: self.image_emb(region)})
        ans_toks, l2 = self.generate(caches, e2, max_ans)
        return dict(box=box, box_ok=bool(m), t1_tokens=box_toks, t2_tokens=ans_toks, answer=detok(pieces, ans_toks).strip(), logits=(l1, l2))

    @torch.no_grad()
    def baseline(self, square_img, tok, pieces, max_ans=16):
        caches = [dict() for _ in self.m.text.blocks]
        whole = np.asarray(square_img.resize((self.size, self.size), Image.BICUBIC), dtype=np.uint8)
        toks, _ = self.generate(caches, self.embed(tok["base"], {-1: self.image_emb(whole)}), max_ans)
        return dict(tokens=toks, answer=detok(pieces, toks).strip())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("scenes")
    ap.add_argument("tokens")
    ap.add_argument("vocab")
    ap.add_argument("--package")
    ap.add_argument("--package-pid", type=int, help="package-run.js's process: the wait fails if it ends without finishing")
    ap.add_argument("--package-timeout", type=float, default=3600, help="seconds to wait for the package's run after PyTorch's")
    ap.add_argument("--out")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load(args.checkpoint)
    pieces = json.load(open(args.vocab))
    tokens = data.load_tokens(args.tokens)
    qs = data.load_questions(os.path.join(args.scenes, "questions.jsonl"))
    if args.limit:
        qs = qs[: args.limit]
    run = Runner(model)
    rows, results = [], []
    t0 = time.time()
    square = None
    for i, q in enumerate(qs):
        if square is None or square[0] != q["image"]:
            square = (q["image"], data.expand2square(Image.open(os.path.join(args.scenes, q["image"])).convert("RGB")))
        tok = tokens[q["id"]]
        c = run.ask(square[1], tok, pieces)
        b = run.baseline(square[1], tok, pieces)
        results.append((q, c, b))
        gold = q["answers"][0]
        row = dict(id=q["id"], cos_ok=c["answer"] == gold, base_ok=b["answer"] == gold, iou=iou(c["box"], q["box"]), box_ok=c["box_ok"],
                   background=q["background"]["kind"], colour=q["tag"]["colour"])
        rows.append(row)
        if (i + 1) % 50 == 0:
            print(f"{i + 1}/{len(qs)} {time.time() - t0:.0f}s cos {np.mean([r['cos_ok'] for r in rows]):.3f} base {np.mean([r['base_ok'] for r in rows]):.3f}", flush=True)
    pkg = {}
    if args.package:
        try:
            wait_for_package(args.package, pid=args.package_pid, timeout=args.package_timeout)
        except RuntimeError as error:
            sys.exit(f"evaluate.py: {error}")
        with open(args.package) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    pkg[r["id"]] = r
    for (q, c, b), row in zip(results, rows):
        gold = q["answers"][0]
        p = pkg.get(q["id"])
        if p is not None:
            row.update(
                pkg_cos_ok=p["answer"] == gold, pkg_base_ok=p["base_answer"] == gold, pkg_iou=iou(p["box"], q["box"]),
                pkg_model_box=p["source"] == "model", pkg_ms=p["ask_ms"],
                same_cos=p["t1_tokens"] == c["t1_tokens"] and p["t2_tokens"] == c["t2_tokens"],
                same_base=p["base_tokens"] == b["tokens"],
            )
            if "logits" in p:
                l1, l2 = c["logits"]
                # turn two is comparable only when both continued from the same turn one
                diffs = [float((torch.tensor(p["logits"]["turnOne"]) - l1).abs().max())]
                if p["t1_tokens"] == c["t1_tokens"]:
                    diffs.append(float((torch.tensor(p["logits"]["turnTwo"]) - l2).abs().max()))
                row["logit_diff"] = max(diffs)
                row["logit_diffs"] = diffs
                row["logit_scale"] = float(l1.abs().max())
    rate = lambda k: float(np.mean([r[k] for r in rows if k in r])) if any(k in r for r in rows) else None
    report = dict(
        questions=len(rows),
        torch=dict(cos_accuracy=rate("cos_ok"), baseline_accuracy=rate("base_ok"),
                   iou_at_least_half=float(np.mean([r["iou"] >= 0.5 for r in rows])), well_formed_box=rate("box_ok")),
    )
    # where the misses are: PyTorch's rates per background kind and per tag colour
    for key in ("background", "colour"):
        report[f"by_{key}"] = {
            value: dict(questions=len(group), cos_accuracy=float(np.mean([r["cos_ok"] for r in group])),
                        iou_at_least_half=float(np.mean([r["iou"] >= 0.5 for r in group])))
            for value in sorted({r[key] for r in rows}) for group in [[r for r in rows if r[key] == value]]
        }
    if pkg:
        have = [r for r in rows if "pkg_cos_ok" in r]
        report["package"] = dict(
            questions=len(have), cos_accuracy=rate("pkg_cos_ok"), baseline_accuracy=rate("pkg_base_ok"),
            iou_at_least_half=float(np.mean([r["pkg_iou"] >= 0.5 for r in have])), model_box=rate("pkg_model_box"),
            same_outputs_as_torch_cos=rate("same_cos"), same_outputs_as_torch_baseline=rate("same_base"),
            same_outputs_as_torch_both=float(np.mean([r["same_cos"] and r["same_base"] for r in have])),
            ask_ms_median=float(np.median([r["pkg_ms"] for r in have])), ask_ms_max=float(np.max([r["pkg_ms"] for r in have])),
        )
        diffs = [r["logit_diff"] for r in have if "logit_diff" in r]
        if diffs:
            report["package"]["max_abs_logit_diff"] = max(diffs)
            report["package"]["logit_diff_questions"] = len(diffs)
            report["package"]["max_abs_logit"] = max(r["logit_scale"] for r in have if "logit_diff" in r)
    print(json.dumps(report, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(report=report, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
