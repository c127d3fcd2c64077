"""Reads the scene generator's files (lib/scenes via `chain-of-spot scenes`) and prepares what the
model sees, bit for bit as the package prepares it (lib/image/image.ts): the image padded to a
square of (122, 116, 104) and resized with Pillow's bicubic filter; a region cropped from that
square at round-half-even(side * coordinate) (black outside the square, as PIL's crop), padded to
a square again and resized the same way."""
import hashlib
import json
import multiprocessing
import os

import numpy as np
from PIL import Image

PAD = (122, 116, 104)
COLOURS = ["red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "white"]
SHAPES = ["circle", "square", "triangle"]
TAG_SIZE = 0.06
DIGIT_HEIGHT = 0.025
IGNORE = -100


def expand2square(img, colour=PAD):
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new(img.mode, (side, side), colour)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def crop_rect(box, side):
    """lib/image/image.ts cropRect: edges side*coord rounded half to even, at least one pixel."""
    l, t, r, b = [round(side * v) for v in box]
    if l > r:
        l, r = r, l
    if t > b:
        t, b = b, t

    def one(a, z):
        if z > a:
            return a, z
        return (a, z + 1) if z < side else (a - 1, z)

    l, r = one(l, r)
    t, b = one(t, b)
    return l, t, r, b


def prepare_original(img, size):
    return np.asarray(expand2square(img).resize((size, size), Image.BICUBIC), dtype=np.uint8)


def prepare_region(square_img, box, size):
    """square_img: the original already padded to a square (expand2square)."""
    rect = crop_rect(box, square_img.size[0])
    crop = square_img.crop(rect)
    return np.asarray(expand2square(crop).resize((size, size), Image.BICUBIC), dtype=np.uint8), rect


def load_questions(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def load_tokens(path):
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {r["id"]: r for r in rows}


def overlap_patches(x0, y0, x1, y1, grid):
    """Patches (raster index) of a grid x grid layout over [0,1]^2 that a rectangle overlaps."""
    out = []
    for gy in range(max(0, int(np.floor(y0 * grid))), min(grid, int(np.ceil(y1 * grid)))):
        for gx in range(max(0, int(np.floor(x0 * grid))), min(grid, int(np.ceil(x1 * grid)))):
            out.append(gy * grid + gx)
    return out


def patch_of(x, y, grid):
    return min(grid - 1, max(0, int(y * grid))) * grid + min(grid - 1, max(0, int(x * grid)))


def image_token_of(centre, grid):
    """The image token (index among the projector's rows) of the patch holding `centre`, or None:
    llama.cpp hands the projector patches 1..n-1 and then the class token, so patch p is row p - 1
    and patch 0 is never seen."""
    p = patch_of(*centre, grid)
    return p - 1 if p > 0 else None


def whole_view_labels(tags, grid):
    """Per patch: colour (0 none, 1..9), shape, and the box's l,t,r,b in hundredths (IGNORE if none),
    on the patch holding the tag's centre (which always holds a good part of the tag; patches with a
    sliver of it would be noise)."""
    colour = np.zeros(grid * grid, np.int64)
    shape = np.full(grid * grid, IGNORE, np.int64)
    coords = np.full((grid * grid, 4), IGNORE, np.int64)
    for tag in tags:
        p = patch_of(*tag["centre"], grid)
        colour[p] = COLOURS.index(tag["colour"]) + 1
        shape[p] = SHAPES.index(tag["shape"])
        coords[p] = hundredths(tag["box"])
    return colour, shape, coords


def hundredths(box):
    """A box's l, t, r, b in hundredths of the padded side: the classes the heads and probes predict."""
    return [round(v * 100) for v in box]


def region_labels(tag, rect, side, grid):
    """Per patch of the zoomed region: the tag's digit (1..10, 0 none) where its digit is."""
    l, t, r, b = rect
    cw, ch = r - l, b - t
    cs = max(cw, ch)
    ox, oy = (cs - cw) // 2, (cs - ch) // 2
    cx, cy = tag["centre"]
    dy = 0.2 * TAG_SIZE if tag["shape"] == "triangle" else 0.0
    hh = DIGIT_HEIGHT / 2
    hw = hh * 5 / 7

    def to_crop(x, y):  # padded-square fraction -> crop-canvas fraction
        return ((x * side - l + ox) / cs, (y * side - t + oy) / cs)

    digit = np.zeros(grid * grid, np.int64)
    x, y = to_crop(cx, cy + dy)
    if 0 <= x < 1 and 0 <= y < 1:
        digit[patch_of(x, y, grid)] = tag["digit"] + 1
    return digit


def jitter_box(rng, box, amount):
    l, t, r, b = box
    cx, cy = (l + r) / 2, (t + b) / 2
    hw, hh = (r - l) / 2, (b - t) / 2
    s = rng.uniform(0.85, 1.25)
    cx += rng.uniform(-amount, amount)
    cy += rng.uniform(-amount, amount)
    return [round(v, 3) for v in (cx - hw * s, cy - hh * s, cx + hw * s, cy + hh * s)]


def crop_boxes(seed, qi, box, crops_per_question, jitters):
    """The jittered boxes of question `qi`'s zoomed crops: a stream of its own per question, so the
    pixels can be prepared in parallel and the labels computed apart from them."""
    rng = np.random.default_rng((seed, qi))
    return [jitter_box(rng, box, jitters[k % len(jitters)]) for k in range(crops_per_question)]


def _labels(qs, n_images, image_of, size, patch, crops_per_question, seed, jitters):
    """The labels of a set, from its questions (the crops' jitter replayed): per whole view its
    patches' colour, shape and box, per crop its patches' digit."""
    grid = size // patch
    colour = np.zeros((n_images, grid * grid), np.int64)
    shape = np.zeros((n_images, grid * grid), np.int64)
    coords = np.zeros((n_images, grid * grid, 4), np.int64)
    digits = np.zeros((len(qs), crops_per_question, grid * grid), np.int64)
    for qi, q in enumerate(qs):
        i = image_of[qi]
        colour[i], shape[i], coords[i] = whole_view_labels(q["tags"], grid)
        side = max(q["width"], q["height"])
        for k, box in enumerate(crop_boxes(seed, qi, q["box"], crops_per_question, jitters)):
            digits[qi, k] = region_labels(q["tag"], crop_rect(box, side), side, grid)
    return dict(colour=colour, shape=shape, coords=coords, digits=digits)


def _prepare_image(job):
    """Pixels of one image (whole view) and of its questions' crops: (whole, [(qi, [crop, ...])])."""
    scenes_dir, image, questions, size, crops_per_question, seed, jitters = job
    sq = expand2square(Image.open(os.path.join(scenes_dir, image)).convert("RGB"))
    whole = np.asarray(sq.resize((size, size), Image.BICUBIC), dtype=np.uint8)
    crops = [(qi, [prepare_region(sq, box, size)[0] for box in crop_boxes(seed, qi, q["box"], crops_per_question, jitters)])
             for qi, q in questions]
    return whole, crops


def _prepare_pixels(scenes_dir, qs, size, crops_per_question, seed, jitters, workers):
    """The pixels of a set (images decoded and resized by `workers` processes) and its indices."""
    images = sorted({q["image"] for q in qs})
    index = {name: i for i, name in enumerate(images)}
    by_image = {name: [] for name in images}
    for qi, q in enumerate(qs):
        by_image[q["image"]].append((qi, q))
    originals = np.zeros((len(images), size, size, 3), np.uint8)
    regions = np.zeros((len(qs), crops_per_question, size, size, 3), np.uint8)
    jobs = [(scenes_dir, name, by_image[name], size, crops_per_question, seed, jitters) for name in images]
    with multiprocessing.Pool(workers) as pool:
        for i, (whole, crops) in enumerate(pool.imap(_prepare_image, jobs, chunksize=16)):
            originals[i] = whole
            for qi, pixels in crops:
                regions[qi] = pixels
    return dict(
        originals=originals, regions=regions,
        image_of=np.array([index[q["image"]] for q in qs], np.int64),
        ids=np.array([q["id"] for q in qs]), answers=np.array([int(q["answers"][0]) for q in qs], np.int64),
    )


def _pixels_key(scenes_dir, size, crops_per_question, seed, jitters):
    """What the cached pixels of a set depend on: its questions file and the stamp run.sh writes
    beside it (the scenes' count, seed, photos and generator), the image size, crops and jitter."""
    digest = hashlib.sha256()
    for name in ("questions.jsonl", "questions.jsonl.stamp"):
        path = os.path.join(scenes_dir, name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                digest.update(f.read())
    return json.dumps(dict(scenes=digest.hexdigest(), size=size, crops=crops_per_question, seed=seed, jitters=list(jitters)))


def prepare_set(scenes_dir, size, patch, crops_per_question, seed, cache_path, jitters=(0.012, 0.035), workers=2):
    """Pixels and labels of a generated set. The pixels are cached as .npz, with the key of what
    they were made from (see _pixels_key): a cache of other scenes or settings is made again. The
    labels are computed from the questions on every call, so changing them needs no new pixels."""
    qs = load_questions(os.path.join(scenes_dir, "questions.jsonl"))
    key = _pixels_key(scenes_dir, size, crops_per_question, seed, jitters)
    ds = None
    if os.path.exists(cache_path):
        with np.load(cache_path, allow_pickle=True) as d:
            if "key" in d.files and str(d["key"]) == key:
                ds = {k: d[k] for k in ("originals", "regions", "image_of", "ids", "answers")}
        if ds is None:
            print(f"{cache_path} was made from other scenes or settings: preparing the pixels again", flush=True)
    if ds is None:
        ds = _prepare_pixels(scenes_dir, qs, size, crops_per_question, seed, jitters, workers)
        np.savez(cache_path, key=np.array(key), **ds)
    ds.update(_labels(qs, len(ds["originals"]), ds["image_of"], size, patch, crops_per_question, seed, jitters))
    return ds
