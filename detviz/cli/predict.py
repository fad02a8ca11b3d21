"""``python -m detviz predict``: a checkpoint's detections on a folder of images, drawn and as COCO results."""
from __future__ import annotations

import argparse
import json

from detviz.cli.common import new_output_folder, non_negative_int, positive_int, score_threshold, staged_folder


def add(commands) -> None:
    parser = commands.add_parser(
        "predict", help="draw a checkpoint's detections on every image of a folder (no annotations needed)",
        description="Predict on every image of --images (jpg, png, ...; annotations not needed) and write into "
                    "--out (a new folder; nothing appears there unless everything is written): <image stem>.jpg "
                    "with the detections scoring at least --score-thresh, results.json (every detection, COCO "
                    "results; image ids number the images 1, 2, ... in file-name order) and images.json (those "
                    "ids with file names and sizes, and the categories: a COCO file to add annotations to). "
                    "The last line printed is a JSON object of counts.")
    parser.add_argument("--checkpoint", metavar="CKPT", required=True, help="model.pt or checkpoint.pt from `train`")
    parser.add_argument("--images", metavar="DIR", required=True, help="folder of images")
    parser.add_argument("--out", metavar="OUT", default=None,
                        help="new or empty output folder (default: a new folder runs/predict-N)")
    parser.add_argument("--score-thresh", type=score_threshold, default=0.3,
                        help="detections drawn (default 0.3); results.json keeps them all")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--workers", type=non_negative_int, default=None,
                        help="processes that read and resize images while the model runs (default: none below "
                             "64 images, else one per CPU that torch's threads leave free, at most 2; 0: none)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from detviz.datasets.folder import ImageFolder
    from detviz.engine.inference import class_names_of, load_model, predict_dataset
    from detviz.evaluation import to_coco_results
    from detviz.viz.pictures import detections_figure, save_figure

    out = new_output_folder(args.out, "predict")
    images = ImageFolder(args.images)
    family, model, checkpoint = load_model(args.checkpoint, device=args.device)
    predictions = predict_dataset(family, model, images, checkpoint["train_config"]["input_size"], args.batch_size,
                                  args.workers)
    label_to_category_id = {int(k): v for k, v in checkpoint["label_to_category_id"].items()}
    results = to_coco_results(predictions, images.image_ids, label_to_category_id)
    names = class_names_of(checkpoint)
    drawn = 0
    with staged_folder(out) as work:
        entries = []
        for index, (path, prediction) in enumerate(zip(images.paths, predictions)):
            image, info = images[index]
            kept = int((prediction["scores"] >= args.score_thresh).sum())
            drawn += kept
            figure = detections_figure(image, prediction, names, args.score_thresh,
                                       title=f"{path.name}: {kept} detections with score >= {args.score_thresh:g}")
            save_figure(figure, work / f"{path.stem}.jpg")
            entries.append({"id": info["image_id"], "file_name": info["file_name"], "width": int(image.shape[-1]),
                            "height": int(image.shape[-2])})
        categories = [{"id": category_id, "name": names[label]} for label, category_id in label_to_category_id.items()]
        (work / "results.json").write_text(json.dumps(results) + "\n")
        (work / "images.json").write_text(json.dumps({"images": entries, "categories": categories,
                                                      "annotations": []}, indent=1) + "\n")
    print(f"{len(images)} images, {drawn} detections with score >= {args.score_thresh:g} drawn into {out}")
    print(json.dumps({"images": len(images), "detections": len(results), "drawn": drawn,
                      "score_thresh": args.score_thresh, "out": str(out)}))
