"""The one Jinja2 environment every HTML report uses, and inline image thumbnails.

Autoescaping is on for every template and for strings, so user-provided text (concept names,
labels, file names) can only reach a page escaped; undefined variables are errors, not blanks.
Text with right-to-left letters or bidi controls is isolated (:func:`bidi_isolate`), so it cannot
reorder the sentence, cell or label it is shown in.
"""

from __future__ import annotations

import base64
import io
import re
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from audit.report.wording import group_label, name_check_note, number_text, p_value_text

TEMPLATES = Path(__file__).parent / "templates"


# Characters that can reorder text around them: the explicit bidi controls (embeddings,
# overrides, isolates, marks) and right-to-left letters and digits (Hebrew, Arabic, Syriac, …).
_BIDI = re.compile(
    "[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
    "\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefe\U00010800-\U00010fff\U0001e800-\U0001efff]"
)
_INITIATORS, _PDI, _FSI = "\u2066\u2067\u2068", "\u2069", "\u2068"


def bidi_isolate(text: str) -> str:
    """``text`` between FIRST STRONG ISOLATE and POP DIRECTIONAL ISOLATE when it holds anything
    that could reorder its surroundings (``<bdi>`` in characters: it works in SVG text and in
    attributes too). Inside, an override such as U+202E ends at the isolate's end; a stray
    U+2069 that would end the isolate early is dropped and isolates left open are closed.
    Plain text is returned unchanged (no invisible characters in copied text).

    >>> bidi_isolate("blond hair")
    'blond hair'
    >>> [hex(ord(c)) for c in bidi_isolate("a\u2069\u202eb\u2067c")]
    ['0x2068', '0x61', '0x202e', '0x62', '0x2067', '0x63', '0x2069', '0x2069']
    """
    if not _BIDI.search(text):
        return text
    kept, open_isolates = [], 0
    for ch in text:
        if ch in _INITIATORS:
            open_isolates += 1
        elif ch == _PDI:
            if not open_isolates:
                continue  # it would close our isolate, letting the rest reorder the page
            open_isolates -= 1
        kept.append(ch)
    return _FSI + "".join(kept) + _PDI * (open_isolates + 1)


def group_text(name: str) -> Markup:
    """A group's name (``COLUMN=VALUE, COLUMN=VALUE``) for a page when no class names apply
    (:func:`audit.report.wording.group_name` for an audit's), each column and each value
    inside its own isolate, escaped.

    >>> str(group_text("target=1, <b>=active"))
    'target=1, &lt;b&gt;=active'
    """
    return escape(group_label(name, bidi_isolate))


def _finalize(value: Any) -> Any:
    # Every {{ expression }} of every template: strings are isolated before they are escaped;
    # Markup is HTML the templates built (its own expressions were isolated when rendered).
    if isinstance(value, str) and not isinstance(value, Markup):
        return bidi_isolate(value)
    return value


@lru_cache(maxsize=1)
def template_env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize,
    )
    env.filters["num"] = number_text
    env.filters["pct"] = fmt_percent
    env.filters["pvalue"] = p_value_text
    env.filters["names"] = names_text
    env.filters["group"] = group_text
    env.globals["name_check_note"] = lambda concept: name_check_note(concept, bidi_isolate)
    return env


def names_text(names: Any) -> Markup:
    """User-supplied names joined for a page, each escaped inside its own isolate (Jinja's
    ``join`` would isolate only the whole list: an override in one name would reorder the
    names after it).

    >>> str(names_text(["<b>", "c"]))
    '&lt;b&gt;, c'
    >>> [hex(ord(c)) for c in names_text(["a\\u202e", "b"])]
    ['0x2068', '0x61', '0x202e', '0x2069', '0x2c', '0x20', '0x62']
    """
    return escape(", ").join(escape(bidi_isolate(str(n))) for n in names)


def render(template: str, **context: Any) -> str:
    return template_env().get_template(template).render(**context)


def fmt_percent(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * float(value):.{digits}f}%"


def thumbnail(path: str | None, size: int = 112) -> str | None:
    """A base64 JPEG data URI of an image file (fits in ``size``²), or None if unreadable.

    Paths come from the user's metadata (or a saved result), so anything may stand there: only
    regular files are opened (a FIFO or a device would block or never end), and whatever PIL
    raises for a damaged or hostile file (a decompression bomb is not an ``OSError``) leaves the
    report without that picture instead of failing it.
    """
    if not path:
        return None
    try:
        from PIL import Image

        from audit.encoders import to_rgb

        if not Path(path).is_file():
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.draft("RGB", (size, size))  # JPEG: decode at the scale needed, not in full
                img = to_rgb(img)  # as the images were embedded (16-bit grey scaled, not clipped)
                img.thumbnail((size, size))
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=80)
    except Exception:  # PIL raises many types; a picture is never worth a crash
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
