import pytest
import torch
from torch.testing import assert_close

from detviz.anchors import (center_points, grid_cells, grid_cells_to_centers, level_slices,
                            multilevel_grid_cells)


def test_center_points_are_half_a_stride_in_row_major_order():
    points = center_points((2, 3), stride=4)
    expected = torch.tensor([[2.0, 2.0], [6.0, 2.0], [10.0, 2.0],
                             [2.0, 6.0], [6.0, 6.0], [10.0, 6.0]])
    assert_close(points, expected)


def test_grid_cells_are_squares_of_stride_times_scale_around_the_centres():
    cells = grid_cells((2, 3), stride=4, octave_base_scale=2)
    assert cells.shape == (6, 4)
    assert_close(cells[0], torch.tensor([-2.0, -2.0, 6.0, 6.0]))
    assert_close(cells[5], torch.tensor([6.0, 2.0, 14.0, 10.0]))
    assert_close(grid_cells_to_centers(cells), center_points((2, 3), stride=4))
    assert_close(cells[:, 2] - cells[:, 0], torch.full((6,), 8.0))


def test_nanodet_m_grid_cells_at_320():
    cells = multilevel_grid_cells([(40, 40), (20, 20), (10, 10)], [8, 16, 32], octave_base_scale=5)
    assert [len(c) for c in cells] == [1600, 400, 100]
    all_cells = torch.cat(cells)
    assert_close(all_cells[:3], torch.tensor([[-16.0, -16, 24, 24], [-8, -16, 32, 24], [0, -16, 40, 24]]))
    assert_close(all_cells[-3:], torch.tensor([[160.0, 224, 320, 384], [192, 224, 352, 384], [224, 224, 384, 384]]))


def test_dtype_follows_the_argument():
    cells = grid_cells((1, 1), 8, 5, dtype=torch.float64)
    assert cells.dtype == torch.float64


def test_level_slices():
    assert level_slices([1600, 400, 100]) == [slice(0, 1600), slice(1600, 2000), slice(2000, 2100)]
    assert level_slices([]) == []


@pytest.mark.parametrize("size", [(0, 4), (4,), (2.5, 3), "ab"])
def test_bad_featmap_size(size):
    with pytest.raises(ValueError, match=r"featmap_size must be \(H, W\) with positive integers"):
        grid_cells(size, 8, 5)


def test_bad_stride_and_scale():
    with pytest.raises(ValueError, match="stride must be a positive number"):
        center_points((2, 2), 0)
    with pytest.raises(ValueError, match="octave_base_scale must be positive"):
        grid_cells((2, 2), 8, -1)


def test_levels_must_match_strides():
    with pytest.raises(ValueError, match="one entry per level, got 2 sizes and 3 strides"):
        multilevel_grid_cells([(4, 4), (2, 2)], [8, 16, 32], 5)


def test_centers_reject_wrong_shape():
    with pytest.raises(ValueError, match=r"cells must be Tensor\[N, 4\] xyxy, got \[3, 5\]"):
        grid_cells_to_centers(torch.zeros(3, 5))
