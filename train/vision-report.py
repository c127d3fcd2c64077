"""How well a run's stage-A vision tower sees held-out scenes, through its throw-away heads: per
tag (on the patch holding its centre) the colour and the exact box, and per question the digit
read from the class token of a zoomed crop. It separates what the vision tower sees from what the
text model makes of it (train/README.md, "What got it there").

  /usr/bin/python3 train/vision-report.py WORK SCENES_DIR      e.g. .cache/train/run9 .cache/scenes/heldout
"""
import json
import os
import sys

import numpy as np
import torch

import data
from model import Config, Llava
from train import AuxHeads


def main(work, scenes):
    torch.set_num_threads(2)
    cfg = Config(**json.load(open(os.path.join(work, "config.json"))))
    model, heads = Llava(cfg), AuxHeads(cfg.v_width)
    state = torch.load(os.path.join(work, "stage-a.pt"))
    model.vision.load_state_dict(state["vision"])
    heads.load_state_dict(state["heads"], strict=False)
    ds = data.prepare_set(scenes, cfg.image_size, cfg.patch_size, 1, 1, os.path.join(scenes, f"vision-{cfg.image_size}.npz"))
    n = cfg.n_patches
    with torch.no_grad():
        whole = model.vision(torch.from_numpy(ds["originals"]))[:, :n]
        colour = heads.colour(whole).argmax(-1).numpy()
        coords = heads.coords(whole).view(len(whole), n, 4, 101).argmax(-1).numpy()
        digit = heads.cls_digit(model.vision(torch.from_numpy(ds["regions"][:, 0]))[:, n]).argmax(-1).numpy()
    tag = ds["colour"] > 0
    print(json.dumps({
        "tags": int(tag.sum()),
        "colour": float((colour[tag] == ds["colour"][tag]).mean()),
        "exact_box": float((coords == ds["coords"]).all(-1)[tag].mean()),
        "questions": len(digit),
        "zoomed_digit": float((digit == ds["answers"]).mean()),
    }, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
