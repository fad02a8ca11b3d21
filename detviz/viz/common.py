"""What every drawing module shares: input checks (tensors or arrays in, numpy copies out),
class colours, and the pixel frame of an image."""
from __future__ import annotations

import numbers

import matplotlib
import numpy as np
import torch
from matplotlib.colors import is_color_like, to_rgba
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

__all__ = ["class_color", "plain_log_axis", "BACKGROUND_COLOR", "DEFAULT_COLOR", "LEVEL_COLORS"]

BACKGROUND_COLOR = (0.75, 0.75, 0.75, 1.0)  # class_color(num_classes, num_classes)
DEFAULT_COLOR = "tab:blue"
LEVEL_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")
# tab20 lists a dark and a light shade of each hue in turn; taking the dark shades first keeps
# neighbouring class ids visibly different. Left out: its grey pair (14, 15) and the light blue and
# lavender (1, 9), which lie within 0.2 of BACKGROUND_COLOR: such a class vanishes against it.
_CLOSE_TO_GREY = (1, 9, 14, 15)
_PALETTE = tuple(matplotlib.colormaps["tab20"](i) for i in (*range(0, 20, 2), *range(1, 20, 2))
                 if i not in _CLOSE_TO_GREY)


# ----------------------------------------------------------------------------- input helpers
def _array(x, name: str, layout: str, *, ndim: int | None = None, last_dim: int | None = None) -> np.ndarray:
    """A numpy copy of ``x`` (tensor, array or list); ValueError naming ``layout`` on a wrong shape."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        arr = (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x).numpy().copy()
    else:
        arr = np.array(x, copy=True)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be a numeric {layout} tensor or array, got dtype {arr.dtype}")
    wrong_last = last_dim is not None and (arr.ndim == 0 or arr.shape[-1] != last_dim)
    if (ndim is not None and arr.ndim != ndim) or wrong_last:
        raise ValueError(f"{name} must be {layout}, got shape {list(arr.shape)}")
    return arr


def _boxes(boxes, name: str = "boxes") -> np.ndarray:
    b = _array(boxes, name, "[N, 4] xyxy", ndim=2, last_dim=4).astype(np.float64)
    if not np.isfinite(b).all():
        raise ValueError(f"{name} must be finite [N, 4] xyxy boxes, got NaN/Inf")
    if ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).any():
        raise ValueError(f"{name} must be xyxy with x2 >= x1 and y2 >= y1 (convert xywh/cxcywh first)")
    return b


def _int_array(x, name: str, layout: str, length: int | None = None) -> np.ndarray:
    a = _array(x, name, layout, ndim=1)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be {layout} of an integer dtype, got {a.dtype}")
    if length is not None and a.shape[0] != length:
        raise ValueError(f"{name} must be {layout} with one entry per box ({length}), got shape {list(a.shape)}")
    return a


def _size(size, name: str) -> tuple[int, int]:
    ok = isinstance(size, (tuple, list)) and len(size) == 2
    ok = ok and all(isinstance(s, numbers.Integral) and s > 0 for s in size)
    if not ok:
        raise ValueError(f"{name} must be (h, w) with two positive integers, got {size!r}")
    return int(size[0]), int(size[1])


def _positive(value, name: str) -> float:
    if not (isinstance(value, numbers.Real) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _colors(colors, labels, n: int) -> list:
    """One RGBA per item: explicit ``colors`` (one or n), else by class label, else the default."""
    if colors is None:
        return [class_color(lab) for lab in labels] if labels is not None else [to_rgba(DEFAULT_COLOR)] * n
    if is_color_like(colors):
        return [to_rgba(colors)] * n
    if len(colors) != n:
        raise ValueError(f"colors must be one colour or a list of {n} colours, got {len(colors)}")
    return [to_rgba(c) for c in colors]


def _corners(boxes: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = boxes.T
    return np.stack([np.stack([x1, y1], -1), np.stack([x2, y1], -1),
                     np.stack([x2, y2], -1), np.stack([x1, y2], -1)], axis=1)  # [N, 4] -> [N, 4 corners, 2]


def _set_frame(ax, h: int, w: int) -> None:
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)  # y grows downwards, as in image rows
    ax.set_aspect("equal")


# ----------------------------------------------------------------------------- colours and images
def class_color(label, num_classes: int | None = None) -> tuple[float, float, float, float]:
    """RGBA colour of a class id, identical in every figure (tab20 without the colours close to
    grey, dark shades first, 16 colours cycled).

    With ``num_classes`` given, ``label == num_classes`` is the dense heads' background and
    comes back light grey.
    """
    label = int(label)
    if num_classes is not None and label == num_classes:
        return BACKGROUND_COLOR
    if label < 0 or (num_classes is not None and label > num_classes):
        top = "" if num_classes is None else f", {num_classes} = background"
        raise ValueError(f"label must be a class id >= 0{top}, got {label}")
    return _PALETTE[label % len(_PALETTE)]


def _image_hwc(image) -> np.ndarray:
    """``Tensor[C, H, W]`` or ``ndarray[H, W, C]`` (C = 1 or 3, uint8 or float in [0, 1]) -> HWC copy."""
    accepted = "a torch Tensor[3 or 1, H, W] (CHW) or a numpy ndarray[H, W, 3 or 1] (HWC)"
    is_tensor = isinstance(image, torch.Tensor)
    if not (is_tensor or isinstance(image, np.ndarray)):
        raise ValueError(f"image must be {accepted}, got {type(image).__name__}")
    img = _array(image, "image", accepted)
    if is_tensor and img.ndim == 3 and img.shape[0] in (1, 3):
        img = img.transpose(1, 2, 0)  # [C, H, W] -> [H, W, C]
    elif is_tensor or img.ndim != 3 or img.shape[2] not in (1, 3):
        swapped = img.ndim == 3 and (img.shape[0] in (1, 3)) != (img.shape[2] in (1, 3))
        hint = " (it looks like the other layout)" if swapped else ""
        raise ValueError(f"image must be {accepted}, got {type(image).__name__} of shape {list(img.shape)}{hint}")
    if np.issubdtype(img.dtype, np.floating):
        if img.size and (img.min() < 0 or img.max() > 1):
            raise ValueError(f"a float image must lie in [0, 1], got range [{img.min():.3g}, {img.max():.3g}] "
                             "(undo the mean/std normalisation first)")
    elif img.dtype != np.uint8:
        raise ValueError(f"image must be uint8 or float in [0, 1], got dtype {img.dtype}")
    return img



def _index_array(index, n: int, name: str) -> np.ndarray:
    a = _array(index, name, f"[K] indices in [0, {n}) or a bool mask [{n}]", ndim=1)
    if a.dtype == np.bool_ and len(a) == n:
        return np.nonzero(a)[0]
    if not np.issubdtype(a.dtype, np.integer) or (a.size and (a.min() < 0 or a.max() >= n)):
        raise ValueError(f"{name} must be [K] indices in [0, {n}) or a bool mask [{n}], got {a.tolist()}")
    return a


def plain_log_axis(ax, which: str = "x") -> None:
    """A log scale on ``which`` ("x", "y" or "xy") labelled 1, 2, 5, 10, 20, 50, ... in plain numbers
    (no 10^k, no crowded minor labels)."""
    for name in which:
        axis = ax.xaxis if name == "x" else ax.yaxis
        (ax.set_xscale if name == "x" else ax.set_yscale)("log")
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(NullFormatter())
