"""Render realistic single text lines and pages, and preprocess them as PP-OCR (rapidocr) does.

Deterministic: every random choice comes from the ``numpy.random.Generator`` passed in, so the
same seed gives the same pixels (for a given set of fonts and Pillow version).

Images are handled as ``uint8`` arrays of shape ``(H, W, 3)`` in **RGB** order; the
``*_preprocess`` functions convert to BGR, because rapidocr reads images with OpenCV (BGR) and
feeds them to the PaddleOCR models in that order.

Preprocessing copied from rapidocr-onnxruntime 1.4.4 (Apache-2.0, after PaddleOCR):

* ``ch_ppocr_cls/text_cls.py`` ``TextClassifier.resize_norm_img``: shape ``[3, 48, 192]``;
  ``resized_w = min(192, ceil(48 * w / h))``; ``cv2.resize`` (bilinear) on the uint8 image; CHW;
  ``x / 255``; ``(x - 0.5) / 0.5``; zero right-padding to 192.
* ``ch_ppocr_rec/text_recognize.py`` ``TextRecognizer.resize_norm_img``: the same with shape
  ``[3, 48, 320]`` (rapidocr widens a batch to ``48 * max_wh_ratio`` when a line is longer than
  320/48; here the width is fixed, so longer lines are squeezed like the classifier does).
* ``ch_ppocr_det/utils.py`` ``DetPreProcess``: resize so sides are multiples of 32 (config:
  ``limit_side_len 736``, ``limit_type min``), ``(x / 255 - mean) / std`` with
  ``mean = std = [0.5, 0.5, 0.5]`` (config.yaml of 1.4.4; not the ImageNet values), CHW.

Only numpy and Pillow are needed; the OpenCV bilinear resize is reimplemented in numpy
(``cv2_resize_linear``).
"""
from __future__ import annotations

import glob
import math
import os
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

__all__ = [
    "SENTENCES", "list_fonts", "random_text", "render_line", "render_page", "rotate180",
    "cv2_resize_linear", "cls_preprocess", "rec_preprocess", "det_preprocess",
    "make_cls_batch", "make_rec_batch", "make_det_batch", "make_captcha_batch",
    "CLS_SHAPE", "REC_SHAPE", "DET_SIZE", "CAPTCHA_SHAPE",
]

CLS_SHAPE = (3, 48, 192)
#: ddddocr's reader: one grey channel, height 64 (its own preprocessing), a fixed width here
CAPTCHA_SHAPE = (1, 64, 192)
#: captcha alphabets leave out the characters people confuse (0/O, 1/l/I)
CAPTCHA_CHARS = "abcdefghijkmnpqrstuvwxyz23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
REC_SHAPE = (3, 48, 320)
DET_SIZE = 640

# --------------------------------------------------------------------------------------------
# Text sources: real English prose (Apache License 2.0 text, README-style sentences), plus
# generated numbers, dates, prices, codes.
# --------------------------------------------------------------------------------------------

