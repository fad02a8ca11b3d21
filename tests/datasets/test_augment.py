import pytest
import torch
from torch.testing import assert_close

from detviz.datasets.augment import (NanoDetWarp, letterbox, scale_flip_translate_matrix, unletterbox_boxes, warp_boxes,
                                     warp_image)

BOXES = torch.tensor([[20.0, 30, 50, 60], [60, 10, 90, 45]])
LABELS = torch.tensor([3, 7])
WARP_BOXES = torch.tensor([[10.0, 20, 50, 60], [0, 0, 100, 80]])


# ---------------------------------------------------------------- box warps
def test_identity_and_round_trip():
    assert_close(warp_boxes(WARP_BOXES, torch.eye(3)), WARP_BOXES)
    m = scale_flip_translate_matrix(0.5, (7.0, -3.0), flip_width=100)
    there = warp_boxes(WARP_BOXES, m)
    back = warp_boxes(there, torch.linalg.inv(m))
    assert_close(back, WARP_BOXES, atol=1e-5, rtol=0)


def test_scale_flip_translate_by_hand():
    m = scale_flip_translate_matrix(0.5, (1.0, 2.0), flip_width=100)
    # x -> 100 - x, then * 0.5 + 1: [10, 50] -> [50, 90] -> [26, 46]; y: [20, 60] -> [12, 32]
    assert_close(warp_boxes(WARP_BOXES[:1], m), torch.tensor([[26.0, 12, 46, 32]]))


def test_rotation_takes_the_hull_and_clips():
    rot90 = torch.tensor([[0.0, -1, 100], [1, 0, 0], [0, 0, 1]])  # (x, y) -> (100 - y, x)
    assert_close(warp_boxes(WARP_BOXES[:1], rot90), torch.tensor([[40.0, 10, 80, 50]]))
    assert_close(warp_boxes(WARP_BOXES[1:], torch.eye(3), width=64, height=48), torch.tensor([[0.0, 0, 64, 48]]))


def test_warp_boxes_empty_and_input_untouched():
    assert warp_boxes(torch.zeros(0, 4), torch.eye(3)).shape == (0, 4)
    copy = WARP_BOXES.clone()
    warp_boxes(WARP_BOXES, scale_flip_translate_matrix(2.0))
    assert torch.equal(WARP_BOXES, copy)


def test_warp_boxes_bad_input():
    with pytest.raises(ValueError, match=r"matrix must be Tensor\[3, 3\], got shape \[2, 3\]"):
        warp_boxes(WARP_BOXES, torch.eye(3)[:2])
    with pytest.raises(ValueError, match=r"boxes must be Tensor\[M, 4\] xyxy, got shape \[2, 5\]"):
        warp_boxes(torch.zeros(2, 5), torch.eye(3))


# ---------------------------------------------------------------- image warps
def _image(h=80, w=100, seed=0):
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def _target(boxes=BOXES, labels=LABELS):
    return {"boxes": boxes.clone(), "labels": labels.clone()}


def _seeded(seed):
    return torch.Generator().manual_seed(seed)


IDENTITY = dict(input_size=(100, 80), scale=(1.0, 1.0), translate=0.0, flip=0.0)


def test_identity_settings_are_exact():
    image, target = _image(), _target()
    out, new_target, meta = NanoDetWarp(**IDENTITY)(image, target, _seeded(0))
    assert torch.equal(out, image)
    assert torch.equal(new_target["boxes"], BOXES)
    assert torch.equal(new_target["labels"], LABELS)
    assert torch.equal(meta["warp_matrix"], torch.eye(3, dtype=torch.float64))
    assert meta["img_shape"] == (80, 100) and meta["ori_shape"] == (80, 100)


def test_integer_shift_moves_pixels_exactly_and_fills_border():
    image = _image(10, 12)
    shift = torch.tensor([[1.0, 0, 3], [0, 1, -2], [0, 0, 1]], dtype=torch.float64)  # x + 3, y - 2
    out = warp_image(image, shift, (10, 12), fill=0.25)
    assert torch.equal(out[:, :8, 3:], image[:, 2:, :9])
    assert (out[:, :, :3] == 0.25).all() and (out[:, 8:, :] == 0.25).all()


