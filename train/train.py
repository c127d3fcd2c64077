"""Trains the Chain-of-Spot demo model (see train/README.md).

Stages, each checkpointed to --work (stage-a.pt, stage-b.pt). There is no resume flag: a run that
finds a stage's checkpoint there continues from it, whatever data and options made it (delete it,
or choose another --work, to start over; train/run.sh moves checkpoints of other data or options
aside itself). The pixels of the set are cached beside them (train-SIZE.npz) and made again when
the scenes or the settings that shaped them change (data.prepare_set).
  A  vision tower alone, with throw-away dense heads: per patch of the whole view the tag's colour,
     shape and box (l, t, r, b in hundredths); per patch of a zoomed region the tag's digit.
  B  vision frozen (its features computed once), projector + text model on both conversations:
     Chain-of-Spot (loss on the box, </s>, the answer, </s>) and the plain baseline (loss on the
     answer, </s>). Turn two sees crops of jittered boxes, so it reads digits from imperfect boxes.
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import data
from model import Config, Llava, Vision

EOS = 2
N_COLOURS = len(data.COLOURS)


def descend(opt, loss, params):
    """One optimiser step on `loss`, gradients clipped to norm 1."""
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()

def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


class AuxHeads(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.colour = nn.Linear(w, N_COLOURS + 1)
        self.shape = nn.Linear(w, 3)
        self.coords = nn.Linear(w, 4 * 101)
        self.digit = nn.Linear(w, 11)
        # the class token of a zoomed region (the last image token the text model gets): its digit
        self.cls_digit = nn.Linear(w, 10)


def lr_at(step, total, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup)))))


def save(path, **state):
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


# --- stage A ---------------------------------------------------------------------------------------

def stage_a(model, heads, ds, args, rng):
    path = os.path.join(args.work, "stage-a.pt")
    params = list(model.vision.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr_a, weight_decay=0.01)
    step = 0
    if os.path.exists(path):
        st = torch.load(path)
        model.vision.load_state_dict(st["vision"])
        missing = heads.load_state_dict(st["heads"], strict=False).missing_keys
        if not missing:
            opt.load_state_dict(st["opt"])
        step = st["step"]
        rng.bit_generator.state = st["rng"]
        log(f"stage A resumed at step {step}")
    n_img = len(ds["originals"])
    n_q = len(ds["regions"])
    last_save = time.time()
    t0 = time.time()
    while step < args.steps_a:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps_a, args.lr_a, 30)
        ii = rng.integers(0, n_img, args.batch_a)
        qi = rng.integers(0, n_q, args.batch_a)
        ki = rng.integers(0, ds["regions"].shape[1], args.batch_a)
        whole = torch.from_numpy(ds["originals"][ii])
        crops = torch.from_numpy(ds["regions"][qi, ki])
        seq = model.vision(torch.cat([whole, crops]))
        n = model.c.n_patches
        fw, fc = seq[: len(ii), :n], seq[len(ii):, :n]
        colour = torch.from_numpy(ds["colour"][ii])
        loss_colour = F.cross_entropy(heads.colour(fw).flatten(0, 1), colour.flatten(), weight=torch.tensor([0.1] + [1.0] * N_COLOURS))
        loss_shape = F.cross_entropy(heads.shape(fw).flatten(0, 1), torch.from_numpy(ds["shape"][ii]).flatten(), ignore_index=data.IGNORE)
        coords = torch.from_numpy(ds["coords"][ii])  # [B, n, 4]
        loss_coords = F.cross_entropy(heads.coords(fw).view(-1, 4, 101).flatten(0, 1), coords.flatten(), ignore_index=data.IGNORE)
        digit = torch.from_numpy(ds["digits"][qi, ki])
        loss_digit = F.cross_entropy(heads.digit(fc).flatten(0, 1), digit.flatten(), weight=torch.tensor([0.1] + [1.0] * 10))
        loss_cls = F.cross_entropy(heads.cls_digit(seq[len(ii):, n]), torch.from_numpy(ds["answers"][qi]))
        loss = loss_colour + 0.5 * loss_shape + loss_coords + 2.0 * loss_digit + loss_cls
        descend(opt, loss, params)
        step += 1
        if step % 10 == 0:
            with torch.no_grad():
                m = coords[..., 0] != data.IGNORE
                pred = heads.coords(fw).view(-1, n, 4, 101).argmax(-1)
                err = (pred - coords).abs()[m].float().mean().item()
                dm = digit > 0
                dacc = (heads.digit(fc).argmax(-1) == digit)[dm].float().mean().item()
                cm = colour > 0
                colacc = (heads.colour(fw).argmax(-1) == colour)[cm].float().mean().item()
                cacc = (heads.cls_digit(seq[len(ii):, n]).argmax(-1) == torch.from_numpy(ds["answers"][qi])).float().mean().item()
            log(f"A {step}/{args.steps_a} loss {loss.item():.3f} colour {loss_colour.item():.3f} (acc {colacc:.2f}) coords {loss_coords.item():.3f} "
                f"(mean |err| {err:.2f}/100) digit {loss_digit.item():.3f} (acc {dacc:.3f}, class token {cacc:.2f}) {(time.time() - t0) / 10:.2f}s/step")
            t0 = time.time()
        if time.time() - last_save > args.save_every or step == args.steps_a:
            save(path, vision=model.vision.state_dict(), heads=heads.state_dict(), opt=opt.state_dict(), step=step, rng=rng.bit_generator.state)
            last_save = time.time()


@torch.no_grad()
def vision_features(model, pixels, batch=128):
    out = []
    for i in range(0, len(pixels), batch):
        out.append(Vision.llava_features(model.vision(torch.from_numpy(pixels[i:i + batch]))).half())
    return torch.cat(out)


# --- sequences -------------------------------------------------------------------------------------

def expand(ids, n):
    out = []
    for t in ids:
        out.extend([t] * n if t < 0 else [t])
    return out


COLOUR_WORDS = set()  # token ids of the colour words (filled in main from the vocabulary)


def lookup_of(ids, box_from, box_len):
    """Where the box's lookup happens in a sequence: the asked colour word's position (the first
    colour word after the image) and the positions that predict the box tokens."""
    first_image = ids.index(-1)
    colour_pos = next(i for i in range(first_image, len(ids)) if ids[i] in COLOUR_WORDS)
    return colour_pos, box_from - 1, box_from - 1 + box_len, first_image


def cos_sequence(tok, n):
    """(ids, loss mask over next-token targets, lookup) of the two-turn conversation."""
    t1, box, t2, ans = expand(tok["t1"], n), tok["box"], expand(tok["t2"], n), tok["ans"]
    ids = t1 + box + t2 + ans + [EOS]
    target = [0] * (len(t1) - 1) + [1] * len(box) + [1] + [0] * (len(t2) - 1) + [1] * len(ans) + [1]
    # target[i] says whether ids[i + 1] is trained on; t2 starts with </s> (the end of turn one)
    assert len(target) == len(ids) - 1
    return ids, target, lookup_of(ids, len(t1), len(box))


def turn_one_sequence(tok, n):
    """Turn one alone (a prefix of the two-turn conversation, so the same training signal for the
    box at half the length): the prompt, the box, and </s>."""
    t1, box = expand(tok["t1"], n), tok["box"]
    ids = t1 + box + [EOS]
    return ids, [0] * (len(t1) - 1) + [1] * len(box) + [1], lookup_of(ids, len(t1), len(box))


def turn_two_sequence(tok, n):
    """Turn two alone (its continuation from </s>, no turn one before it): a short sequence that
    teaches reading the zoomed region quickly; RoPE is relative, so it carries over to the whole
    conversation."""
    t2, ans = expand(tok["t2"], n), tok["ans"]
    ids = t2 + ans + [EOS]
    return ids, [0] * (len(t2) - 1) + [1] * len(ans) + [1], None


def base_sequence(tok, n):
    b, ans = expand(tok["base"], n), tok["ans"]
    ids = b + ans + [EOS]
    target = [0] * (len(b) - 1) + [1] * len(ans) + [1]
    return ids, target, None


def batch_tensors(seqs):
    """(ids, targets, lookups) of (ids, mask, lookup) sequences, padded to the longest."""
    L = max(len(s[0]) for s in seqs)
    ids = torch.zeros(len(seqs), L, dtype=torch.long)
    tgt = torch.full((len(seqs), L - 1), -100, dtype=torch.long)
    for i, (s, m, _) in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mm = torch.tensor(m, dtype=torch.bool)
        nxt = torch.tensor(s[1:])
        tgt[i, : len(s) - 1] = torch.where(mm, nxt, torch.full_like(nxt, -100))
    return ids, tgt, [s[2] for s in seqs]


class Probes(nn.Module):
    """Throw-away linear read-outs of the tag's box (l, t, r, b in hundredths) from the text model's
    hidden states, for the lookup supervision."""

    def __init__(self, w):
        super().__init__()
        self.at_colour = nn.Linear(w, 4 * 101)
        self.at_box = nn.Linear(w, 4 * 101)


def lookup_loss(model, probes, lookups, tag_tokens, boxes):
    """The lookup supervision (a curriculum aid: the model and what it computes are unchanged).
    Finding the asked tag is a two-hop lookup (box position -> colour word -> the tag's image token)
    that next-token loss alone never found here: every run settled on one average box. So head 0 of
    the first block is taught to attend from the colour word to the image token holding the tag's
    centre (whose features carry its box since stage A), and head 0 of the second block from each
    box-predicting position to the colour word; and linear probes must read the box from the colour
    word after the first block and from the box positions after the second, so that the box travels
    along that path in a form the last block can spell. Returns (loss, share of colour words whose
    strongest image token is the tag's)."""
    first, second = model.text.blocks[0], model.text.blocks[1]
    losses, hits = [], []
    for row, (lookup, tag_token, box) in enumerate(zip(lookups, tag_tokens, boxes)):
        if lookup is None or tag_token is None:
            continue
        colour_pos, q0, q1, image_start = lookup
        to_image = first.attention[row, colour_pos, image_start:image_start + model.c.n_patches]
        losses.append(-torch.log(to_image[tag_token] + 1e-6))
        losses.append(-torch.log(second.attention[row, q0:q1, colour_pos] + 1e-6).mean())
        target = torch.as_tensor(box)
        losses.append(F.cross_entropy(probes.at_colour(first.hidden[row, colour_pos]).view(4, 101), target))
        at_box = probes.at_box(second.hidden[row, q0:q1]).view(-1, 4, 101)
        losses.append(F.cross_entropy(at_box.flatten(0, 1), target.repeat(q1 - q0)))
        hits.append(float(to_image.argmax() == tag_token))
    if not losses:
        return torch.zeros(()), float("nan")
    return torch.stack(losses).mean(), float(np.mean(hits))


def lm_loss(model, probes, ids, tgt, orig_feats, roi_feats, lookups, tag_tokens, boxes):
    """Loss over the trained targets (the output layer runs on those positions only), plus the
    lookup supervision where a row has one. Returns (loss, logits [K, V], targets [K], row of each
    target [K], lookup loss, lookup hit rate)."""
    images = {-1: model.projector(orig_feats.float())}
    if roi_feats is not None:
        images[-2] = model.projector(roi_feats.float())
    emb = model.embed(ids, images)
    select = torch.zeros(ids.shape, dtype=torch.bool)
    select[:, :-1] = tgt != -100
    for blk in model.text.blocks[:2]:
        blk.keep_internals = True
    logits = model.text(emb, select=select)
    t = tgt[tgt != -100]
    rows = torch.arange(ids.shape[0])[:, None].expand_as(tgt)[tgt != -100]
    aux, hit = lookup_loss(model, probes, lookups, tag_tokens, boxes)
    return F.cross_entropy(logits, t), logits, t, rows, aux, hit


def sample_batch(rng, tokens, ds, feats_orig, feats_roi, n_cos, n_base, n, n_t1=0, n_t2=0):
    """Up to three groups, each padded to its own length: n_cos two-turn conversations (with a
    region); n_base baselines and n_t1 turn-one-only prefixes (about half as long); n_t2
    turn-two-only rows. Each group: (ids, targets, whole-view features, region features or None,
    lookups, the asked tag's image token per row, its box in hundredths per row)."""
    nq = len(ds["ids"])
    groups = []

    def group(seqs, questions, orig, roi):
        ids, tgt, lookups = batch_tensors(seqs)
        groups.append((ids, tgt, orig, roi, lookups, [ds["tag_token"][q] for q in questions], [ds["box100"][q] for q in questions]))

    def seq_of(kind, q):
        tok = tokens[str(ds["ids"][q])]
        return {"cos": cos_sequence, "base": base_sequence, "t1": turn_one_sequence, "t2": turn_two_sequence}[kind](tok, n)

    def region_of(q):
        return feats_roi[q, int(rng.integers(0, feats_roi.shape[1]))]

    qs = [int(q) for q in rng.integers(0, nq, n_cos)]
    if qs:
        group([seq_of("cos", q) for q in qs], qs, feats_orig[ds["image_of"][qs]], torch.stack([region_of(q) for q in qs]))
    short = [(kind, int(q)) for kind, count in (("base", n_base), ("t1", n_t1)) for q in rng.integers(0, nq, count)]
    if short:
        qs = [q for _, q in short]
        group([seq_of(kind, q) for kind, q in short], qs, feats_orig[ds["image_of"][qs]], None)
    qs = [int(q) for q in rng.integers(0, nq, n_t2)]
    if qs:
        # no original image in these rows: its features are unused
        group([seq_of("t2", q) for q in qs], qs, feats_orig[:1].expand(len(qs), -1, -1), torch.stack([region_of(q) for q in qs]))
    return groups


def stage_b(model, ds, tokens, args, rng):
    name, steps, lr = "stage-b", args.steps_b, args.lr_b
    path = os.path.join(args.work, f"{name}.pt")
    n = model.c.n_patches
    probes = Probes(model.c.t_width)
    params = list(model.projector.parameters()) + list(model.text.parameters()) + list(probes.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    step = 0
    if os.path.exists(path):
        st = torch.load(path)
        model.load_state_dict(st["model"])
        probes.load_state_dict(st["probes"])
        opt.load_state_dict(st["opt"])
        step = st["step"]
        rng.bit_generator.state = st["rng"]
        log(f"{name} resumed at step {step}")
    log("computing frozen vision features")
    feats_orig = vision_features(model, ds["originals"])
    r = ds["regions"]
    feats_roi = vision_features(model, r.reshape(-1, *r.shape[2:])).view(r.shape[0], r.shape[1], n, -1)
    log(f"features: {tuple(feats_orig.shape)} whole, {tuple(feats_roi.shape)} regions")
    last_save = time.time()
    t0 = time.time()
    while step < steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, 40)
        groups = sample_batch(rng, tokens, ds, feats_orig, feats_roi, args.cos_batch, args.base_batch, n, args.t1_batch, args.t2_batch)
        parts = [lm_loss(model, probes, *g) for g in groups]
        total = sum(len(p[2]) for p in parts)
        loss = sum(p[0] * len(p[2]) for p in parts) / total
        lookup = [p[4] for p in parts if not math.isnan(p[5])]
        if lookup and args.lookup_weight:
            loss = loss + args.lookup_weight * sum(lookup) / len(lookup)
        hits = [p[5] for p in parts if not math.isnan(p[5])]
        logits = torch.cat([p[1] for p in parts])
        t = torch.cat([p[2] for p in parts])
        offset, rr = 0, []
        for (g_ids, *_), p in zip(groups, parts):
            rr.append(p[3] + offset)
            offset += g_ids.shape[0]
        rows = torch.cat(rr)
        ids = torch.zeros(offset, 1)
        descend(opt, loss, params)
        step += 1
        if step % 10 == 0:
            with torch.no_grad():
                ok = logits.argmax(-1) == t
                acc = ok.float().mean().item()
                # the answer digit of each row: its second-to-last trained target
                ans_ok = []
                for i in range(ids.shape[0]):
                    pos = (rows == i).nonzero().flatten()
                    ans_ok.append(bool(ok[pos[-2]]))
                cos_acc = float(np.mean(ans_ok[: args.cos_batch]))
                base_acc = float(np.mean(ans_ok[args.cos_batch: args.cos_batch + args.base_batch])) if args.base_batch else float("nan")
                # box tokens of all rows with one: every trained target but the answer and the final </s>
                box_ok = [bool(ok[(rows == i).nonzero().flatten()[:-3 if i < args.cos_batch else -1]].all())
                          for i in range(args.cos_batch + args.base_batch + args.t1_batch) if i < args.cos_batch or i >= args.cos_batch + args.base_batch]
                first_t2 = args.cos_batch + args.base_batch + args.t1_batch
                t2_acc = float(np.mean(ans_ok[first_t2:])) if args.t2_batch else float("nan")
            log(f"{name} {step}/{steps} loss {loss.item():.4f} lookup hit {np.mean(hits):.2f} token acc {acc:.3f} answer acc cos {cos_acc:.2f} base {base_acc:.2f} "
                f"whole box right {np.mean(box_ok):.2f} turn-two-only answer {t2_acc:.2f} "
                f"{(time.time() - t0) / 10:.2f}s/step")
            t0 = time.time()
        if time.time() - last_save > args.save_every or step == steps:
            save(path, model=model.state_dict(), probes=probes.state_dict(), opt=opt.state_dict(), step=step, rng=rng.bit_generator.state, config=model.c.to_dict())
            last_save = time.time()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=".cache/train")
    ap.add_argument("--scenes", default=".cache/scenes/train")
    ap.add_argument("--tokens", default=".cache/train/train-tokens.jsonl")
    ap.add_argument("--vocab-size", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--crops", type=int, default=2)
    ap.add_argument("--steps-a", type=int, default=600)
    ap.add_argument("--batch-a", type=int, default=32)
    ap.add_argument("--lr-a", type=float, default=2e-3)
    ap.add_argument("--steps-b", type=int, default=900)
    ap.add_argument("--cos-batch", type=int, default=12)
    ap.add_argument("--base-batch", type=int, default=4)
    ap.add_argument("--t1-batch", type=int, default=0, help="extra turn-one-only rows per batch")
    ap.add_argument("--t2-batch", type=int, default=0, help="extra turn-two-only rows per batch")
    ap.add_argument("--lr-b", type=float, default=1.5e-3)
    ap.add_argument("--lookup-weight", type=float, default=1.0, help="weight of the lookup supervision (see lookup_loss)")
    ap.add_argument("--save-every", type=float, default=180)
    ap.add_argument("--config", default='{"t_width": 128, "t_ffn": 384}', help="JSON overrides of model.Config")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.work, exist_ok=True)
    cfg = Config(vocab=args.vocab_size, **json.loads(args.config))
    with open(os.path.join(args.work, "config.json"), "w") as f:
        json.dump(cfg.to_dict(), f, indent=1)
    model = Llava(cfg)
    heads = AuxHeads(cfg.v_width)
    log(f"params: vision {sum(p.numel() for p in model.vision.parameters())}, projector {sum(p.numel() for p in model.projector.parameters())}, "
        f"text {sum(p.numel() for p in model.text.parameters())}")
    t = time.time()
    ds = data.prepare_set(args.scenes, cfg.image_size, cfg.patch_size, args.crops, args.seed,
                          os.path.join(args.work, f"train-{cfg.image_size}.npz"))
    log(f"data: {len(ds['originals'])} images, {len(ds['ids'])} questions ({time.time() - t:.0f}s)")
    questions = data.load_questions(os.path.join(args.scenes, "questions.jsonl"))
    ds["box100"] = [data.hundredths(q["box"]) for q in questions]
    ds["tag_token"] = [data.image_token_of(q["tag"]["centre"], cfg.image_size // cfg.patch_size) for q in questions]
    pieces = json.load(open(os.path.join(os.path.dirname(args.tokens), "vocab.json")))
    COLOUR_WORDS.update(pieces.index("\u2581" + c) for c in data.COLOURS)
    tokens = data.load_tokens(args.tokens)
    stage_a(model, heads, ds, args, rng)
    model.vision.requires_grad_(False)
    stage_b(model, ds, tokens, args, rng)
    st = torch.load(os.path.join(args.work, "stage-b.pt"))
    torch.save({"model": st["model"], "config": cfg.to_dict()}, os.path.join(args.work, "final.pt"))
    log("done: " + os.path.join(args.work, "final.pt"))


if __name__ == "__main__":
    main()
