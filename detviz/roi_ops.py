"""RoI Pool (Fast R-CNN) and RoI Align (Mask R-CNN), written in plain torch.

Teaching twins of ``torchvision.ops.roi_pool`` and ``torchvision.ops.roi_align``:
the same arguments and the same numbers, bit for bit on the CPU in float32 and float64
(tests/test_roi_ops.py compares values and gradients), written so that the algorithm
can be read. Both cut each region of interest (RoI) into ``output_size`` bins and
reduce every bin to one value per channel:

* ``roi_pool`` snaps the RoI to whole feature cells and keeps the largest cell of each bin.
* ``roi_align`` keeps the fractional coordinates, samples a few points per bin with
  bilinear interpolation and averages them.

Boxes are xyxy in input-image pixels; ``spatial_scale`` (1 / stride) maps them onto
the feature map. Shapes here: B images, C feature channels, H/W feature-map size,
K RoIs (k of them in one chunk), ``oh``/``ow`` the output size. The reference is
torchvision's C++ kernel; where it has quirks (how it rounds, where it clamps, where
zero padding starts, the order in which it adds), this module reproduces them and
says so. Like the kernel, neither op gives a gradient to the boxes, only to ``input``.

Memory. Both ops read the map as one row of C channels per cell (``[B*H*W, C]``), so
that reading a cell for every channel is one row gather, and they work through the
RoIs in chunks whose scratch tensors stay under ``chunk_bytes``, each chunk written
into the preallocated output. Gathering every sample of every RoI at once would not
scale: RoI Align on 1024 RoIs of a 1280-channel map with 7 x 7 bins of 2 x 2 samples
reads 4 x 1024 x 14 x 14 x 1280 floats, 4 GiB. Each op is an ``autograd.Function``
whose backward also works chunk by chunk, adding the output gradient back onto the
cells, so autograd keeps nothing per chunk: RoI Align keeps the boxes, RoI Pool the
cell of each maximum (as the kernel does). Left to plain autograd, the same chunked
code keeps a few small index and weight tensors per chunk while the output lives, and
on notebook 07's input glibc's allocator then held on to up to 11 GiB of freed scratch.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from detviz._validate import check_tensor

__all__ = ["roi_pool", "roi_align", "DEFAULT_CHUNK_BYTES"]

DEFAULT_CHUNK_BYTES = 2**20  # 1 MiB per scratch tensor, about 4 RoIs of notebook 07 (see benchmarks/roi_ops_benchmark.py)
NO_CELL = -1  # RoI Pool's argmax of a bin in which no cell beat the start value: it gets no gradient
_POOL_START = torch.finfo(torch.float32).min  # the kernel starts every max at -FLT_MAX, in float and double


# ---- shared input handling and chunking ----

def _output_hw(output_size) -> tuple[int, int]:
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"output_size must be a positive int or a pair (height, width) of them, got {output_size!r}")
    return size


def _as_rois(input: Tensor, boxes) -> Tensor:
    """Check the arguments; return ``Tensor[K, 5]`` rows (batch index, x1, y1, x2, y2)."""
    check_tensor(input, "input", ndim=4, floating=True, layout="[B, C, H, W]")
    if isinstance(boxes, (list, tuple)):
        for i, b in enumerate(boxes):
            check_tensor(b, f"boxes[{i}]", ndim=2, last_dim=4, layout="[L, 4] xyxy")
        if len(boxes) == 0:
            rois = input.new_zeros(0, 5)
        else:  # the list position is the batch index
            rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])
    else:
        check_tensor(boxes, "boxes", ndim=2, last_dim=5, layout="[K, 5] (batch index, x1, y1, x2, y2) or a list of Tensor[L, 4]")
        rois = boxes
    if rois.dtype != input.dtype:
        raise TypeError(f"boxes must have the dtype of input ({input.dtype}), got {rois.dtype}")
    if rois.device != input.device:
        raise ValueError(f"boxes must be on the device of input ({input.device}), got {rois.device}")
    batch = rois[:, 0].long()
    if rois.shape[0] and (int(batch.min()) < 0 or int(batch.max()) >= input.shape[0]):
        raise ValueError(f"batch indices must lie in [0, {input.shape[0] - 1}], got range "
                         f"[{int(batch.min())}, {int(batch.max())}]")
    return rois.detach()  # the reference kernel gives boxes no gradient


def _check_chunk_bytes(chunk_bytes) -> None:
    expected = "chunk_bytes must be a positive int (bytes of scratch per chunk)"
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int):
        raise TypeError(f"{expected}, got {type(chunk_bytes).__name__}")
    if chunk_bytes <= 0:
        raise ValueError(f"{expected}, got {chunk_bytes}")


def _chunks(start: int, stop: int, bytes_per_roi: int, chunk_bytes: int) -> list[slice]:
    """Consecutive RoIs ``start..stop-1`` in slices whose scratch fits ``chunk_bytes`` (one RoI at least)."""
    step = max(1, chunk_bytes // max(1, bytes_per_roi))
    return [slice(i, min(i + step, stop)) for i in range(start, stop, step)]


def _cell_rows(input: Tensor) -> Tensor:
    """One row of C channels per cell; row ``b*H*W + y*W + x`` is cell (y, x) of image b."""
    return input.permute(0, 2, 3, 1).reshape(-1, input.shape[1])  # [B, C, H, W] -> [B, H, W, C] -> [B*H*W, C]


# ---- RoI Pool ----

def _round_half_away_from_zero(v: Tensor) -> Tensor:
    """C++ ``std::round``: 2.5 -> 3, -2.5 -> -3 (``torch.round`` gives 2 and -2)."""
    halfway = (v - v.trunc()).abs() == 0.5
    return torch.where(halfway, v.trunc() + v.sign(), v.round())


def _bin_edges(start: Tensor, length: Tensor, num_bins: int, limit: int, dtype) -> tuple[Tensor, Tensor]:
    """First and one-past-last cell of every bin along one axis, clamped to ``[0, limit]``.

    Bin ``i`` of a RoI ``length`` cells long covers ``[floor(i * s), ceil((i + 1) * s))``
    with ``s = length / num_bins``, so neighbouring bins may share a cell.
    Returns two ``Tensor[K, num_bins]`` of int64.
    """
    bin_size = length.to(dtype) / num_bins  # [K]
    i = torch.arange(num_bins, dtype=dtype, device=start.device)  # [num_bins]
    lo = torch.floor(i * bin_size[:, None]).long() + start[:, None]  # [K, num_bins]
    hi = torch.ceil((i + 1) * bin_size[:, None]).long() + start[:, None]
    return lo.clamp(0, limit), hi.clamp(0, limit)


def _max_per_bin(cells: Tensor, first_row: Tensor, rows: tuple[Tensor, Tensor], cols: tuple[Tensor, Tensor],
                 W: int, keep_cell: bool) -> tuple[Tensor, Tensor | None]:
    """Max over each bin's cells -> values ``[k, oh, ow, C]`` and the cell ``y * W + x`` it came from.

    ``cells`` are the rows of ``_cell_rows`` and one last row of -inf, which a tap outside
    its bin reads instead. Visits the cells of every bin row by row, as the kernel's loop
    does, and keeps a value only when it is strictly larger, so ties go to the first cell
    (which then gets the gradient) and NaN never wins. Like the kernel, a max starts at
    -FLT_MAX with cell ``NO_CELL``; an empty bin (off the map) gives 0.
    """
    (r_lo, r_hi), (c_lo, c_hi) = rows, cols  # [k, oh] and [k, ow]
    outside = cells.shape[0] - 1  # the -inf row
    shape = (len(first_row), r_lo.shape[1], c_lo.shape[1], cells.shape[1])  # [k, oh, ow, C]
    best = cells.new_full(shape, max(_POOL_START, torch.finfo(cells.dtype).min))  # float16 stops at -65504
    best_cell = torch.full(shape, NO_CELL, dtype=torch.int32, device=cells.device) if keep_cell else None
    for dy in range(int((r_hi - r_lo).max())):  # offsets inside the tallest bin of the chunk
        y = r_lo + dy  # [k, oh]
        for dx in range(int((c_hi - c_lo).max())):
            x = c_lo + dx  # [k, ow]
            cell = y[:, :, None] * W + x[:, None, :]  # [k, oh, ow]
            in_bin = (y < r_hi)[:, :, None] & (x < c_hi)[:, None, :]
            tap = torch.where(in_bin, first_row[:, None, None] + cell, outside)
            value = cells.index_select(0, tap.flatten()).view(shape)  # [k, oh, ow, C]
            better = value > best
            best = torch.where(better, value, best)
            if keep_cell:
                best_cell = torch.where(better, cell[..., None].int(), best_cell)
    empty = ((r_hi <= r_lo)[:, :, None] | (c_hi <= c_lo)[:, None, :])[..., None]  # [k, oh, ow, 1]
    return best.masked_fill(empty, 0), best_cell


class _RoIPool(torch.autograd.Function):
    """RoI Pool in chunks of RoIs; the backward adds each output gradient onto its bin's max cell."""

    @staticmethod
    def forward(ctx, input, rois, output_hw, spatial_scale, chunk_bytes):
        B, C, H, W = input.shape
        x1, y1, x2, y2 = _round_half_away_from_zero(rois[:, 1:] * spatial_scale).long().unbind(1)  # step 1
        roi_w, roi_h = (x2 - x1 + 1).clamp(min=1), (y2 - y1 + 1).clamp(min=1)  # step 2
        rows = _bin_edges(y1, roi_h, output_hw[0], H, input.dtype)  # step 3: [K, oh] each
        cols = _bin_edges(x1, roi_w, output_hw[1], W, input.dtype)  # [K, ow] each
        cells = torch.cat([_cell_rows(input), input.new_full((1, C), float("-inf"))])  # [B*H*W + 1, C]
        batch = rois[:, 0].long()
        out = input.new_empty(len(rois), C, *output_hw)  # [K, C, oh, ow]
        # the cell y * W + x of each max, int32 as in the kernel; only a backward needs it
        argmax = torch.empty(out.shape, dtype=torch.int32, device=input.device) if ctx.needs_input_grad[0] else None
        # a chunk visits the offsets of its largest bin: RoIs with bins of one size go together
        tallest, widest = (rows[1] - rows[0]).amax(dim=1), (cols[1] - cols[0]).amax(dim=1)  # [K]
        order = torch.argsort(tallest * (W + 1) + widest)
        for k in _chunks(0, len(rois), C * out.shape[2] * out.shape[3] * out.element_size(), chunk_bytes):  # step 4
            roi = order[k]
            value, cell = _max_per_bin(cells, batch[roi] * H * W, (rows[0][roi], rows[1][roi]),
                                       (cols[0][roi], cols[1][roi]), W, argmax is not None)
            out.index_copy_(0, roi, value.permute(0, 3, 1, 2))  # [k, oh, ow, C] -> [k, C, oh, ow]
            if argmax is not None:
                argmax.index_copy_(0, roi, cell.permute(0, 3, 1, 2))
        ctx.save_for_backward(batch, argmax)
        ctx.input_shape, ctx.chunk_bytes = input.shape, chunk_bytes
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        batch, argmax = ctx.saved_tensors
        B, C, H, W = ctx.input_shape
        nowhere = B * C * H * W  # one extra slot takes (and drops) the gradient of bins with NO_CELL
        grad_input = grad_out.new_zeros(nowhere + 1)
        channel = torch.arange(C, device=grad_out.device)
        # flat index of a max cell in [B, C, H, W]: (b * C + c) * H * W + cell; taken in the kernel's
        # order (RoI, channel, bin), so that equal cells add up in the same order
        for k in _chunks(0, len(batch), C * argmax.shape[2] * argmax.shape[3] * 8, ctx.chunk_bytes):
            cell = argmax[k].long()  # [k, C, oh, ow]
            index = ((batch[k, None] * C + channel) * (H * W))[:, :, None, None] + cell
            index = torch.where(cell == NO_CELL, nowhere, index)
            grad_input.index_add_(0, index.flatten(), grad_out[k].flatten())
        return grad_input[:nowhere].view(B, C, H, W), None, None, None, None


