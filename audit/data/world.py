"""A synthetic image–caption world, generated from a seed by this module alone.

Each scene is one object on a background. Its attributes are drawn independently (unless a
caller plants a correlation, see :mod:`audit.data.shortcuts`):

========== ===========================================================
shape      circle, square, triangle, star, cross, heart
colour     red, green, blue, yellow, purple, orange
texture    solid, striped, dotted, checkered
size       small, large
position   left, center, right
background white, gray, black
marker     none, frame, stamp
========== ===========================================================

The marker is pasted over the finished scene, like a watermark or a photo frame that a data
set picks up from one source: a cyan frame around the whole image, or a pink stamp in the
bottom-right corner. Its colours are not object colours, and captions name it by its own
words ("in a frame", "with a stamp"), so "red" never describes a marker. Captions never
mention a missing marker, as real captions do not. :mod:`audit.data.shortcuts` makes worlds
whose label leaks through a colour or a marker in the train split only.

:func:`render_scene` draws a scene with PIL (2× supersampled, then downsampled, so edges are
smooth); every scene owns a random generator seeded by ``(seed, scene index)``, so an image
never depends on which batch or process rendered it. :func:`caption` writes a caption from
templates that mention a random subset of the attributes — that is what lets a CLIP trained on
these captions understand short prompts such as "a red object" or "a star".
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from audit.errors import InputError
from audit.fileio import atomic_path, ensure_dir

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "heart")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 55),
    "blue": (40, 80, 220),
    "yellow": (240, 205, 30),
    "purple": (135, 55, 185),
    "orange": (245, 135, 25),
}
TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted", "checkered")
# Objects are large relative to the image: the tiny CLIP sees 32×32 pixels.
SIZES: dict[str, float] = {"small": 0.22, "large": 0.34}  # radius as a fraction of the side
POSITIONS: dict[str, float] = {"left": 0.35, "center": 0.5, "right": 0.65}  # x of the centre
BACKGROUNDS: dict[str, int] = {"white": 240, "gray": 128, "black": 20}
NO_MARKER = "none"
#: Pasted markers and their colours (cyan and pink: outside :data:`COLOURS`).
MARKERS: dict[str, tuple[int, int, int] | None] = {
    NO_MARKER: None,
    "frame": (20, 205, 215),
    "stamp": (250, 105, 190),
}
FRAME_WIDTH = 1 / 16  # of the side: 2 pixels at 32
STAMP_SIDE = 0.22  # of the side: 7 pixels at 32

#: Attribute columns of a scene table, in caption order, with their possible values.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "texture": TEXTURES,
    "size": tuple(SIZES),
    "position": tuple(POSITIONS),
    "background": tuple(BACKGROUNDS),
    "marker": tuple(MARKERS),
}
#: Zero-shot prompts, one per attribute value (``{}`` is the value).
PROMPTS: dict[str, str] = {
    "shape": "a {}",
    "colour": "a {} object",
    "texture": "a {} object",
    "size": "a {} object",
    "position": "an object on the {}",
    "background": "an object on a {} background",
    "marker": "an object {}",
}
#: How captions and prompts name each marker (the first phrase is the prompt's).
MARKER_PHRASES: dict[str, tuple[str, ...]] = {
    "frame": ("in a frame", "with a frame"),
    "stamp": ("with a stamp",),
}
DEFAULT_IMAGE_SIZE = 32
_SUPERSAMPLE = 2


def world_words() -> list[str]:
    """Every attribute value a caption can name (the synthetic world's vocabulary)."""
    return [value for values in ATTRIBUTES.values() for value in values if value != NO_MARKER]


def attribute_of(value: str) -> str:
    """The attribute a value belongs to (values are unique across attributes)."""
    for attribute, values in ATTRIBUTES.items():
        if value in values and value != NO_MARKER:
            return attribute
    raise InputError(f"unknown world value {value!r}; choose from {world_words()}")


def prompt_for(attribute: str, value: str) -> str:
    if attribute == "marker":
        # "an object" for no marker: captions never mention a missing one.
        return "an object" if value == NO_MARKER else f"an object {MARKER_PHRASES[value][0]}"
    text = PROMPTS[attribute].format(value)
    if attribute == "position" and value == "center":
        text = "an object in the center"
    return _fix_articles(text)


# ------------------------------------------------------------------------------------------
# Scenes
# ------------------------------------------------------------------------------------------


def sample_scenes(n: int, seed: int = 0, **fixed: str | Sequence[str]) -> pd.DataFrame:
    """``n`` scenes with independent, uniform attributes (``fixed`` restricts any of them).

    ``sample_scenes(100, shape=["circle", "square"])`` draws only circles and squares.
    """
    rng = np.random.default_rng([seed, 0x5CE7E])
    columns = {}
    for attribute, values in ATTRIBUTES.items():
        allowed = fixed.get(attribute, values)
        allowed = (allowed,) if isinstance(allowed, str) else tuple(allowed)
        unknown = [v for v in allowed if v not in values]
        if unknown or not allowed:
            raise InputError(f"unknown {attribute} value(s) {unknown}; choose from {list(values)}")
        columns[attribute] = rng.choice(np.array(allowed), size=n)
    unknown_keys = set(fixed) - set(ATTRIBUTES)
    if unknown_keys:
        raise InputError(f"unknown scene attribute(s): {sorted(unknown_keys)}")
    return pd.DataFrame(columns)


# ------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------


def render_scene(scene: dict[str, str] | pd.Series, seed: int, image_size: int = 48) -> Image.Image:
    """Draw one scene as an RGB image; the same ``(scene, seed)`` always gives the same pixels."""
    rng = np.random.default_rng(seed)
    big = image_size * _SUPERSAMPLE
    shade = BACKGROUNDS[scene["background"]] + rng.integers(-12, 13)
    noise = rng.normal(0.0, 6.0, size=(image_size, image_size, 1))
    background = np.clip(shade + noise, 0, 255).repeat(3, axis=2).astype(np.uint8)

    radius = SIZES[scene["size"]] * big * rng.uniform(0.9, 1.1)
    cx = (POSITIONS[scene["position"]] + rng.uniform(-0.04, 0.04)) * big
    cy = rng.uniform(0.35, 0.65) * big
    angle = rng.uniform(-0.3, 0.3)
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    if scene["shape"] == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
    else:
        draw.polygon(_outline(scene["shape"], cx, cy, radius, angle), fill=255)

    colour = np.clip(np.array(COLOURS[scene["colour"]]) + rng.integers(-12, 13, 3), 0, 255)
    fill = _texture(scene["texture"], colour, big, rng)
    fg = Image.fromarray(fill).resize((image_size, image_size), Image.Resampling.BOX)
    alpha = mask.resize((image_size, image_size), Image.Resampling.BOX)
    out = Image.fromarray(background)
    out.paste(fg, (0, 0), alpha)
    marker = scene.get("marker", NO_MARKER)
    if marker != NO_MARKER:
        out = Image.fromarray(_paste_marker(np.asarray(out).copy(), marker, rng))
    return out


def _paste_marker(pixels: np.ndarray, marker: str, rng: np.random.Generator) -> np.ndarray:
    """Draw ``marker`` over the finished scene (in place), its colour jittered like objects'."""
    base = MARKERS.get(marker)
    if base is None:
        raise InputError(f"unknown marker {marker!r}; choose from {list(MARKERS)}")
    colour = np.clip(np.array(base) + rng.integers(-12, 13, 3), 0, 255).astype(np.uint8)
    side = pixels.shape[0]
    if marker == "frame":
        w = max(1, round(side * FRAME_WIDTH))
        pixels[:w], pixels[-w:], pixels[:, :w], pixels[:, -w:] = colour, colour, colour, colour
    else:  # a stamp in the bottom-right corner, one pixel in from the edge
        s = max(2, round(side * STAMP_SIDE))
        pixels[side - 1 - s : side - 1, side - 1 - s : side - 1] = colour
    return pixels


def _outline(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        r *= 1.05
        pts = [
            (r * math.cos(a), r * math.sin(a))
            for a in (math.pi / 4 + k * math.pi / 2 for k in range(4))
        ]
    elif shape == "triangle":
        r *= 1.15
        pts = [
            (r * math.cos(a), r * math.sin(a))
            for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))
        ]
    elif shape == "star":
        r *= 1.15
        pts = [
            (
                (r if k % 2 == 0 else 0.42 * r) * math.cos(-math.pi / 2 + k * math.pi / 5),
                (r if k % 2 == 0 else 0.42 * r) * math.sin(-math.pi / 2 + k * math.pi / 5),
            )
            for k in range(10)
        ]
    elif shape == "cross":
        w = 0.34 * r
        pts = [
            (w, -r),
            (w, -w),
            (r, -w),
            (r, w),
            (w, w),
            (w, r),
            (-w, r),
            (-w, w),
            (-r, w),
            (-r, -w),
            (-w, -w),
            (-w, -r),
        ]
    elif shape == "heart":
        # The classic parametric heart, scaled to the radius (its x-extent is ±16).
        s = r / 16.0 * 1.05
        pts = []
        for k in range(40):
            t = 2 * math.pi * k / 40
            x = 16 * math.sin(t) ** 3
            y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
            pts.append((s * x, s * (y + 2)))
    else:
        raise InputError(f"unknown shape {shape!r}")
    c, s_ = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s_, cy + x * s_ + y * c) for x, y in pts]