SENTENCES: tuple[str, ...] = (
    # Apache License, Version 2.0 (excerpts)
    "Apache License Version 2.0, January 2004",
    "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
    "License shall mean the terms and conditions for use, reproduction, and distribution "
    "as defined by Sections 1 through 9 of this document.",
    "Licensor shall mean the copyright owner or entity authorized by the copyright owner "
    "that is granting the License.",
    "You (or Your) shall mean an individual or Legal Entity exercising permissions granted "
    "by this License.",
    "Source form shall mean the preferred form for making modifications, including but not "
    "limited to software source code, documentation source, and configuration files.",
    "Object form shall mean any form resulting from mechanical transformation or translation "
    "of a Source form, including but not limited to compiled object code, generated "
    "documentation, and conversions to other media types.",
    "Work shall mean the work of authorship, whether in Source or Object form, made available "
    "under the License, as indicated by a copyright notice that is included in or attached "
    "to the work.",
    "Grant of Copyright License. Subject to the terms and conditions of this License, each "
    "Contributor hereby grants to You a perpetual, worldwide, non-exclusive, no-charge, "
    "royalty-free, irrevocable copyright license to reproduce, prepare Derivative Works of, "
    "publicly display, publicly perform, sublicense, and distribute the Work and such "
    "Derivative Works in Source or Object form.",
    "Redistribution. You may reproduce and distribute copies of the Work or Derivative Works "
    "thereof in any medium, with or without modifications, and in Source or Object form, "
    "provided that You meet the following conditions:",
    "You must give any other recipients of the Work or Derivative Works a copy of this "
    "License; and",
    "You must cause any modified files to carry prominent notices stating that You changed "
    "the files; and",
    "Submission of Contributions. Unless You explicitly state otherwise, any Contribution "
    "intentionally submitted for inclusion in the Work by You to the Licensor shall be under "
    "the terms and conditions of this License, without any additional terms or conditions.",
    "Trademarks. This License does not grant permission to use the trade names, trademarks, "
    "service marks, or product names of the Licensor, except as required for reasonable and "
    "customary use in describing the origin of the Work.",
    "Disclaimer of Warranty. Unless required by applicable law or agreed to in writing, "
    "Licensor provides the Work on an AS IS BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY "
    "KIND, either express or implied.",
    "Limitation of Liability. In no event and under no legal theory, whether in tort "
    "(including negligence), contract, or otherwise, shall any Contributor be liable to You "
    "for damages.",
    "Accepting Warranty or Additional Liability. While redistributing the Work or Derivative "
    "Works thereof, You may choose to offer, and charge a fee for, acceptance of support, "
    "warranty, indemnity, or other liability obligations.",
    "END OF TERMS AND CONDITIONS",
    "APPENDIX: How to apply the Apache License to your work.",
    "Licensed under the Apache License, Version 2.0 (the License); you may not use this file "
    "except in compliance with the License.",
    "You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0",
    "See the License for the specific language governing permissions and limitations under "
    "the License.",
    # README / documentation style
    "Install the package with pip and run the command line tool on your model.",
    "The compressed model produces the same outputs within the reported tolerance.",
    "Calibration data are used to measure the error introduced by each layer.",
    "Run the tests before you open a pull request.",
    "Please report security issues privately to the maintainers.",
    "Quick start: download the weights, then call the predict function.",
    "The default configuration works well for most text detection tasks.",
    "Supported platforms: Linux, macOS and Windows on x86-64 and ARM64.",
    "Contributions are welcome; see CONTRIBUTING for the guidelines.",
    "This release fixes a memory leak and improves inference speed on CPU.",
    "Batch size and image width can be changed in the configuration file.",
    "Text recognition accuracy depends on the quality of the cropped lines.",
    "Thank you for your order. Your parcel will arrive within three working days.",
    "Opening hours: Monday to Friday, nine in the morning until six in the evening.",
    "Keep this receipt as proof of purchase.",
    "Invoice total including tax and shipping",
    "Meeting room B on the second floor, next to the library.",
    "Please do not leave bags unattended at any time.",
    "The train to Cambridge departs from platform four.",
    "Scan the code to pay with your phone.",
    "Best before the date printed on the lid.",
    "Customer service is available twenty four hours a day.",
    "Chapter Three: Results and Discussion",
    "Figure 2 shows the error rate as a function of model size.",
    "Table 1 lists the datasets used for training and evaluation.",
    "All measurements were repeated five times and averaged.",
)

_WORDS: tuple[str, ...] = tuple(
    w.strip(",;:().") for s in SENTENCES for w in s.split() if w.strip(",;:().")
)

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_CURRENCIES = ("$", "EUR ", "GBP ", "USD ", "\u20ac", "\u00a3")
_LABELS = ("Total", "Subtotal", "Tax", "Price", "Amount due", "Balance", "Paid", "Change",
           "Invoice No.", "Order", "Date", "Tel", "Ref", "Qty", "Item", "Page")