def test_warp_image_matches_grid_sample():
    image = _image(9, 13).double()
    matrix = torch.tensor([[-1.3, 0, 17.2], [0, 0.7, 1.9], [0, 0, 1]], dtype=torch.float64)
    out = warp_image(image, matrix, (11, 15))
    # grid_sample (align_corners=False) reads normalised coords: -1 and 1 are the outer pixel edges
    ys, xs = torch.meshgrid(torch.arange(11.0) + 0.5, torch.arange(15.0) + 0.5, indexing="ij")
    src = torch.linalg.inv(matrix) @ torch.stack([xs.flatten(), ys.flatten(), torch.ones(165)]).double()
    grid = torch.stack([src[0] / 13 * 2 - 1, src[1] / 9 * 2 - 1], dim=-1).reshape(1, 11, 15, 2)
    expected = torch.nn.functional.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros",
                                               align_corners=False)[0]
    assert_close(out, expected)


def test_flip_moves_a_left_box_to_the_right():
    image, target = _image(), _target(torch.tensor([[10.0, 20, 30, 40]]), torch.tensor([1]))
    out, new_target, meta = NanoDetWarp(**{**IDENTITY, "flip": 1.0})(image, target, _seeded(0))
    assert torch.equal(new_target["boxes"], torch.tensor([[70.0, 20, 90, 40]]))  # x -> 100 - x
    assert torch.equal(out, image.flip(-1))
    assert_close(meta["warp_matrix"], torch.tensor([[-1.0, 0, 100], [0, 1, 0], [0, 0, 1]], dtype=torch.float64))


def test_resize_keep_ratio_by_hand():
    image, target = _image(100, 200), _target(torch.tensor([[0.0, 0, 200, 100]]), torch.tensor([0]))
    settings = dict(input_size=(320, 320), scale=(1.0, 1.0), translate=0.0, flip=0.0)
    out, kept, meta = NanoDetWarp(**settings)(image, target, _seeded(0))
    # r = min(320 / 200, 320 / 100) = 1.6: 320 x 160 centred vertically, rows 80..240
    assert out.shape == (3, 320, 320) and meta["img_shape"] == (320, 320) and meta["ori_shape"] == (100, 200)
    assert_close(kept["boxes"], torch.tensor([[0.0, 80, 320, 240]]))
    # bilinear reads blend one row either side of the edge with the zero border
    assert (out[:, :79] == 0).all() and (out[:, 241:] == 0).all() and (out[:, 81:239] > 0).all()
    _, stretched, _ = NanoDetWarp(**settings, keep_ratio=False)(image, target, _seeded(0))
    assert_close(stretched["boxes"], torch.tensor([[0.0, 0, 320, 320]]))
    _, tall, _ = NanoDetWarp(**settings)(_image(200, 100), _target(torch.tensor([[0.0, 0, 100, 200]]),
                                                                   torch.tensor([0])), _seeded(0))
    assert_close(tall["boxes"], torch.tensor([[80.0, 0, 240, 320]]))  # padded left and right instead


def test_boxes_leaving_the_image_are_dropped_with_their_labels():
    boxes = torch.tensor([[0.0, 0, 10, 10], [45, 45, 55, 55], [20, 40, 25.3, 60], [70, 70, 70, 80]])
    target = _target(boxes, torch.tensor([0, 1, 2, 3]))
    _, kept, _ = NanoDetWarp(**{**IDENTITY, "input_size": (100, 100), "scale": (2.0, 2.0)})(
        _image(100, 100), target, _seeded(0))
    # zoom x2 about (50, 50): the corner box leaves, the sliver becomes 0.6 px wide, the line stays 0 wide
    assert_close(kept["boxes"], torch.tensor([[40.0, 40, 60, 60]]))
    assert torch.equal(kept["labels"], torch.tensor([1]))
    assert torch.equal(target["boxes"], boxes)  # input untouched


def test_round_trip_with_the_recorded_matrix():
    boxes = torch.tensor([[30.0, 25, 50, 45], [45, 30, 70, 55], [40.5, 35.25, 41.75, 50]])
    warp = NanoDetWarp(input_size=(160, 128), scale=(0.8, 1.2), translate=0.05)
    for seed in range(5):
        _, moved, meta = warp(_image(), _target(boxes, torch.tensor([0, 1, 2])), _seeded(seed))
        assert moved["boxes"].shape == (3, 4)  # central boxes stay inside the output
        back = warp_boxes(moved["boxes"], torch.linalg.inv(meta["warp_matrix"]))
        assert_close(back, boxes, atol=1e-4, rtol=0)