def _texture(texture: str, colour: np.ndarray, big: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB canvas filled with the object's colour and its texture's second tone."""
    base = np.broadcast_to(colour.astype(np.uint8), (big, big, 3)).copy()
    if texture == "solid":
        return base
    # The second tone: lighter on dark colours, darker on light ones, so the pattern shows.
    second = (
        (colour * 0.45).astype(np.uint8)
        if colour.mean() > 110
        else np.minimum(colour + 110, 255).astype(np.uint8)
    )
    yy, xx = np.mgrid[0:big, 0:big]
    phase = rng.integers(0, 12)
    if texture == "striped":
        pattern = ((xx + yy + phase) // 6) % 2 == 0
    elif texture == "dotted":
        cell = 10
        dy, dx = (yy + phase) % cell - cell / 2, (xx + phase) % cell - cell / 2
        pattern = dx * dx + dy * dy <= 2.6**2
    elif texture == "checkered":
        pattern = (((xx + phase) // 8) + ((yy + phase) // 8)) % 2 == 0
    else:
        raise InputError(f"unknown texture {texture!r}")
    base[pattern] = second
    return base


#: Fewer scenes than this render in this process: starting worker processes costs more.
PARALLEL_MIN_SCENES = 1000


def render_scenes(
    scenes: pd.DataFrame,
    seed: int,
    image_size: int = DEFAULT_IMAGE_SIZE,
    workers: int | None = None,
    folder: Path | None = None,
) -> np.ndarray:
    """Render every scene to a ``[N, H, W, 3]`` uint8 array (scene ``i`` uses ``(seed, i)``);
    with ``folder``, also save scene ``i`` there as ``NNNNNN.png``.

    Rendering is pure Python and numpy under the GIL, so threads do not help; ``workers``
    processes (default: one per CPU, at most 4) each draw a contiguous slice of at least
    :data:`PARALLEL_MIN_SCENES` / 2 scenes. The pixels do not depend on the number of workers.
    """
    records = scenes.to_dict("records")
    chunks = _chunks(len(records), _worker_count(len(records), workers))
    if len(chunks) == 1:
        return _draw_chunk(records, seed, image_size, 0, folder)
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(len(chunks), mp_context=context) as pool:
        futures = [
            pool.submit(_draw_chunk, records[lo:hi], seed, image_size, lo, folder)
            for lo, hi in chunks
        ]
        return np.concatenate([f.result() for f in futures])


def _worker_count(n: int, workers: int | None) -> int:
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1  # spawning re-imports numpy, PIL and pandas per worker: slower than drawing
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    return max(1, min(workers, n // (PARALLEL_MIN_SCENES // 2)))


def _chunks(n: int, parts: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n, parts + 1).round().astype(int)
    return [(int(lo), int(hi)) for lo, hi in itertools.pairwise(edges)]


def _draw_chunk(
    records: list[dict], seed: int, image_size: int, start: int, folder: Path | None
) -> np.ndarray:
    out = np.empty((len(records), image_size, image_size, 3), dtype=np.uint8)
    for k, record in enumerate(records):
        image = render_scene(record, _scene_seed(seed, start + k), image_size)
        if folder is not None:
            image.save(folder / f"{start + k:06d}.png", format="PNG", compress_level=1)
        out[k] = np.asarray(image)
    return out


def _scene_seed(seed: int, index: int) -> list[int]:
    return [seed, 0x1A6E, index]  # type: ignore[return-value]


def write_world(
    out_dir: str | os.PathLike[str],
    scenes: pd.DataFrame,
    seed: int,
    image_size: int = DEFAULT_IMAGE_SIZE,
    extra_columns: dict[str, Iterable] | None = None,
) -> pd.DataFrame:
    """Write each scene as ``images/NNNNNN.png`` plus ``manifest.csv`` (id, path, attributes,
    a caption and any extra columns); returns the manifest table."""
    out = ensure_dir(Path(out_dir))
    images = ensure_dir(out / "images")
    render_scenes(scenes, seed, image_size, folder=images)
    ids = [f"{i:06d}.png" for i in range(len(scenes))]
    rng = np.random.default_rng([seed, 0xCA97])
    table = pd.DataFrame({"id": ids, "path": [str(images / name) for name in ids]})
    table = pd.concat([table, scenes.reset_index(drop=True)], axis=1)
    table["caption"] = [caption(row, rng) for row in scenes.to_dict("records")]
    for name, values in (extra_columns or {}).items():
        table[name] = list(values)
    with atomic_path(out / "manifest.csv") as tmp:
        table.to_csv(tmp, index=False)
    return table


# ------------------------------------------------------------------------------------------
# Captions
# ------------------------------------------------------------------------------------------

_OPENINGS = ("a {}", "a photo of a {}", "a picture of a {}", "a drawing of a {}", "{}")
#: How often a caption mentions each attribute.
MENTION: dict[str, float] = {
    "shape": 0.9,
    "colour": 0.7,
    "texture": 0.5,
    "size": 0.5,
    "background": 0.4,
    "position": 0.4,
    "marker": 0.6,  # of the scenes that have one
}


def caption(
    scene: dict[str, str] | pd.Series,
    rng: np.random.Generator,
    mention: dict[str, float] | None = None,
) -> str:
    """A caption that mentions a random subset of the scene's attributes."""
    p = {**MENTION, **(mention or {})}
    adjectives = [scene[a] for a in ("size", "colour", "texture") if rng.random() < p[a]]
    mention_shape = rng.random() < p["shape"] or not adjectives
    noun = scene["shape"] if mention_shape else ("object", "shape")[int(rng.integers(2))]
    text = _OPENINGS[rng.integers(len(_OPENINGS))].format(" ".join([*adjectives, noun]))
    if rng.random() < p["background"]:
        text += f" on a {scene['background']} background"
    if rng.random() < p["position"]:
        position = scene["position"]
        text += " in the center" if position == "center" else f" on the {position}"
    marker = scene.get("marker", NO_MARKER)
    if marker != NO_MARKER and rng.random() < p["marker"]:
        phrases = MARKER_PHRASES[marker]
        text += " " + phrases[int(rng.integers(len(phrases)))]
    return _fix_articles(text)


def captions(scenes: pd.DataFrame, seed: int) -> list[str]:
    rng = np.random.default_rng([seed, 0xCA97])
    return [caption(row, rng) for row in scenes.to_dict("records")]


def _fix_articles(text: str) -> str:
    words = text.split(" ")
    for i in range(len(words) - 1):
        if words[i] in ("a", "an"):
            words[i] = "an" if words[i + 1][:1] in "aeiou" else "a"
    return " ".join(words)