def _price(rng: np.random.Generator) -> str:
    value = float(rng.choice([rng.uniform(0.5, 100), rng.uniform(100, 10000)]))
    cur = str(rng.choice(_CURRENCIES))
    amount = f"{value:,.2f}"
    return f"{amount} {cur.strip()}" if rng.random() < 0.2 else f"{cur}{amount}"


def _date(rng: np.random.Generator) -> str:
    y, m, d = int(rng.integers(1990, 2031)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    style = int(rng.integers(0, 5))
    if style == 0:
        return f"{y:04d}-{m:02d}-{d:02d}"
    if style == 1:
        return f"{d:02d}/{m:02d}/{y:04d}"
    if style == 2:
        return f"{d} {_MONTHS[m - 1]} {y}"
    if style == 3:
        return f"{_MONTHS[m - 1][:3]} {d}, {y}"
    hh, mm = int(rng.integers(0, 24)), int(rng.integers(0, 60))
    return f"{y:04d}-{m:02d}-{d:02d} {hh:02d}:{mm:02d}"


def _number(rng: np.random.Generator) -> str:
    style = int(rng.integers(0, 6))
    if style == 0:
        return str(int(rng.integers(0, 100000)))
    if style == 1:
        return f"{rng.uniform(0, 1000):.{int(rng.integers(1, 4))}f}"
    if style == 2:  # phone number
        return f"+{int(rng.integers(1, 99))} {int(rng.integers(100, 999))} {int(rng.integers(1000000, 9999999))}"
    if style == 3:  # percentage
        return f"{rng.uniform(0, 100):.1f}%"
    if style == 4:  # code / id
        letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
        return "".join(letters[i] for i in rng.integers(0, len(letters), 3)) + f"-{int(rng.integers(1000, 99999))}"
    return f"{int(rng.integers(1, 999))} x {int(rng.integers(1, 99))}"


def random_text(rng: np.random.Generator, max_words: int = 8) -> str:
    """One line of text: a span of a real sentence, or a number, date, price or labelled value."""
    kind = rng.random()
    if kind < 0.6:
        words = str(SENTENCES[int(rng.integers(0, len(SENTENCES)))]).split()
        n = int(rng.integers(1, min(max_words, len(words)) + 1))
        start = int(rng.integers(0, len(words) - n + 1))
        return " ".join(words[start:start + n])
    if kind < 0.7:
        return _price(rng)
    if kind < 0.8:
        return _date(rng)
    if kind < 0.9:
        return _number(rng)
    label = str(rng.choice(_LABELS))
    value = [_price, _date, _number][int(rng.integers(0, 3))](rng)
    sep = str(rng.choice([": ", " ", "  "]))
    return f"{label}{sep}{value}"


# --------------------------------------------------------------------------------------------
# Fonts
# --------------------------------------------------------------------------------------------

_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", os.path.expanduser("~/.fonts"),
              "/Library/Fonts", "/System/Library/Fonts", "C:/Windows/Fonts")
_SKIP_FONTS = ("math", "symbol", "emoji", "dingbat", "wingding")


@lru_cache(maxsize=1)
def list_fonts() -> tuple[str, ...]:
    """Sorted TrueType/OpenType fonts found on this machine (may be empty)."""
    found = set()
    for root in _FONT_DIRS:
        for ext in ("ttf", "otf", "TTF", "OTF"):
            found.update(glob.glob(os.path.join(root, "**", f"*.{ext}"), recursive=True))
    return tuple(sorted(f for f in found
                        if not any(s in os.path.basename(f).lower() for s in _SKIP_FONTS)))


@lru_cache(maxsize=512)
def _font(path: Optional[str], size: int) -> ImageFont.ImageFont:
    if path is None:
        try:
            return ImageFont.load_default(size)
        except TypeError:  # Pillow < 10.1
            return ImageFont.load_default()
    return ImageFont.truetype(path, size)