def roi_pool(input: Tensor, boxes, output_size, spatial_scale: float = 1.0, *,
             chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Tensor:
    """RoI max pooling (Girshick, "Fast R-CNN", ICCV 2015), as ``torchvision.ops.roi_pool``.

    Per RoI:

    1. Scale the corners to feature cells and round them, halves away from zero.
    2. The RoI spans ``x2 - x1 + 1`` cells (both ends included), at least 1.
    3. Cut it into ``oh`` x ``ow`` bins whose edges are floored (start) / ceiled (end),
       shifted by the RoI's first cell and clamped to the map.
    4. Each output is the max over its bin's cells; a bin that lies off the map is 0.

    Args:
        input: Tensor[B, C, H, W], float feature maps.
        boxes: Tensor[K, 5] rows (batch index, x1, y1, x2, y2), or a list of B
            Tensor[L, 4] xyxy (one per image), in input-image pixels, dtype of ``input``.
        output_size: ``oh`` (square) or ``(oh, ow)``.
        spatial_scale: feature cells per image pixel, e.g. 1/16.
        chunk_bytes: scratch bytes per tensor of one chunk of RoIs; changes memory and
            speed, never the result.

    Returns:
        Tensor[K, C, oh, ow], dtype of ``input``; the gradient flows to each bin's max cell.
    """
    rois = _as_rois(input, boxes)
    _check_chunk_bytes(chunk_bytes)
    return _RoIPool.apply(input, rois, _output_hw(output_size), spatial_scale, chunk_bytes)


# ---- RoI Align ----

class _AlignGeometry(NamedTuple):
    """Steps 1-3 of ``roi_align`` for every RoI, all ``Tensor[K]``, in feature cells."""
    batch: Tensor  # int64 image index
    y1: Tensor  # first corner, after the aligned shift
    x1: Tensor
    bin_h: Tensor  # bin size
    bin_w: Tensor
    grid_h: Tensor  # int64 samples per bin along each axis
    grid_w: Tensor


def _align_geometry(rois: Tensor, output_hw, spatial_scale, sampling_ratio, aligned) -> _AlignGeometry:
    x1, y1, x2, y2 = (rois[:, 1:] * spatial_scale - (0.5 if aligned else 0.0)).unbind(1)  # step 1: [K] each
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    out_h, out_w = output_hw
    if sampling_ratio > 0:  # step 3
        grid_h = grid_w = torch.full_like(rois[:, 0], sampling_ratio, dtype=torch.long)
    else:
        grid_h, grid_w = torch.ceil(roi_h / out_h).long(), torch.ceil(roi_w / out_w).long()
    return _AlignGeometry(rois[:, 0].long(), y1, x1, roi_h / out_h, roi_w / out_w, grid_h, grid_w)  # step 2


def _runs(g: _AlignGeometry) -> list[tuple[int, int, int, int]]:
    """Runs of consecutive RoIs sharing one sample grid: ``(start, stop, g_h, g_w)``.

    One run when ``sampling_ratio > 0``. Taking the RoIs in order keeps the backward's
    additions in the kernel's order. Runs with no samples (an aligned RoI of zero or
    negative size) are left out: their output stays 0.
    """
    changes = (g.grid_h[1:] != g.grid_h[:-1]) | (g.grid_w[1:] != g.grid_w[:-1])  # [K-1]
    bounds = [0, *(torch.nonzero(changes)[:, 0] + 1).tolist(), len(g.batch)]
    return [(start, stop, int(g.grid_h[start]), int(g.grid_w[start]))
            for start, stop in zip(bounds[:-1], bounds[1:]) if stop > start
            and g.grid_h[start] > 0 and g.grid_w[start] > 0]


def _sample_coords(start: Tensor, bin_size: Tensor, num_bins: int, grid: int) -> Tensor:
    """``grid`` evenly spaced sample centres in each of ``num_bins`` bins -> ``Tensor[k, num_bins, grid]``.

    Sample ``j`` of bin ``i`` sits at ``start + i * bin_size + (j + 0.5) * bin_size / grid``,
    computed in that order, as the kernel does.
    """
    i = torch.arange(num_bins, dtype=start.dtype, device=start.device)[None, :, None]  # [1, num_bins, 1]
    j = torch.arange(grid, dtype=start.dtype, device=start.device)[None, None, :] + 0.5  # [1, 1, grid]
    s, b = start[:, None, None], bin_size[:, None, None]  # [k, 1, 1]
    return s + i * b + j * b / grid


def _neighbours(coord: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The two cells around each sample coordinate along one axis, and their weights.

    Matches the kernel: a sample more than one cell off the map (``< -1`` or ``> size``)
    gets weight 0; otherwise it is clamped onto ``[0, size - 1]``, so the border cell
    stands in for the padding just outside it (past the last cell both neighbours are
    that cell, with weights 1 and 0).
    Returns ``low, high`` (int64 indices) and ``w_low, w_high``, all shaped like ``coord``.
    """
    inside = (coord >= -1.0) & (coord <= size)
    coord = coord.clamp(0, size - 1)
    low = coord.long()  # floors, since coord >= 0
    high = (low + 1).clamp(max=size - 1)
    frac = coord - low
    zero = torch.zeros_like(frac)
    return low, high, torch.where(inside, 1.0 - frac, zero), torch.where(inside, frac, zero)


def _bilinear_taps(g: _AlignGeometry, k: slice, grid_hw, output_hw, H: int, W: int) -> tuple[Tensor, Tensor]:
    """The four cells each sample of RoIs ``k`` reads (rows of ``_cell_rows``) and their weights.

    Returns ``index`` (int64) and ``weight``, both ``[k, oh, ow, g_h, g_w, 4]``, the corners in
    the kernel's order: (y_low, x_low), (y_low, x_high), (y_high, x_low), (y_high, x_high).
    """
    ys = _sample_coords(g.y1[k], g.bin_h[k], output_hw[0], grid_hw[0])  # steps 2-3: [k, oh, g_h]
    xs = _sample_coords(g.x1[k], g.bin_w[k], output_hw[1], grid_hw[1])  # [k, ow, g_w]
    y_lo, y_hi, wy_lo, wy_hi = (t[:, :, None, :, None] for t in _neighbours(ys, H))  # [k, oh, 1, g_h, 1]
    x_lo, x_hi, wx_lo, wx_hi = (t[:, None, :, None, :] for t in _neighbours(xs, W))  # [k, 1, ow, 1, g_w]
    first_row = (g.batch[k] * H * W)[:, None, None, None, None]  # [k, 1, 1, 1, 1]
    corners = [(y_lo, x_lo, wy_lo, wx_lo), (y_lo, x_hi, wy_lo, wx_hi),
               (y_hi, x_lo, wy_hi, wx_lo), (y_hi, x_hi, wy_hi, wx_hi)]
    index = torch.stack(torch.broadcast_tensors(*[first_row + y * W + x for y, x, _, _ in corners]), dim=-1)
    weight = torch.stack(torch.broadcast_tensors(*[wy * wx for _, _, wy, wx in corners]), dim=-1)
    return index, weight


def _average_of_samples(cells: Tensor, index: Tensor, weight: Tensor) -> Tensor:
    """Steps 4-5 for one chunk: the mean of each bin's bilinear samples -> ``[k, oh, ow, C]``.

    Adds in the kernel's order, ``((w1*v1 + w2*v2) + w3*v3) + w4*v4`` per sample and the
    samples one after another, then divides by their count: float32 and float64 results
    equal the kernel's bit for bit (``torch.sum`` over the samples would add in another order).
    """
    k, out_h, out_w, grid_h, grid_w, _ = index.shape
    total = cells.new_zeros(k * out_h * out_w, cells.shape[1])  # one row per bin: [k*oh*ow, C]
    for iy in range(grid_h):
        for ix in range(grid_w):
            taps = index[:, :, :, iy, ix].reshape(-1, 4)  # [k*oh*ow, 4]: the rows this sample reads
            w = weight[:, :, :, iy, ix].reshape(-1, 4, 1)  # [k*oh*ow, 4, 1]
            sample = cells.index_select(0, taps[:, 0]) * w[:, 0]  # [k*oh*ow, C]
            for corner in (1, 2, 3):
                sample += cells.index_select(0, taps[:, corner]) * w[:, corner]
            total += sample
    return (total / (grid_h * grid_w)).view(k, out_h, out_w, -1)  # [k*oh*ow, C] -> [k, oh, ow, C]


class _RoIAlign(torch.autograd.Function):
    """RoI Align in chunks of RoIs; the backward recomputes each chunk's taps and adds
    ``grad * weight / count`` onto every cell a sample read (the same taps, read backwards)."""

    @staticmethod
    def forward(ctx, input, rois, output_hw, spatial_scale, sampling_ratio, aligned, chunk_bytes):
        B, C, H, W = input.shape
        g = _align_geometry(rois, output_hw, spatial_scale, sampling_ratio, aligned)
        cells = _cell_rows(input)
        out = input.new_zeros(len(rois), C, *output_hw)  # [K, C, oh, ow]
        for start, stop, grid_h, grid_w in _runs(g):
            for k in _chunks(start, stop, C * out.shape[2] * out.shape[3] * out.element_size(), chunk_bytes):
                index, weight = _bilinear_taps(g, k, (grid_h, grid_w), output_hw, H, W)
                out[k] = _average_of_samples(cells, index, weight).permute(0, 3, 1, 2)  # -> [k, C, oh, ow]
        ctx.save_for_backward(rois)
        ctx.settings = (input.shape, output_hw, spatial_scale, sampling_ratio, aligned, chunk_bytes)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        (rois,) = ctx.saved_tensors
        (B, C, H, W), output_hw, spatial_scale, sampling_ratio, aligned, chunk_bytes = ctx.settings
        g = _align_geometry(rois, output_hw, spatial_scale, sampling_ratio, aligned)
        grad_cells = grad_out.new_zeros(B * H * W, C)  # rows as in _cell_rows
        for start, stop, grid_h, grid_w in _runs(g):
            # every (sample, corner) of a chunk gets one row of C gradients
            bytes_per_roi = C * grad_out.shape[2] * grad_out.shape[3] * grid_h * grid_w * 4 * grad_out.element_size()
            for k in _chunks(start, stop, bytes_per_roi, chunk_bytes):
                index, weight = _bilinear_taps(g, k, (grid_h, grid_w), output_hw, H, W)
                grad = grad_out[k].permute(0, 2, 3, 1)[:, :, :, None, None, None, :]  # [k, oh, ow, 1, 1, 1, C]
                share = grad * weight[..., None] / (grid_h * grid_w)  # [k, oh, ow, g_h, g_w, 4, C]
                # rows in the kernel's order (RoI, bin, sample, corner), so equal cells add up as there
                grad_cells.index_add_(0, index.flatten(), share.reshape(-1, C))
        grad_input = grad_cells.view(B, H, W, C).permute(0, 3, 1, 2).contiguous()  # -> [B, C, H, W]
        return grad_input, None, None, None, None, None, None


def roi_align(input: Tensor, boxes, output_size, spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False, *,
              chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Tensor:
    """RoI Align (He et al., "Mask R-CNN", ICCV 2017), as ``torchvision.ops.roi_align``.

    Per RoI:

    1. Scale the corners to feature cells without rounding; with ``aligned=True`` shift
       them by -0.5 so that cell centres sit at integer coordinates (Detectron2). With
       ``aligned=False`` (legacy, Faster R-CNN) the RoI is at least 1 x 1 cell.
    2. Cut it into ``oh`` x ``ow`` equal bins.
    3. Put ``g_h x g_w`` sample points on a regular grid inside each bin:
       ``g = sampling_ratio`` when it is > 0, else ``ceil(roi_size / output_size)``
       per RoI and axis (about one sample per cell).
    4. Read each sample by bilinear interpolation of its four neighbouring cells
       (zero beyond one cell off the map, clamped to the border cell otherwise).
    5. Average the samples of each bin (a RoI with no samples gives 0).

    Consecutive RoIs sharing one sample grid (all of them when ``sampling_ratio > 0``)
    are computed together, in chunks of at most ``chunk_bytes`` per scratch tensor.

    Args:
        input: Tensor[B, C, H, W], float feature maps.
        boxes: Tensor[K, 5] rows (batch index, x1, y1, x2, y2), or a list of B
            Tensor[L, 4] xyxy (one per image), in input-image pixels, dtype of ``input``.
        output_size: ``oh`` (square) or ``(oh, ow)``.
        spatial_scale: feature cells per image pixel, e.g. 1/16.
        sampling_ratio: samples per bin along each axis; <= 0 means adaptive (step 3).
        aligned: apply the half-cell shift of step 1.
        chunk_bytes: scratch bytes per tensor of one chunk of RoIs; changes memory and
            speed, never the result.

    Returns:
        Tensor[K, C, oh, ow], dtype of ``input``, differentiable w.r.t. ``input``.
    """
    rois = _as_rois(input, boxes)
    _check_chunk_bytes(chunk_bytes)
    return _RoIAlign.apply(input, rois, _output_hw(output_size), spatial_scale, sampling_ratio, aligned, chunk_bytes)
