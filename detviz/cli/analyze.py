"""``python -m detviz analyze``: the error analysis of any detector's COCO results, as a report."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from detviz.cli.common import new_output_folder, positive_int, read_json, score_threshold, staged_folder


def add(commands) -> None:
    parser = commands.add_parser(
        "analyze", help="error analysis of a detector's results: TIDE, confusion matrix, LRP, why gts were missed",
        description="Analyse COCO results of any detector (--results) or of a detviz checkpoint (--checkpoint, "
                    "which also tells which missed gts never had a positive prior in training) against "
                    "DIR/annotations.json. Writes OUT/report.html (self-contained), OUT/summary.json, "
                    "OUT/results.json, OUT/objects.csv and the figures as PNG; the last line printed is the "
                    "summary as one JSON object.")
    parser.add_argument("--data", metavar="DIR", required=True,
                        help="COCO folder: annotations.json, and images/ (optional with --results: no crops then)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--results", metavar="RESULTS.json", help="COCO results list of any detector")
    source.add_argument("--checkpoint", metavar="CKPT", help="model.pt or checkpoint.pt from `train`")
    parser.add_argument("--out", metavar="OUT", default=None,
                        help="new or empty output folder (default: a new folder runs/analyze-N)")
    parser.add_argument("--score-thresh", type=score_threshold,
                        default=0.3, help="operating point of the confusion matrix and the missed gts (default 0.3)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from detviz.analysis.errors import analyze_results, object_rows, summary, write_object_rows
    from detviz.viz.report import write_report

    data = Path(args.data)
    coco, dataset = _ground_truth(data)
    out = new_output_folder(args.out, "analyze")
    if args.checkpoint:
        results, evidence, source = _checkpoint_results(args, dataset)
    else:
        results, evidence, source = _results_file(Path(args.results), coco), None, f"results {args.results}"
    try:
        analysis = analyze_results(coco, results, evidence=evidence, score_thresh=args.score_thresh)
    except ValueError as err:
        raise ValueError(f"{args.results or args.checkpoint}: {err}") from None
    has_images = (data / "images").is_dir()
    with staged_folder(out) as work:
        numbers = summary(analysis)
        (work / "summary.json").write_text(json.dumps(numbers, indent=1, allow_nan=False) + "\n")
        (work / "results.json").write_text(json.dumps(results) + "\n")
        write_object_rows(work / "objects.csv", object_rows(analysis))
        write_report(analysis, work, dataset=dataset if has_images else None, source=f"{source}; gt {data}")
    print(f"report: {out / 'report.html'}")
    print(json.dumps({k: v for k, v in numbers.items() if k != "per_class"}, allow_nan=False))


def _ground_truth(data):
    """The COCO gt of DIR/annotations.json, checked, and the dataset over DIR/images."""
    from detviz.datasets.coco import CocoDetection

    ann_file = data / "annotations.json"
    document = read_json(ann_file, f"{ann_file} (--data must hold annotations.json)")
    if not isinstance(document, dict) or not document.get("categories"):
        raise ValueError(f"{ann_file} has no 'categories': a COCO ground truth needs a non-empty list of "
                         "{'id', 'name'} entries to score detections against")
    dataset = CocoDetection(data / "images", ann_file)
    return dataset.coco, dataset


def _results_file(path, coco) -> list:
    """A COCO results list read from ``path``, with the checks that name the file and the entry."""
    results = read_json(path, f"results file {path}")
    if not isinstance(results, list):
        raise ValueError(f"results file {path} must hold a list of {{image_id, category_id, bbox, score}}, "
                         f"got {type(results).__name__}")
    if not results:
        raise ValueError(f"results file {path} is empty: there are no detections to analyse")
    past = 0
    for k, r in enumerate(results):
        if not isinstance(r, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(r):
            raise ValueError(f"results file {path}: entry {k} must have image_id, category_id, bbox and score, got {r!r}")
        info = coco.imgs.get(r["image_id"], {})
        bbox = r["bbox"]
        if "width" in info and isinstance(bbox, list) and len(bbox) == 4 and all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in bbox):
            x, y, w, h = bbox
            past += x + w > 1.05 * info["width"] + 1 or y + h > 1.05 * info["height"] + 1
    if len(results) >= 10 and past > len(results) / 2:
        raise ValueError(f"results file {path}: {past} of {len(results)} boxes end past their image's border; "
                         "they look like [x1, y1, x2, y2], but COCO results use [x, y, width, height]")
    return results


def _checkpoint_results(args, dataset):
    """The checkpoint's COCO results on the dataset, and the prior evidence of its family when detviz has it."""
    from detviz.analysis.missed import EVIDENCE_FAMILIES, prior_evidence
    from detviz.engine.inference import load_model, predict_dataset
    from detviz.evaluation import to_coco_results

    family, model, checkpoint = load_model(args.checkpoint, dataset=dataset, device=args.device)
    size = checkpoint["train_config"]["input_size"]
    predictions = predict_dataset(family, model, dataset, size, batch_size=args.batch_size)
    results = to_coco_results(predictions, dataset.image_ids, dataset.label_to_category_id)
    evidence = None
    if family.name in EVIDENCE_FAMILIES:
        evidence = prior_evidence(family.name, model, dataset, size, batch_size=args.batch_size)
    return results, evidence, f"checkpoint {args.checkpoint} ({family.name}, input {size})"
