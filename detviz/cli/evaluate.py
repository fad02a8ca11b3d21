"""``python -m detviz evaluate``: COCO metrics of a checkpoint on a COCO folder, with pictures."""
from __future__ import annotations

import argparse
import json

from detviz.cli.common import new_output_folder, non_negative_int, positive_int, score_threshold, staged_folder

GRID_IMAGES = 8  # validation images in val_predictions.jpg


def add(commands) -> None:
    parser = commands.add_parser(
        "evaluate", help="COCO mAP of a training checkpoint on a COCO folder, with pictures",
        description="Predict on DIR/images, map boxes back to the original image size and score them with "
                    "pycocotools. Writes into --out (a new folder; nothing appears there unless everything is "
                    "written): results.json (COCO results), metrics.json, confusion_matrix.png (counts and "
                    "row-normalised, at --score-thresh), pr_curve.png (per class and mean, IoU 0.5) and "
                    "val_predictions.jpg (gts next to predictions). Prints pycocotools' table; the last line "
                    "is the metrics as one JSON object.")
    parser.add_argument("--checkpoint", metavar="CKPT", required=True, help="model.pt or checkpoint.pt from `train`")
    parser.add_argument("--data", metavar="DIR", required=True, help="COCO folder: images/ + annotations.json")
    parser.add_argument("--out", metavar="OUT", default=None,
                        help="new or empty output folder (default: a new folder runs/evaluate-N)")
    parser.add_argument("--score-thresh", type=score_threshold, default=0.3,
                        help="detections drawn and counted in the confusion matrix (default 0.3)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--workers", type=non_negative_int, default=None,
                        help="processes that read and resize images while the model runs (default: none below "
                             "64 images, else one per CPU that torch's threads leave free, at most 2; 0: none)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from detviz.datasets.coco import open_dataset
    from detviz.engine.inference import dumps_metrics, evaluate_checkpoint, finite_metrics
    from detviz.viz.pictures import save_figure

    out = new_output_folder(args.out, "evaluate")
    dataset = open_dataset(args.data)
    metrics, results = evaluate_checkpoint(args.checkpoint, dataset, batch_size=args.batch_size, device=args.device,
                                           num_workers=args.workers)
    figures = _figures(dataset, metrics, results, args.score_thresh)
    with staged_folder(out) as work:
        (work / "results.json").write_text(json.dumps(results) + "\n")
        (work / "metrics.json").write_text(json.dumps(finite_metrics(metrics), indent=1, allow_nan=False) + "\n")
        for name, figure in figures.items():
            save_figure(figure, work / name)
    print(metrics["summary_text"].rstrip())
    print(f"results: {out / 'results.json'}; pictures: {', '.join(str(out / name) for name in figures)}")
    print(dumps_metrics(metrics))


def _figures(dataset, metrics: dict, results: list, score_thresh: float) -> dict:
    """File name -> Figure: the confusion matrix, the precision-recall curves, gts next to predictions."""
    from detviz.evaluation import confusion_matrix, precision_recall_curves, prediction_from_coco_results
    from detviz.viz.pictures import confusion_figure, pr_curve_figure, predictions_grid

    kept = [r for r in results if r["score"] >= score_thresh]  # one operating point for every picture
    confusion = confusion_matrix(dataset.coco, kept, score_threshold=-1.0)  # kept is already cut
    samples = []
    for index in range(min(GRID_IMAGES, len(dataset))):
        image, target = dataset[index]
        prediction = prediction_from_coco_results(results, target["image_id"], dataset.category_id_to_label)
        samples.append((image, target, prediction, f"image {target['image_id']}"))
    figures = {"confusion_matrix.png": confusion_figure(confusion.matrix, list(confusion.labels), score_thresh),
               "pr_curve.png": pr_curve_figure(precision_recall_curves(metrics), metrics["AP50"])}
    if samples:
        figures["val_predictions.jpg"] = predictions_grid(samples, dataset.class_names, score_thresh)
    return figures