def test_drawn_rectangle_lands_inside_its_warped_box():
    image = torch.zeros(3, 80, 100)
    image[:, 30:60, 20:50] = 1.0  # covers exactly the box [20, 30, 50, 60]
    warp = NanoDetWarp(input_size=(96, 96), scale=(0.6, 1.4), translate=0.1)
    for seed in range(6):
        out, moved, _ = warp(image, _target(BOXES[:1], LABELS[:1]), _seeded(seed))
        x1, y1, x2, y2 = moved["boxes"][0].tolist()
        ys, xs = torch.nonzero(out[0] > 0.5, as_tuple=True)
        assert xs.numel() > 0
        # lit pixel centres lie inside the box (1 px slack for the bilinear edge)
        assert xs.min() + 0.5 >= x1 - 1 and xs.max() + 0.5 <= x2 + 1
        assert ys.min() + 0.5 >= y1 - 1 and ys.max() + 0.5 <= y2 + 1
        # and the box, shrunk by 2 px, is lit all over
        inner = out[0, int(y1) + 2:int(y2) - 1, int(x1) + 2:int(x2) - 1]
        assert inner.numel() > 0 and (inner > 0.99).all()


def test_seeded_generator_is_deterministic():
    warp = NanoDetWarp()
    first = warp(_image(), _target(), _seeded(3))
    again = warp(_image(), _target(), _seeded(3))
    other = warp(_image(), _target(), _seeded(4))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1]["boxes"], again[1]["boxes"])
    assert torch.equal(first[2]["warp_matrix"], again[2]["warp_matrix"])
    assert not torch.equal(first[2]["warp_matrix"], other[2]["warp_matrix"])


def test_empty_targets():
    empty = _target(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    out, moved, _ = NanoDetWarp()(_image(), empty, _seeded(0))
    assert out.shape == (3, 320, 320) and moved["boxes"].shape == (0, 4) and moved["labels"].shape == (0,)
    _, boxed, _ = letterbox(_image(), empty)
    assert boxed["boxes"].shape == (0, 4)


def test_letterbox_by_hand():
    image = _image(100, 200)
    target = _target(torch.tensor([[0.0, 0, 200, 100], [50, 25, 150, 75]]), torch.tensor([0, 1]))
    out, moved, meta = letterbox(image, target, size=416, fill=0.5)
    # r = 416 / 200 = 2.08: 416 x 208, padded by 104 rows above and below
    assert out.shape == (3, 416, 416) and meta["pad"] == (0, 104) and meta["scale"] == (2.08, 2.08)
    assert_close(moved["boxes"], torch.tensor([[0.0, 104, 416, 312], [104, 156, 312, 260]]))
    assert (out[:, :104] == 0.5).all() and (out[:, 312:] == 0.5).all()
    assert torch.equal(moved["labels"], target["labels"])
    assert meta["img_shape"] == (416, 416) and meta["ori_shape"] == (100, 200)
    no_target = letterbox(image, None, size=416)
    assert no_target[1] is None and torch.equal(no_target[0], out)


def test_unletterbox_round_trip():
    boxes = torch.tensor([[3.0, 7, 41, 66], [0, 0, 75, 75], [10.5, 20.25, 11, 21]])
    for h, w, size in [(120, 75, 416), (75, 120, 320), (99, 99, 64)]:
        _, moved, meta = letterbox(_image(h, w), _target(boxes, torch.tensor([0, 1, 2])), size=size)
        assert_close(unletterbox_boxes(moved["boxes"], meta), boxes, atol=1e-4, rtol=0)
    # predictions reaching into the padding are clipped to the original image
    _, _, meta = letterbox(_image(120, 75), None, size=416)
    assert_close(unletterbox_boxes(torch.tensor([[0.0, 0, 416, 416]]), meta), torch.tensor([[0.0, 0, 75, 120]]))


def test_bad_inputs_name_what_was_expected():
    warp = NanoDetWarp()
    with pytest.raises(TypeError, match=r"image must be Tensor\[3, H, W\] of a floating dtype.*torch.uint8"):
        warp(torch.zeros(3, 8, 8, dtype=torch.uint8), _target())
    with pytest.raises(ValueError, match=r"image must be Tensor\[3, H, W\] float in \[0, 1\], got shape \[8, 8\]"):
        letterbox(torch.zeros(8, 8), None)
    with pytest.raises(ValueError, match=r"image must be Tensor\[3, H, W\].*got shape \[1, 8, 8\]"):
        warp(torch.zeros(1, 8, 8), _target())
    with pytest.raises(ValueError, match=r"target\['boxes'\] must be Tensor\[M, 4\] xyxy, got shape \[2, 5\]"):
        warp(_image(), _target(torch.zeros(2, 5)))
    with pytest.raises(ValueError, match=r"target\['boxes'\] must be Tensor\[M, 4\] xyxy, got shape \[4\]"):
        letterbox(_image(), _target(torch.zeros(4), LABELS))
    with pytest.raises(ValueError, match=r"target\['labels'\] must have one label per box \(2\), got 1"):
        warp(_image(), _target(BOXES, LABELS[:1]))
    with pytest.raises(TypeError, match=r"target must be dict\(boxes=Tensor\[M, 4\] xyxy, labels=Tensor\[M\]\)"):
        warp(_image(), {"boxes": BOXES})
    with pytest.raises(ValueError, match=r"only 'boxes', 'labels' and scalar entries.*\['area'\]"):
        warp(_image(), {**_target(), "area": torch.ones(2)})
    with pytest.raises(ValueError, match=r"scale must be \(low, high\) with 0 < low <= high"):
        NanoDetWarp(scale=(1.4, 0.6))
    with pytest.raises(TypeError, match=r"meta must be the dict returned by letterbox\(\)"):
        unletterbox_boxes(BOXES, {"scale": 1.0})


def test_warp_with_rotation_takes_the_general_path_exactly():
    # a quarter turn maps pixel centres onto pixel centres: the result is torch.rot90 of the image
    image = torch.rand(3, 5, 7)
    h, w = 5, 7
    quarter = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, float(w)], [0.0, 0.0, 1.0]], dtype=torch.float64)
    # source (x, y) -> output (y, w - x): output is h wide and w high
    rotated = warp_image(image, quarter, (w, h))
    assert torch.equal(rotated, torch.rot90(image, k=1, dims=(1, 2)))