def _pick_font(rng: np.random.Generator, size: int, fonts: Optional[Sequence[str]] = None):
    fonts = list_fonts() if fonts is None else fonts
    path = str(fonts[int(rng.integers(0, len(fonts)))]) if fonts else None
    return _font(path, size)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

def _colours(rng: np.random.Generator, plain: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(text, background) RGB colours with good contrast; grey when ``plain``."""
    if plain:
        bg = int(rng.integers(215, 256))
        fg = int(rng.integers(0, 90))
        if rng.random() < 0.1:  # some light-on-dark labels
            bg, fg = int(rng.integers(0, 60)), int(rng.integers(200, 256))
        return (fg,) * 3, (bg,) * 3
    if rng.random() < 0.15:
        bg = tuple(int(v) for v in rng.integers(0, 90, 3))
        fg = tuple(int(v) for v in rng.integers(180, 256, 3))
    else:
        bg = tuple(int(v) for v in rng.integers(175, 256, 3))
        fg = tuple(int(v) for v in rng.integers(0, 110, 3))
    return fg, bg


def render_line(rng: np.random.Generator, text: Optional[str] = None, *,
                font_size: Optional[int] = None, plain: bool = False,
                max_aspect: Optional[float] = None,
                fonts: Optional[Sequence[str]] = None, return_text: bool = False):
    """A tightly cropped text line, as a text detector would cut it out: uint8 RGB (H, W, 3).

    ``plain``: grey text on a uniform grey background, little blur (compresses well).
    ``max_aspect``: drop words from the end (new text is drawn if it is one word) until
    width / height <= max_aspect, so the line fits a fixed model width without squeezing.
    ``return_text``: return ``(image, text_drawn)``.
    """
    size = int(font_size if font_size is not None else rng.integers(18, 45))
    font = _pick_font(rng, size, fonts)
    if text is None:
        text = random_text(rng)
    fg, bg = _colours(rng, plain)

    pad_x = int(rng.integers(1, max(2, size // 3)))
    pad_top = int(rng.integers(1, max(2, size // 5)))
    pad_bot = int(rng.integers(1, max(2, size // 5)))
    while True:
        left, top, right, bottom = font.getbbox(text)
        w = right - left + 2 * pad_x
        h = bottom - top + pad_top + pad_bot
        if max_aspect is None or w <= max_aspect * h:
            break
        words = text.split()
        text = " ".join(words[:-1]) if len(words) > 1 else random_text(rng, max_words=2)[:12]

    img = Image.new("RGB", (w, h), bg)
    ImageDraw.Draw(img).text((pad_x - left, pad_top - top), text, font=font, fill=fg)

    # slight geometric distortion: shear (italic-like / perspective skew) and small rotation
    shear = float(rng.uniform(-0.12, 0.12)) if rng.random() < 0.5 else 0.0
    angle = float(rng.uniform(-1.5, 1.5)) if rng.random() < 0.4 else 0.0
    if shear:
        extra = int(math.ceil(abs(shear) * h))
        wide = Image.new("RGB", (w + extra, h), bg)
        wide.paste(img, (extra // 2, 0))
        img = wide.transform(wide.size, Image.Transform.AFFINE,
                             (1, shear, -shear * h / 2, 0, 1, 0),
                             resample=Image.Resampling.BILINEAR, fillcolor=bg)
    if angle:
        img = img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=bg)

    # blur, and a little sensor noise for the non-plain style
    blur = float(rng.uniform(0.0, 0.6 if plain else 1.1))
    if blur > 0.3:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    arr = np.asarray(img, dtype=np.uint8)
    if not plain and rng.random() < 0.5:
        noise = rng.normal(0.0, float(rng.uniform(1, 6)), arr.shape)
        arr = np.clip(arr.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    arr = np.ascontiguousarray(arr)
    return (arr, text) if return_text else arr


def rotate180(img: np.ndarray) -> np.ndarray:
    """The image turned upside down (what the direction classifier calls '180')."""
    return np.ascontiguousarray(img[::-1, ::-1])


def _free(box, taken) -> bool:
    return all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for b in taken)


def render_page(rng: np.random.Generator, size: int = DET_SIZE, *, n_lines: Optional[int] = None,
                plain: bool = False, fonts: Optional[Sequence[str]] = None) -> np.ndarray:
    """A size x size page (uint8 RGB): a paragraph block or two plus scattered lines
    (headings, prices, dates), none overlapping, like a receipt, form or document photo."""
    fg_page, bg = _colours(rng, plain)
    if sum(fg_page) > sum(bg):  # pages are dark-on-light
        fg_page, bg = bg, fg_page
    page = Image.new("RGB", (size, size), bg)
    if not plain:  # gentle illumination gradient
        grad = np.linspace(float(rng.uniform(-25, 0)), float(rng.uniform(0, 10)), size, dtype=np.float32)
        grad = grad[:, None, None] if rng.random() < 0.5 else grad[None, :, None]
        page = Image.fromarray(np.clip(np.asarray(page, dtype=np.float32) + grad, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(page)
    taken: list[tuple[int, int, int, int]] = []

    def put(x: int, y: int, text: str, font, fill) -> bool:
        left, top, right, bottom = font.getbbox(text)
        box = (x - 3, y - 3, x + right - left + 3, y + bottom - top + 3)
        if box[0] < 0 or box[1] < 0 or box[2] > size or box[3] > size or not _free(box, taken):
            return False
        taken.append(box)
        draw.text((x - left, y - top), text, font=font, fill=fill)
        return True

    # paragraph blocks: left-aligned lines with a common font and spacing
    for _ in range(int(rng.integers(0, 3))):
        fsize = int(rng.integers(12, 30))
        font = _pick_font(rng, fsize, fonts)
        x0 = int(rng.integers(4, size // 3))
        y = int(rng.integers(4, size - 2 * fsize))
        step = int(fsize * rng.uniform(1.3, 2.0))
        width = int(rng.integers(size // 3, size - x0 - 8))
        first = int(rng.integers(0, len(SENTENCES)))
        words = " ".join(SENTENCES[first:first + 3]).split()
        for _ in range(int(rng.integers(2, 8))):  # word-wrapped prose
            n = len(words)
            while n > 1 and font.getbbox(" ".join(words[:n]))[2] > width:
                n -= 1
            if not words or not put(x0, y, " ".join(words[:n]), font, fg_page):
                break
            words = words[n:]
            y += step
    # scattered single lines
    n = int(n_lines if n_lines is not None else rng.integers(3, 12))
    placed = 0
    for _ in range(n * 8):
        if placed >= n:
            break
        fsize = int(rng.integers(12, 42))
        font = _pick_font(rng, fsize, fonts)
        text = random_text(rng, max_words=6)
        left, top, right, bottom = font.getbbox(text)
        tw, th = right - left, bottom - top
        if tw >= size - 8 or th >= size - 8:
            continue
        fill = fg_page if rng.random() < 0.7 else tuple(int(v) for v in rng.integers(0, 110, 3))
        placed += put(int(rng.integers(4, size - tw - 4)), int(rng.integers(4, size - th - 4)),
                      text, font, fill)
    if rng.random() < 0.5:
        page = page.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 0.9))))
    arr = np.asarray(page, dtype=np.uint8)
    if not plain and rng.random() < 0.5:
        noise = rng.normal(0.0, float(rng.uniform(1, 5)), arr.shape)
        arr = np.clip(arr.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


# --------------------------------------------------------------------------------------------
# Preprocessing (rapidocr-onnxruntime 1.4.4)
# --------------------------------------------------------------------------------------------

def _linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scale = src / dst
    pos = (np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5
    pos = np.maximum(pos, 0.0)
    i0 = np.floor(pos).astype(np.int64)
    frac = pos - i0
    i0 = np.minimum(i0, src - 1)
    i1 = np.minimum(i0 + 1, src - 1)
    return i0, i1, frac


def cv2_resize_linear(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(img, (w, h))`` with the default INTER_LINEAR, for uint8 (H, W, C) images.

    Half-pixel centres, edge clamping, no antialiasing, rounded back to uint8, as OpenCV does
    (OpenCV's fixed-point arithmetic can differ by 1 in a few pixels).
    """
    w, h = int(size[0]), int(size[1])
    src = img.astype(np.float64)
    y0, y1, fy = _linear_taps(img.shape[0], h)
    x0, x1, fx = _linear_taps(img.shape[1], w)
    rows = src[y0] * (1 - fy)[:, None, None] + src[y1] * fy[:, None, None]
    out = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _to_bgr(img_rgb: np.ndarray) -> np.ndarray:
    return img_rgb[..., ::-1]


def _resize_norm_pad(img_rgb: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    img = _to_bgr(img_rgb)
    img_c, img_h, img_w = shape
    h, w = img.shape[:2]
    ratio = w / float(h)
    if math.ceil(img_h * ratio) > img_w:
        resized_w = img_w
    else:
        resized_w = int(math.ceil(img_h * ratio))
    resized = cv2_resize_linear(img, (resized_w, img_h)).astype("float32")
    resized = resized.transpose((2, 0, 1)) / 255
    resized -= 0.5
    resized /= 0.5
    padded = np.zeros((img_c, img_h, img_w), dtype=np.float32)
    padded[:, :, :resized_w] = resized
    return padded


def cls_preprocess(img_rgb: np.ndarray, shape: tuple[int, int, int] = CLS_SHAPE) -> np.ndarray:
    """rapidocr ``TextClassifier.resize_norm_img``: float32 (3, 48, 192), BGR, [-1, 1], 0-padded."""
    return _resize_norm_pad(img_rgb, shape)


def rec_preprocess(img_rgb: np.ndarray, shape: tuple[int, int, int] = REC_SHAPE) -> np.ndarray:
    """rapidocr ``TextRecognizer.resize_norm_img`` at a fixed width: float32 (3, 48, 320)."""
    return _resize_norm_pad(img_rgb, shape)


def det_preprocess(img_rgb: np.ndarray, limit_side_len: Optional[int] = None,
                   limit_type: str = "min", mean: Sequence[float] = (0.5, 0.5, 0.5),
                   std: Sequence[float] = (0.5, 0.5, 0.5)) -> np.ndarray:
    """rapidocr ``DetPreProcess``: float32 (3, H', W') with H', W' multiples of 32.

    ``limit_side_len=None`` keeps the image size (rounded to multiples of 32), which gives a
    fixed 640x640 input for a 640x640 page; rapidocr's default is ``736, 'min'``.
    """
    img = _to_bgr(img_rgb)
    h, w = img.shape[:2]
    ratio = 1.0
    if limit_side_len is not None:
        if limit_type == "max":
            if max(h, w) > limit_side_len:
                ratio = float(limit_side_len) / (h if h > w else w)
        elif min(h, w) < limit_side_len:
            ratio = float(limit_side_len) / (h if h < w else w)
    resize_h = int(round(int(h * ratio) / 32) * 32)
    resize_w = int(round(int(w * ratio) / 32) * 32)
    if (resize_h, resize_w) != (h, w):
        img = cv2_resize_linear(img, (resize_w, resize_h))
    mean_a = np.asarray(mean, dtype=np.float64)
    std_a = np.asarray(std, dtype=np.float64)
    out = (img.astype("float32") * (1 / 255.0) - mean_a) / std_a
    return np.ascontiguousarray(out.transpose((2, 0, 1)).astype(np.float32))


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------

def make_cls_batch(rng: np.random.Generator, n: int, *, plain: bool = False,
                   rotated_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 (n, 3, 48, 192), labels int64 (n,)); label 1 = turned by 180 degrees.

    Exactly round(n * rotated_fraction) samples are rotated, at random positions.
    """
    labels = np.zeros(n, dtype=np.int64)
    labels[rng.permutation(n)[:int(round(n * rotated_fraction))]] = 1
    x = np.empty((n,) + CLS_SHAPE, dtype=np.float32)
    for i in range(n):
        line = render_line(rng, plain=plain, max_aspect=float(rng.uniform(2.0, 9.0)))
        if labels[i]:
            line = rotate180(line)
        x[i] = cls_preprocess(line)
    return x, labels


def make_rec_batch(rng: np.random.Generator, n: int, *, plain: bool = False,
                   return_text: bool = False):
    """x float32 (n, 3, 48, 320) of upright lines that fit 320 px at height 48 (no squeeze)."""
    x = np.empty((n,) + REC_SHAPE, dtype=np.float32)
    texts = []
    for i in range(n):
        line, text = render_line(rng, plain=plain, max_aspect=REC_SHAPE[2] / REC_SHAPE[1],
                                 return_text=True)
        x[i] = rec_preprocess(line)
        texts.append(text)
    return (x, texts) if return_text else x


def make_det_batch(rng: np.random.Generator, n: int, size: int = DET_SIZE, *,
                   plain: bool = False) -> np.ndarray:
    """x float32 (n, 3, size, size) of rendered pages, normalised as rapidocr's detector."""
    x = np.empty((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        x[i] = det_preprocess(render_page(rng, size, plain=plain))
    return x


def render_captcha(rng: np.random.Generator, text: Optional[str] = None) -> tuple[np.ndarray, str]:
    """(uint8 RGB image, text): 4-6 characters of ``CAPTCHA_CHARS`` as a line, then what
    captchas add to keep machines out: a few strokes across the text and speckle."""
    if text is None:
        text = "".join(rng.choice(list(CAPTCHA_CHARS), int(rng.integers(4, 7))))
    img = Image.fromarray(render_line(rng, text, font_size=int(rng.integers(30, 46))))
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for _ in range(int(rng.integers(0, 4))):
        colour = tuple(int(c) for c in rng.integers(0, 200, 3))
        draw.line([(int(rng.integers(0, w)), int(rng.integers(0, h))),
                   (int(rng.integers(0, w)), int(rng.integers(0, h)))], fill=colour, width=int(rng.integers(1, 3)))
    arr = np.asarray(img, dtype=np.uint8).copy()
    speckle = rng.random(arr.shape[:2]) < float(rng.uniform(0.0, 0.04))
    arr[speckle] = rng.integers(0, 256, (int(speckle.sum()), 3), dtype=np.uint8)
    return arr, text


def captcha_preprocess(img_rgb: np.ndarray, shape: tuple[int, int, int] = CAPTCHA_SHAPE) -> np.ndarray:
    """As ddddocr 1.6.1 ``OCREngine._preprocess_image`` for its own models: height 64 keeping
    the ratio (Pillow's resize), grey (``convert("L")``), ``x / 255``; then, for a fixed batch
    width, squeezed to ``shape``'s width when wider and padded on the right with the image's
    last column's median (its background) when narrower."""
    _, height, width = shape
    grey = Image.fromarray(img_rgb).convert("L")
    w = max(1, int(grey.size[0] * (height / grey.size[1])))
    grey = grey.resize((min(w, width), height), Image.Resampling.LANCZOS)
    arr = np.asarray(grey, dtype=np.float32) / 255.0
    out = np.full((height, width), float(np.median(arr[:, -1])), np.float32)
    out[:, :arr.shape[1]] = arr
    return out[None]


def make_captcha_batch(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[str]]:
    """(x float32 (n, 1, 64, 192), texts)."""
    x = np.empty((n,) + CAPTCHA_SHAPE, dtype=np.float32)
    texts = []
    for i in range(n):
        img, text = render_captcha(rng)
        x[i] = captcha_preprocess(img)
        texts.append(text)
    return x, texts
