"""Tests for detviz.fixtures and the seed-002 trace (NanoDet GFL head, ATSS assigner).

The transcription test re-reads the note: every ``quote == "numbers"`` entry must be
found among the numbers printed on its lines, and changing any single value of it by
one unit in its last printed digit must make that search fail.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import torch

from detviz.fixtures import (ENTRY_KEYS, NOTES_DIR, QUOTE_KINDS, TRACES_DIR, NoteTrace, TraceKeyError, check,
                             check_entry, load_trace)

TRACE_NAME = "seed002_nanodet_gfl"
TRACE = load_trace(TRACE_NAME)
NOTE_LINES = TRACE.note_lines()
NAMES = TRACE.names()
NUMBER_NAMES = [n for n in NAMES if TRACE.entry(n)["quote"] == "numbers"]
NUM_CELLS = 2100

# Entries whose numbers share their lines with unrelated numbers in a way neither the
# contiguous nor the row-by-row search can follow; they are checked as an in-order
# subsequence, and the consistency tests below pin them down further.
SUBSEQUENCE_ONLY = {
    # Three 'cell_size=stride*5=...' lines with the centre lists in between.
    "grid.cell_sizes",
    # Shapes written beside code that itself holds numbers (permute(0, 2, 3, 1), ...).
    "loss_single.shapes",
}
# Sparse columns: the non-blank cells of a table printed beside a 0/1 mask. Each line
# holds as many values as its mask row has ones, starting at a fixed token offset.
SPARSE_COLUMNS = {"sample1.pos_candidate_idxs_flat": ("sample1.is_pos", 3)}


# ---------------------------------------------------------------------------- reading the note
@dataclass(frozen=True)
class Token:
    text: str  # as printed ("" for a blank table cell)
    value: float

    @property
    def decimals(self) -> int:
        return len(self.text.split(".", 1)[1]) if "." in self.text else 0


_BLANK = "\x00"
_DEVICE = re.compile(r"device='[^']*'")
_GROUP = re.compile(r"\[([^\[\]]*)\]")
_TOKEN = re.compile(r"True|False|\x00|(?<![A-Za-z0-9_.])-?\d+(?:\.\d*)?(?![A-Za-z0-9_])")


def _mark_blank_cells(line: str) -> str:
    """Put a marker in every empty comma-separated field of an innermost ``[...]``."""
    def mark(match: re.Match) -> str:
        fields = match.group(1).split(",")
        if len(fields) == 1:
            return match.group(0)
        return "[" + ",".join(_BLANK if not f.strip() else f for f in fields) + "]"
    return _GROUP.sub(mark, line)


def line_tokens(line: str, *, boolean: bool) -> list[Token]:
    """Numbers printed on one line; True/False as 1/0; blank cells as 0 when ``boolean``."""
    tokens = []
    for text in _TOKEN.findall(_mark_blank_cells(_DEVICE.sub("", line))):
        if text == _BLANK:
            if boolean:
                tokens.append(Token("", 0.0))
        elif text in ("True", "False"):
            tokens.append(Token(text, float(text == "True")))
        else:
            tokens.append(Token(text, float(text)))
    return tokens


def range_lines(first: int, last: int, *, boolean: bool) -> list[list[Token]]:
    """Token lists of the lines ``first..last`` that print at least one number."""
    per_line = [line_tokens(text, boolean=boolean) for text in NOTE_LINES[first - 1:last]]
    return [tokens for tokens in per_line if tokens]


def leaves(value) -> list:
    if isinstance(value, dict):
        return [x for v in value.values() for x in leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in leaves(v)]
    return [value]


def numbers_of(value) -> list[float]:
    return [float(x) for x in leaves(value) if not isinstance(x, str)]


def is_boolean_valued(entry: dict) -> bool:
    values = leaves(entry["value"])
    return all(isinstance(x, bool) for x in values) or entry["units"].startswith("boolean")


def _rows(value) -> list[list[float]] | None:
    """The last-axis rows of a rectangular nested list (a 1-D list gives one-element rows)."""
    if not isinstance(value, list) or not value:
        return None
    try:
        t = torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError):
        return None
    return t.reshape(-1, 1 if t.dim() == 1 else t.shape[-1]).tolist()


def find_contiguous(flat: list[float], lines: list[list[Token]]) -> list[Token] | None:
    stream = [tok for tokens in lines for tok in tokens]
    for start in range(len(stream) - len(flat) + 1):
        if all(stream[start + i].value == x for i, x in enumerate(flat)):
            return stream[start:start + len(flat)]
    return None


def find_rows(rows: list[list[float]] | None, lines: list[list[Token]]) -> list[Token] | None:
    """One row per printed line, each at the same column offset (from the start or the end)."""
    if rows is None or len(rows) != len(lines):
        return None
    width = len(rows[0])
    for from_end in (False, True):
        for offset in range(max(len(t) for t in lines)):
            matched = []
            for row, tokens in zip(rows, lines):
                start = len(tokens) - offset - width if from_end else offset
                cells = tokens[start:start + width] if start >= 0 else []
                if len(cells) != width or any(c.value != x for c, x in zip(cells, row)):
                    break
                matched += cells
            else:
                return matched
    return None


def find_subsequence(flat: list[float], lines: list[list[Token]]) -> list[Token] | None:
    stream = [tok for tokens in lines for tok in tokens]
    matched, pos = [], 0
    for x in flat:
        while pos < len(stream) and stream[pos].value != x:
            pos += 1
        if pos == len(stream):
            return None
        matched.append(stream[pos])
        pos += 1
    return matched


def find_sparse_column(flat: list[float], lines: list[list[Token]], mask, offset: int) -> list[Token] | None:
    if len(lines) != len(mask):
        return None
    matched, pos = [], 0
    for tokens, mask_row in zip(lines, mask):
        count = sum(bool(m) for m in mask_row)
        cells = tokens[offset:offset + count]
        if [c.value for c in cells] != flat[pos:pos + count]:
            return None
        matched += cells
        pos += count
    return matched if pos == len(flat) else None


def locate(value, first: int, last: int, *, boolean: bool, subsequence: bool) -> tuple[str, list[Token]] | None:
    """How ``value`` is printed on lines ``first..last``: (search that found it, tokens)."""
    lines = range_lines(first, last, boolean=boolean)
    flat = numbers_of(value)
    if not flat:
        return "strings only", []
    found = find_contiguous(flat, lines)
    if found is not None:
        return "contiguous", found
    found = find_rows(_rows(value), lines)
    if found is not None:
        return "rows", found
    if subsequence:
        found = find_subsequence(flat, lines)
        if found is not None:
            return "subsequence", found
    return None


def locate_entry(name: str, value=None, lines=None):
    entry = TRACE.entry(name)
    first, last = lines or entry["lines"]
    if name in SPARSE_COLUMNS:
        mask_name, offset = SPARSE_COLUMNS[name]
        lines = range_lines(first, last, boolean=False)
        found = find_sparse_column(numbers_of(entry["value"] if value is None else value), lines,
                                   TRACE[mask_name], offset)
        return None if found is None else ("sparse column", found)
    return locate(entry["value"] if value is None else value, first, last,
                  boolean=is_boolean_valued(entry), subsequence=name in SUBSEQUENCE_ONLY)


# ---------------------------------------------------------------------------- schema
def test_trace_file_names_its_note():
    assert TRACE.note == "002_b50f9066a992e70b.txt"
    assert (NOTES_DIR / TRACE.note).is_file()
    assert (TRACES_DIR / f"{TRACE_NAME}.json").is_file()
    for word in ("NanoDet", "320x320", "GFL", "ATSS", "302364.jpg"):
        assert word in TRACE.description


@pytest.mark.parametrize("name", NAMES)
def test_entry_has_required_keys_and_valid_lines(name):
    entry = TRACE.entry(name)
    assert re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)*", name), name
    missing = [k for k in ENTRY_KEYS if k not in entry]
    assert not missing, f"{name} lacks {missing}"
    assert set(entry) <= set(ENTRY_KEYS) | {"remark", "also_lines", "not_checked"}, sorted(entry)
    assert entry["quote"] in QUOTE_KINDS
    assert entry["decimals"] is None or (isinstance(entry["decimals"], int) and entry["decimals"] > 0)
    for key in ("block", "units", "layout"):
        assert isinstance(entry[key], str) and entry[key].strip(), (name, key)
    for first, last in [entry["lines"], *entry.get("also_lines", [])]:
        assert 1 <= first <= last <= len(NOTE_LINES), (name, first, last)
    if entry["quote"] == "derived":
        assert entry.get("remark"), f"derived entry {name} must say how it was built"


# ---------------------------------------------------------------------------- transcription
@pytest.mark.parametrize("name", NUMBER_NAMES)
def test_numbers_are_printed_on_their_lines(name):
    entry = TRACE.entry(name)
    for first, last in [entry["lines"], *entry.get("also_lines", [])]:
        found = locate_entry(name, lines=(first, last))
        assert found is not None, f"{name}: value not found on lines {first}-{last}:\n{TRACE.quote(name)}"
        text = "\n".join(NOTE_LINES[first - 1:last])
        for s in (x for x in leaves(entry["value"]) if isinstance(x, str)):
            assert s in text, f"{name}: {s!r} is not on lines {first}-{last}"
    mode, tokens = locate_entry(name)
    printed = max((tok.decimals for tok in tokens), default=0)
    assert printed == (entry["decimals"] or 0), f"{name}: printed with {printed} decimals, entry says {entry['decimals']}"


def _nudged(value, path, boolean: bool, decimals: int | None):
    """A copy of ``value`` with the leaf at ``path`` changed by one unit in its last printed digit."""
    if not path:
        if isinstance(value, bool) or (boolean and value in (0, 1)):
            return type(value)(not value) if isinstance(value, bool) else 1 - value
        if decimals:
            return round(value + 10.0 ** -decimals, decimals)
        return value + 1
    head, *rest = path
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = _nudged(value[head], rest, boolean, decimals)
    return copy


def _leaf_paths(value, prefix=()):
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaf_paths(v, prefix + (k,))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaf_paths(v, prefix + (i,))]
    return [] if isinstance(value, str) else [prefix]


@pytest.mark.parametrize("name", NUMBER_NAMES)
def test_one_changed_digit_is_not_found_in_the_note(name):
    entry = TRACE.entry(name)
    boolean = is_boolean_valued(entry)
    for path in _leaf_paths(entry["value"]):
        wrong = _nudged(entry["value"], list(path), boolean, entry["decimals"])
        assert locate_entry(name, value=wrong) is None, f"{name}: changing {list(path)} still matches the note"


@pytest.mark.parametrize("name", sorted(SUBSEQUENCE_ONLY))
def test_subsequence_allowance_is_needed(name):
    entry = TRACE.entry(name)
    found = locate(entry["value"], *entry["lines"], boolean=is_boolean_valued(entry), subsequence=False)
    assert found is None, f"{name} is found by a stricter search ({found[0]}); drop it from SUBSEQUENCE_ONLY"


def test_tokenizer_reads_sparse_tables_and_device_strings():
    assert [t.value for t in line_tokens("[     ,      ,  True],", boolean=True)] == [0, 0, 1]
    assert [t.value for t in line_tokens("[0, 0, 1], [    ,     , 5048], [1012,  930,  848],", boolean=False)] == \
        [0, 0, 1, 5048, 1012, 930, 848]
    assert [t.text for t in line_tokens("848 tensor([ 66.1485, 165.5938], device='cuda:0')", boolean=False)] == \
        ["848", "66.1485", "165.5938"]
    assert [t.value for t in line_tokens("labels：2100个80  dtype=float32 302364.jpg", boolean=False)] == \
        [2100, 80, 302364]
    assert [t.decimals for t in line_tokens("[4.,  12.5, -16., 316]", boolean=False)] == [0, 1, 0, 0]


# ---------------------------------------------------------------------------- Trace API
def test_trace_lookups():
    assert isinstance(TRACE, NoteTrace) and len(TRACE) == len(NAMES) and "sample1.pos_inds" in TRACE
    assert TRACE["num_cells"] == NUM_CELLS
    assert TRACE.entry("sample1.overlaps_mean")["decimals"] == 4
    assert TRACE.quote("sample1.overlaps_mean") == "mean：0.3072, 0.2973, 0.0444"
    assert TRACE.quote("sample1.overlaps_mean", numbered=True).startswith(" 340| mean")
    assert TRACE.quote("sample1.gt_bboxes").count("\n") == 2


def test_trace_tensor_dtypes():
    assert TRACE.tensor("sample1.candidate_idxs").shape == (27, 3)
    assert TRACE.tensor("sample1.candidate_idxs").dtype == torch.int64
    assert TRACE.tensor("sample2.is_pos").dtype == torch.bool
    assert TRACE.tensor("sample1.candidate_overlaps").dtype == torch.get_default_dtype()
    assert TRACE.tensor("sample1.is_pos", dtype=torch.bool).sum() == 14  # 12 cells, two of them for 2 gts
    with pytest.raises(TypeError, match="loss_single.shapes"):
        TRACE.tensor("loss_single.shapes")


def test_missing_entry_lists_close_names():
    with pytest.raises(KeyError) as info:
        TRACE["sample1.overlap_mean"]
    assert isinstance(info.value, TraceKeyError)
    assert "sample1.overlap_mean" in str(info.value) and "sample1.overlaps_mean" in str(info.value)
    with pytest.raises(KeyError, match="sample2.pos_inds"):
        TRACE.entry("sample2.pos_ind")


def test_load_trace_accepts_name_file_name_and_path():
    assert load_trace(f"{TRACE_NAME}.json").names() == NAMES
    assert load_trace(TRACES_DIR / f"{TRACE_NAME}.json").names() == NAMES
    with pytest.raises(FileNotFoundError, match=TRACE_NAME):
        load_trace("no_such_trace")


# ---------------------------------------------------------------------------- check()
def test_check_passes_at_printed_precision(capsys):
    assert check("sample1.overlaps_mean", torch.tensor([0.30724, 0.29726, 0.04436]), [0.3072, 0.2973, 0.0444], 4) is None
    line = "✓ sample1.overlaps_mean  [0.3072, 0.2973, 0.0444]  (note: [0.3072, 0.2973, 0.0444])"
    assert capsys.readouterr().out == line + "\n"


def test_check_fails_on_one_digit_naming_entry_and_index():
    with pytest.raises(AssertionError, match=r"sample1\.overlaps_mean: mismatch at index \[1\]: computed 0\.297400"):
        check("sample1.overlaps_mean", [0.3072, 0.2974, 0.0444], [0.3072, 0.2973, 0.0444], 4)
    with pytest.raises(AssertionError, match=r"sample1\.overlaps_mean.*index \[2\].*note 0\.0444"):
        check("sample1.overlaps_mean", [0.3072, 0.2973, 0.0454], [0.3072, 0.2973, 0.0444], 4)
    with pytest.raises(AssertionError, match=r"gt_bboxes: mismatch at index \[2, 3\]"):
        expected = TRACE["sample1.gt_bboxes"]
        computed = torch.tensor(expected)
        computed[2, 3] += 1e-3
        check("gt_bboxes", computed, expected, 4)


def test_check_shape_mismatch():
    with pytest.raises(AssertionError, match=r"sample1\.pos_inds: shape mismatch: computed \[11\] vs note \[12\]"):
        check("sample1.pos_inds", TRACE.tensor("sample1.pos_inds")[:11], TRACE["sample1.pos_inds"])
    with pytest.raises(AssertionError, match=r"shape mismatch: computed \[3, 1\] vs note \[3\]"):
        check("x", torch.zeros(3, 1), [0.0, 0.0, 0.0], 4)


def test_check_integers_and_booleans_are_exact(capsys):
    check("sample1.num_total_neg", 2088, 2088)
    assert capsys.readouterr().out == "✓ sample1.num_total_neg  2088  (note: 2088)\n"
    with pytest.raises(AssertionError, match=r"sample1\.num_total_neg: mismatch: computed 2089 vs note 2088 \(exact"):
        check("sample1.num_total_neg", 2089, 2088)
    with pytest.raises(AssertionError, match=r"index \[1\]: computed 850 vs note 849"):
        check("idx", torch.tensor([848, 850]), [848, 849])
    with pytest.raises(AssertionError, match="index \\[0\\]"):
        check("centres", torch.tensor([4.4, 12.0]), [4.0, 12.0])  # decimals None: exact floats too
    is_pos = TRACE.tensor("sample1.is_pos", dtype=torch.bool)
    check_entry(TRACE, "sample1.is_pos", is_pos)
    is_pos[13, 2] = True
    with pytest.raises(AssertionError, match=r"sample1\.is_pos: mismatch at index \[13, 2\]: computed True vs note 0"):
        check_entry(TRACE, "sample1.is_pos", is_pos)


def test_check_entry_uses_the_entry_decimals():
    overlaps = TRACE.tensor("sample1.candidate_overlaps", dtype=torch.float64)
    check_entry(TRACE, "sample1.candidate_overlaps", overlaps + 4e-5)
    with pytest.raises(AssertionError, match="sample1.candidate_overlaps"):
        check_entry(TRACE, "sample1.candidate_overlaps", overlaps + 6e-5)


def test_check_abbreviates_long_values_deterministically(capsys):
    check_entry(TRACE, "sample1.candidate_idxs", TRACE.tensor("sample1.candidate_idxs"))
    check_entry(TRACE, "grid.centres_stride16", torch.arange(20) * 16.0 + 8)
    check("z", torch.tensor([-0.00001]), [0.0], 4)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("✓ sample1.candidate_idxs  [1012, 930, 848, ..., 2054, 2072, 2063] (81 values, shape [27, 3])  "
                        "(note: [1012, 930, 848, ..., 2054, 2072, 2063] (81 values, shape [27, 3]))")
    assert lines[1].endswith("[8, 24, 40, ..., 280, 296, 312] (20 values)  (note: [8, 24, 40, ..., 280, 296, 312] (20 values))")
    assert lines[2] == "✓ z  [0.0000]  (note: [0.0000])"


def test_check_objects_strings_and_bad_input(capsys):
    shapes = {k: torch.Size(v) for k, v in TRACE["loss_single.shapes"].items()}
    check_entry(TRACE, "loss_single.shapes", shapes)
    assert capsys.readouterr().out.startswith("✓ loss_single.shapes  {grid_cells: [1600, 4]")
    check_entry(TRACE, "meta.img_info", dict(TRACE["meta.img_info"]))
    with pytest.raises(AssertionError, match=r"meta\.img_info.*missing \['width'\]"):
        check_entry(TRACE, "meta.img_info", {k: v for k, v in TRACE["meta.img_info"].items() if k != "width"})
    with pytest.raises(AssertionError, match=r"meta\.img_info\.file_name"):
        check_entry(TRACE, "meta.img_info", {**TRACE["meta.img_info"], "file_name": "302365.jpg"})
    with pytest.raises(AssertionError, match="index \\[0\\]"):
        check("nan", torch.tensor([float("nan")]), [0.5], 1)
    with pytest.raises(TypeError, match="ragged"):
        check("ragged", [[1, 2], [3]], [[1, 2], [3, 4]])


# ---------------------------------------------------------------------------- consistency of the note
def t(name, dtype=None):
    return TRACE.tensor(name, dtype=dtype)


@pytest.mark.parametrize("sample", ["sample1", "sample2"])
def test_flat_candidate_index_is_candidate_plus_gt_times_num_cells(sample):
    flat = t(f"{sample}.candidate_idxs") + torch.arange(3) * NUM_CELLS  # [27, 3] + [3]
    torch.testing.assert_close(t(f"{sample}.candidate_idxs_flat"), flat)


@pytest.mark.parametrize("sample", ["sample1", "sample2"])
def test_pos_inds_are_the_sorted_positive_candidates(sample):
    pos_inds = t(f"{sample}.pos_inds")
    assert torch.equal(pos_inds, torch.sort(pos_inds).values) and len(set(pos_inds.tolist())) == len(pos_inds)
    positives = t(f"{sample}.candidate_idxs")[t(f"{sample}.is_pos", dtype=torch.bool)]
    assert torch.equal(pos_inds, torch.unique(positives))
    assert TRACE[f"{sample}.num_total_pos"] == len(pos_inds)
    n = len(pos_inds)
    for name, shape in [("pos_labels", [n]), ("pos_label_weights", [n]), ("pos_bbox_targets", [n, 4]),
                        ("pos_bbox_weights", [n, 4])]:
        assert list(t(f"{sample}.{name}").shape) == shape, name


def test_sample1_assignment_bookkeeping():
    gt_0based = t("sample1.assigned_gt_inds_0based")
    torch.testing.assert_close(gt_0based, t("sample1.assigned_gt_inds") - 1)
    torch.testing.assert_close(t("sample1.pos_labels"), t("ann.labels")[gt_0based])
    torch.testing.assert_close(t("sample1.pos_bbox_targets"), t("sample1.gt_bboxes")[gt_0based])
    flat_pos = t("sample1.candidate_idxs_flat")[t("sample1.is_pos", dtype=torch.bool)]  # row-major
    torch.testing.assert_close(t("sample1.pos_candidate_idxs_flat"), flat_pos)
    assert TRACE["sample1.num_gt"] == len(TRACE["sample1.gt_bboxes"])
    assert TRACE["sample1.num_total_neg"] == TRACE["sample1.num_neg_inds"] == NUM_CELLS - TRACE["sample1.num_total_pos"]


def test_cells_positive_for_two_gts_go_to_the_higher_iou():
    owner = dict(zip(TRACE["sample1.pos_inds"], TRACE["sample1.assigned_gt_inds_0based"]))
    best = {}
    for (r, g) in torch.nonzero(t("sample1.is_pos")).tolist():
        cell, iou = TRACE["sample1.candidate_idxs"][r][g], TRACE["sample1.candidate_overlaps"][r][g]
        if cell not in best or iou > best[cell][1]:
            best[cell] = (g, iou)
    assert {cell: g for cell, (g, _) in best.items()} == owner
    assert t("sample1.is_pos").sum() == 14 and len(owner) == 12  # cells 1825 and 1845 go to gt 1


def test_sample2_negative_count_typo_is_recorded_not_fixed():
    entry = TRACE.entry("sample2.num_total_neg")
    assert entry["value"] == 2010 != NUM_CELLS - TRACE["sample2.num_total_pos"] == 2092
    assert "2092" in entry["remark"]


def test_sample2_centre_check_and_positives_table():
    before = t("sample2.is_pos_before_centre_check")
    after = t("sample2.is_pos")
    assert torch.equal(after, t("sample2.positives_table"))
    assert not (after & ~before).any()  # the centre check only removes positives
    thr = t("sample2.overlaps_thr")
    assert torch.equal(before, t("sample2.candidate_overlaps") >= thr)  # no overlap is within rounding of thr


def test_sample2_targets_follow_the_derived_gt_boxes():
    gt = t("sample2.gt_bboxes")
    label_to_gt = {label: i for i, label in enumerate(TRACE["ann.labels"])}
    gt_idx = torch.tensor([label_to_gt[label] for label in TRACE["sample2.pos_labels"]])
    torch.testing.assert_close(t("sample2.pos_bbox_targets"), gt[gt_idx])
    # each positive is a candidate of its own gt's column
    rows_of = {int(c): [] for c in t("sample2.pos_inds")}
    for (r, g) in torch.nonzero(t("sample2.is_pos")).tolist():
        rows_of[TRACE["sample2.candidate_idxs"][r][g]].append(g)
    assert [rows_of[p] for p in TRACE["sample2.pos_inds"]] == [[int(g)] for g in gt_idx]


@pytest.mark.parametrize("sample", ["sample1", "sample2"])
def test_mean_and_std_match_the_printed_overlaps(sample):
    overlaps = t(f"{sample}.candidate_overlaps", dtype=torch.float64)
    # 27 values rounded to 4 decimals, then the statistic rounded again: 1.5e-4 covers both.
    torch.testing.assert_close(overlaps.mean(0), t(f"{sample}.overlaps_mean", torch.float64), atol=1.5e-4, rtol=0)
    torch.testing.assert_close(overlaps.std(0), t(f"{sample}.overlaps_std", torch.float64), atol=1.5e-4, rtol=0)
    if sample == "sample2":
        thr = t("sample2.overlaps_mean") + t("sample2.overlaps_std")
        torch.testing.assert_close(thr, t("sample2.overlaps_thr"), atol=1.5e-4, rtol=0)


def test_gt_boxes_are_the_annotations_at_half_scale():
    ann = t("ann.bboxes", torch.float64)
    size = torch.stack([ann[:, 2] - ann[:, 0], ann[:, 3] - ann[:, 1]], 1) * 0.5
    for sample in ("sample1", "sample2"):
        gt = t(f"{sample}.gt_bboxes", torch.float64)
        torch.testing.assert_close(torch.stack([gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]], 1), size,
                                   atol=2e-4, rtol=0)
    # sample 2 is mirrored: its x order is reversed relative to sample 1
    assert torch.equal(torch.argsort(t("sample1.gt_bboxes")[:, 0]), torch.argsort(-t("sample2.gt_bboxes")[:, 2]))
    torch.testing.assert_close(t("sample1.gt_bboxes", torch.float64)[0], t("meta.gt_bboxes_row0", torch.float64),
                               atol=0.5e-4 + 1e-9, rtol=0)


def test_grid_geometry():
    strides = t("strides")
    torch.testing.assert_close(t("grid.x_no_offset_stride16"), torch.arange(20) * 16.0)
    for stride, n in zip(TRACE["strides"], [40, 20, 10]):
        torch.testing.assert_close(t(f"grid.centres_stride{stride}"), torch.arange(n) * float(stride) + stride / 2)
    torch.testing.assert_close(t("grid.cell_sizes"), strides * 5)
    sizes = t("featmap_sizes")
    torch.testing.assert_close(t("num_level_cells"), sizes.prod(1))
    assert TRACE["num_cells"] == sum(TRACE["num_level_cells"]) == TRACE["grid_cells.shape"][0]
    assert TRACE["grid_cells.level_shapes"] == [[n, 4] for n in TRACE["num_level_cells"]]
    # cells are centred on (x + 0.5) * stride with side 5 * stride, levels concatenated fine to coarse
    first = [(0, 8, 40, i) for i in range(3)]
    last = [(NUM_CELLS - 100, 32, 10, i) for i in (97, 98, 99)]
    for name, cells in [("grid_cells.first_rows", first), ("grid_cells.last_rows", last)]:
        boxes = []
        for start, stride, width, i in cells:
            cx, cy = (i % width + 0.5) * stride, (i // width + 0.5) * stride
            half = 2.5 * stride
            boxes.append([cx - half, cy - half, cx + half, cy + half])
        torch.testing.assert_close(t(name), torch.tensor(boxes))


def test_head_shapes_follow_the_levels():
    sizes = TRACE["featmap_sizes"]
    for name, channels in [("shapes.fpn", [96] * 3), ("shapes.head_cls", [80] * 3), ("shapes.head_reg", [32] * 3),
                           ("shapes.backbone", [116, 232, 464])]:
        assert TRACE[name] == [[1, c, h, w] for c, (h, w) in zip(channels, sizes)], name
    shapes = TRACE["loss_single.shapes"]
    assert shapes["bbox_pred"][1] == shapes["pos_bbox_pred"][1] == 4 * 8  # 4 sides x (reg_max + 1) bins
    assert shapes["pred_corners"] == [shapes["pos_bbox_pred"][0] * 4, 8]
    assert shapes["grid_cells"][0] == TRACE["num_level_cells"][0]
    # the stride-8 level of loss_single has 2 positives: sample 2's cells 588 and 628
    assert TRACE["loss_single.num_pos"] == sum(p < 1600 for p in TRACE["sample2.pos_inds"]) == 2
    assert len(TRACE["loss_single.score_ious"]) == TRACE["loss_single.num_pos"]


def test_printed_target_tensors():
    fill = TRACE["targets.initial_fill"]
    assert fill["labels"] == {"shape": [NUM_CELLS], "fill": 80}
    assert TRACE["targets.labels_edges"]["first"] == [80, 80, 80]
    for name in ("labels", "label_weights"):
        assert TRACE[f"targets.level_shapes.{name}"] == [[n] for n in TRACE["num_level_cells"]]
    for name in ("bbox_targets", "bbox_weights"):
        assert TRACE[f"targets.level_shapes.{name}"] == TRACE["grid_cells.level_shapes"]
    assert all(w == 1 for w in TRACE["sample1.pos_label_weights"] + TRACE["sample2.pos_label_weights"])


def test_trace_values_cannot_be_changed_through_lookups():
    TRACE["sample1.pos_inds"].append(0)
    TRACE.entry("meta.img_info")["value"]["width"] = 1
    assert len(TRACE["sample1.pos_inds"]) == 12 and TRACE["meta.img_info"]["width"] == 640


# ---------------------------------------------------------------------------- the other trace files
OTHER_TRACES = sorted(p.stem for p in TRACES_DIR.glob("*.json") if p.stem != TRACE_NAME)
# An entry may quote a second note of the same trace (seed001_003 quotes notes 001 and 003); its
# "note" key names the file its lines count in. NoteTrace.quote always reads the trace's own note.
ENTRY_NOTE_KEY = "note"


def _note_lines(note: str) -> list[str]:
    return (NOTES_DIR / note).read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("trace_name", OTHER_TRACES)
def test_other_traces_quote_their_notes(trace_name):
    """Schema, and every "numbers" entry's numbers appear, in order, as text on its quoted lines
    (a looser reading than above: "level5" and "1x1" count, thousands separators are ignored),
    on ``lines`` and on every ``also_lines`` range, in the entry's own note where it names one."""
    trace = load_trace(trace_name)
    assert trace.names(), f"{trace_name} has no entries"
    for name in trace.names():
        entry = trace.entry(name)
        assert not [k for k in ENTRY_KEYS if k not in entry], (trace_name, name)
        assert set(entry) <= set(ENTRY_KEYS) | {"remark", "also_lines", "not_checked", ENTRY_NOTE_KEY}, (trace_name, name,
                                                                                          sorted(entry))
        note = entry.get(ENTRY_NOTE_KEY, trace.note)
        assert (NOTES_DIR / note).is_file(), (trace_name, name, note)
        if note != trace.note:
            assert note in trace.description, f"{trace_name}: {name} quotes {note}; the description must say so"
        lines = _note_lines(note)
        for first, last in [entry["lines"], *entry.get("also_lines", [])]:
            assert 1 <= first <= last <= len(lines), (trace_name, name, first, last)
            if entry["quote"] != "numbers":
                assert entry.get("remark"), f"{trace_name}: derived entry {name} must say how it was built"
                continue
            _assert_printed_in_order(trace_name, name, entry, lines, first, last)