def test_axis_aligned_warp_interpolates_by_hand():
    # 2x upsampling of a 1 x 2 image [0, 1]: output centres x = 0.5 .. 3.5 read source x = -0.25, 0.25, 0.75, 1.25
    image = torch.tensor([[[0.0, 1.0]]]).expand(3, 1, 2)
    twice = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    out = warp_image(image, twice, (1, 4), fill=0.5)
    # -0.25: 0.25 of the border (0.5) + 0.75 of pixel 0; 1.25: 0.75 of pixel 1 + 0.25 of the border
    assert_close(out[0, 0], torch.tensor([0.125, 0.25, 0.75, 0.875]))


def test_axis_aligned_path_equals_the_general_formula():
    from detviz.datasets.augment import _taps, _warp_axis_aligned

    image = torch.rand(3, 40, 56)
    warp = NanoDetWarp((64, 64))
    generator = torch.Generator().manual_seed(3)
    for _ in range(5):
        matrix = warp.draw_matrix(40, 56, generator)
        inverse = torch.linalg.inv(matrix)
        padded = torch.nn.functional.pad(image, (1, 1, 1, 1), value=0.25)
        # the general formula: every output pixel's source point, four taps, bilinear weights
        ys, xs = torch.meshgrid(torch.arange(64.0, dtype=torch.float64) + 0.5,
                                torch.arange(64.0, dtype=torch.float64) + 0.5, indexing="ij")
        src = inverse @ torch.stack([xs.flatten(), ys.flatten(), torch.ones(64 * 64, dtype=torch.float64)])
        (cols, fx), (rows, fy) = _taps(src[0] - 0.5, 56, image.dtype), _taps(src[1] - 0.5, 40, image.dtype)
        flat = padded.flatten(1)
        read = lambda r, c: flat[:, r * 58 + c]  # noqa: E731
        expected = ((read(rows[0], cols[0]) * (1 - fx) + read(rows[0], cols[1]) * fx) * (1 - fy)
                    + (read(rows[1], cols[0]) * (1 - fx) + read(rows[1], cols[1]) * fx) * fy).view(3, 64, 64)
        assert_close(_warp_axis_aligned(padded, inverse, 64, 64), expected)
        assert_close(warp_image(image, matrix, (64, 64), fill=0.25), expected)