def _assert_printed_in_order(trace_name, name, entry, lines, first, last):
    text = re.sub(r"(?<=\d),(?=\d{3})", "", "\n".join(lines[first - 1:last]))
    position = 0
    for x in (v for v in leaves(entry["value"]) if not isinstance(v, str)):
        if isinstance(x, bool):
            forms = [str(x)]
        elif entry["decimals"] is None and float(x).is_integer():
            forms = [str(int(x))]
        else:  # numpy prints 2.666 beside 2.6643598 in one array: accept dropped trailing zeros
            full = f"{x:.{entry['decimals'] or 6}f}"
            forms = [full, full.rstrip("0").rstrip(".")]
        hits = [(text.find(form, position), form) for form in forms if text.find(form, position) >= 0]
        assert hits, f"{trace_name}: {name} value {forms[0]} is not printed (in order) on lines {first}-{last}"
        found, form = min(hits)
        position = found + len(form)


def test_the_faster_rcnn_trace_is_consistent():
    """Notes 001/003: one stride-32 level of 25 x 39 cells, A = 5 sizes x 3 ratios, a batch of 2."""
    from torchvision.models.detection._utils import Matcher

    trace = load_trace("seed001_003_faster_rcnn")
    sizes, ratios = trace["rpn.anchor_sizes_x_ratios"]
    batch, a, h, w = trace["rpn.objectness_shape"]
    assert a == sizes * ratios == 15 and trace["rpn.pred_bbox_deltas_shape"] == [batch, 4 * a, h, w]
    n = a * h * w  # 14625 anchors per image
    assert trace["rpn.num_anchors_per_level_shape_tensors"] == [[a, h, w]] and trace["rpn.num_anchors_per_level"] == [n]
    assert trace["rpn.anchors_shapes"] == [[n, 4]] * batch
    assert trace["rpn.concat_objectness_shape"] == [batch * n, 1] and trace["rpn.concat_deltas_shape"] == [batch * n, 4]
    assert trace["rpn.proposals_decoded_shape"] == [batch * n, 1, 4] and trace["rpn.proposals_shape"] == [batch, n, 4]
    assert trace["rpn.match_quality_matrix_shape"][1] == n
    assert trace["rpn.labels_shapes"] == [[n]] * batch and trace["rpn.matched_gt_boxes_shapes"] == [[n, 4]] * batch
    assert all(k <= trace["rpn.post_nms_top_n"] for k in trace["rpn.kept_proposals"])
    # the note's matched_idxs labels are swapped with respect to torchvision's sentinels
    noted_low, noted_between = trace["rpn.matched_idxs_sentinels"]
    assert (noted_low, noted_between) == (Matcher.BETWEEN_THRESHOLDS, Matcher.BELOW_LOW_THRESHOLD)
    fill = trace["rpn.label_fill"]
    assert sorted([fill["background"], fill["discarded"], 1]) == trace["rpn.label_values"]
    assert trace["note003.anchor_labels"] == {"negative": fill["background"], "hard_negative": fill["discarded"]}
    assert trace["note003.label_values"] == [fill["background"], 1]


def test_quote_reads_an_entrys_own_note():
    trace = load_trace("seed001_003_faster_rcnn")
    entry = trace.entry("note003.anchor_labels")
    first, last = entry["lines"]
    expected = (NOTES_DIR / entry["note"]).read_text(encoding="utf-8").splitlines()[first - 1:last]
    assert trace.quote("note003.anchor_labels") == "\n".join(expected)
    assert trace.quote("rpn.objectness_shape") == "\n".join(trace.note_lines()[27:28])
