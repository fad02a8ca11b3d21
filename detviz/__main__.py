"""Command line: ``python -m detviz <command>``.

    python -m detviz data --seed 0 --num-images 24 --out data/synthetic/val
    python -m detviz train --model gfl --steps 100 --out runs/gfl
    python -m detviz evaluate --checkpoint runs/gfl/model.pt --data data/synthetic/val
    python -m detviz analyze --checkpoint runs/gfl/model.pt --data data/synthetic/val --out runs/why

Commands are argparse subcommands, each a ``_add_<name>`` that declares its arguments and
a ``_run_<name>`` that does the work; ``data`` writes the synthetic shapes dataset
(``detviz.datasets.synthetic``), ``train`` and ``evaluate`` run ``detviz.engine.train``, ``analyze``
writes the error analysis (``detviz.analysis.errors``) as a report (``detviz.viz.report``).
"""
from __future__ import annotations

import argparse
import math
import sys


def _number(convert, accept, expected: str):
    """An argparse type: ``convert(text)`` (int or float) where ``accept`` holds, else an error saying ``expected``."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
_non_negative_float = _number(float, lambda v: v >= 0 and math.isfinite(v), "a number >= 0")
_fraction = _number(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
_decay = _number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


def _add_data(commands) -> None:
    parser = commands.add_parser(
        "data", help="write the synthetic shapes dataset (images/ + annotations.json, COCO)",
        description="Write DIR/images/*.jpg (or png) and DIR/annotations.json: coloured shapes on "
                    "scikit-image textures, deterministic from --seed.")
    parser.add_argument("--seed", type=_non_negative_int, required=True, help="random seed (>= 0)")
    parser.add_argument("--num-images", type=_positive_int, required=True, help="number of images")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--size", type=_positive_int, default=320, help="image width and height (default 320)")
    parser.add_argument("--empty-fraction", type=_fraction, default=0.2,
                        help="fraction of images without objects (default 0.2)")
    parser.add_argument("--max-objects", type=_positive_int, default=8,
                        help="most shapes drawn on one image (default 8)")
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg", help="image format (default jpg)")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in DIR")
    parser.set_defaults(run=_run_data)


def _run_data(args: argparse.Namespace) -> None:
    from detviz.datasets.synthetic import summarize, write_dataset

    coco = write_dataset(args.out, overwrite=args.overwrite, num_images=args.num_images, seed=args.seed,
                         size=args.size, max_objects=args.max_objects, empty_fraction=args.empty_fraction,
                         image_format=args.format)
    print(f"{args.out}: {summarize(coco)}")


def _add_train(commands) -> None:
    from detviz.engine.families import FAMILIES
    from detviz.engine.optim import SCHEDULES
    from detviz.engine.train import DEFAULT_LR

    parser = commands.add_parser(
        "train", help="train a detector (gfl, faster_rcnn, yolov3, sparse) on a COCO folder",
        description="Train on DIR/images + DIR/annotations.json (default: a cached synthetic split), writing "
                    "OUT/log.csv (losses per step), OUT/metrics.json (COCO metrics on --val-data), "
                    "OUT/checkpoint.pt (to --resume from) and OUT/model.pt (inference weights). "
                    "Under torchrun, one process per device: the model is wrapped in DistributedDataParallel.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="model families:\n" + "\n".join(f"  {name:12s} {f.description}" for name, f in FAMILIES.items()))
    parser.add_argument("--model", choices=tuple(FAMILIES), required=True, help="model family")
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="COCO folder (default: generate a synthetic train split in the cache)")
    parser.add_argument("--val-data", metavar="DIR", default=None,
                        help="COCO folder evaluated every --eval-every steps and at the end")
    parser.add_argument("--out", metavar="DIR", default=None, help="output folder (default runs/MODEL)")
    parser.add_argument("--steps", type=_positive_int, default=100,
                        help="total steps (default 100; an upper bound with --time-budget)")
    parser.add_argument("--time-budget", type=_positive_float, default=None, metavar="SECONDS",
                        help="stop when this much training time is spent; the schedule follows the clock")
    parser.add_argument("--batch-size", type=_positive_int, default=8, help="images per step and process (default 8)")
    parser.add_argument("--input-size", type=_positive_int, default=320, help="network input side (default 320)")
    parser.add_argument("--optimizer", choices=tuple(DEFAULT_LR), default="adamw", help="default adamw")
    parser.add_argument("--lr", type=_positive_float, default=None, help="base rate (default 1e-3 adamw, 0.01 sgd)")
    parser.add_argument("--weight-decay", type=_non_negative_float, default=0.05, help="default 0.05")
    parser.add_argument("--schedule", choices=SCHEDULES, default="cosine", help="default cosine")
    parser.add_argument("--warmup-steps", type=_non_negative_int, default=0, help="linear warm-up (default 0)")
    parser.add_argument("--ema-decay", type=_decay, default=0.0,
                        help="weight average decay, e.g. 0.9998 (default 0: none)")
    parser.add_argument("--workers", type=_non_negative_int, default=0,
                        help="DataLoader worker processes (default 0: load in the training process)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda; AMP and channels-last on CUDA")
    parser.add_argument("--no-amp", action="store_true", help="keep float32 on CUDA")
    parser.add_argument("--eval-every", type=_non_negative_int, default=0,
                        help="evaluate on --val-data every N steps (default 0: at the end only)")
    parser.add_argument("--checkpoint-every", type=_non_negative_int, default=0,
                        help="also save every N steps (default 0: only at the end)")
    parser.add_argument("--resume", metavar="CKPT", default=None, help="continue from this checkpoint.pt")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    parser.add_argument("--synthetic-images", type=_positive_int, default=64,
                        help="size of the generated train split when --data is not given (default 64)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> None:
    from detviz.engine.train import TrainConfig, train

    config = TrainConfig(model=args.model, data=args.data, val_data=args.val_data,
                         out=args.out or f"runs/{args.model}", steps=args.steps, time_budget=args.time_budget,
                         batch_size=args.batch_size, input_size=args.input_size, optimizer=args.optimizer,
                         lr=args.lr, weight_decay=args.weight_decay, schedule=args.schedule,
                         warmup_steps=args.warmup_steps, ema_decay=args.ema_decay, workers=args.workers,
                         device=args.device, amp=False if args.no_amp else None, eval_every=args.eval_every,
                         checkpoint_every=args.checkpoint_every, resume=args.resume, seed=args.seed,
                         synthetic_images=args.synthetic_images, progress=not args.quiet)
    result = train(config)
    if result["metrics"]:
        last = result["metrics"][-1]
        print(f"step {last['step']}: mAP {last['mAP']:.4f} AP50 {last['AP50']:.4f}")
    print(f"step {result['step']}: checkpoint {result['checkpoint']}, weights {result['model']}, "
          f"log {result['log']}")


def _add_evaluate(commands) -> None:
    parser = commands.add_parser(
        "evaluate", help="COCO mAP of a training checkpoint on a COCO folder",
        description="Predict on DIR/images, map boxes back to the original image size, write "
                    "<checkpoint>.results.json next to the checkpoint and print pycocotools' table; "
                    "the last line printed is the metrics as one JSON object.")
    parser.add_argument("--checkpoint", metavar="CKPT", required=True, help="model.pt or checkpoint.pt from `train`")
    parser.add_argument("--data", metavar="DIR", required=True, help="COCO folder: images/ + annotations.json")
    parser.add_argument("--batch-size", type=_positive_int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> None:
    from detviz.engine.train import dumps_metrics, evaluate_checkpoint

    metrics, results_path = evaluate_checkpoint(args.checkpoint, args.data, batch_size=args.batch_size,
                                                   device=args.device)
    print(metrics["summary_text"].rstrip())
    print(f"results: {results_path}")
    print(dumps_metrics(metrics))


def _add_analyze(commands) -> None:
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
    parser.add_argument("--score-thresh", type=_number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
                        default=0.3, help="operating point of the confusion matrix and the missed gts (default 0.3)")
    parser.add_argument("--batch-size", type=_positive_int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.set_defaults(run=_run_analyze)


def _run_analyze(args: argparse.Namespace) -> None:
    import json
    import tempfile
    from pathlib import Path

    from detviz.analysis.errors import analyze_results, object_rows, summary, write_object_rows
    from detviz.viz.report import write_report

    data = Path(args.data)
    coco, dataset = _analyze_ground_truth(data)
    out = _analyze_out(args.out)
    if args.checkpoint:
        results, evidence, source = _checkpoint_results(args, dataset)
    else:
        results, evidence, source = _results_file(Path(args.results), coco), None, f"results {args.results}"
    try:
        analysis = analyze_results(coco, results, evidence=evidence, score_thresh=args.score_thresh)
    except ValueError as err:
        raise ValueError(f"{args.results or args.checkpoint}: {err}") from None
    has_images = (data / "images").is_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))  # renamed to OUT when complete
    try:
        numbers = summary(analysis)
        (work / "summary.json").write_text(json.dumps(numbers, indent=1, allow_nan=False) + "\n")
        (work / "results.json").write_text(json.dumps(results) + "\n")
        write_object_rows(work / "objects.csv", object_rows(analysis))
        write_report(analysis, work, dataset=dataset if has_images else None, source=f"{source}; gt {data}")
        work.chmod(0o755)
        if out.is_dir():
            out.rmdir()  # empty: checked before any work
        work.rename(out)
    except BaseException:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
        raise
    print(f"report: {out / 'report.html'}")
    print(json.dumps({k: v for k, v in numbers.items() if k != "per_class"}, allow_nan=False))


def _analyze_ground_truth(data):
    """The COCO gt of DIR/annotations.json, checked, and the dataset over DIR/images."""
    from detviz.datasets.coco import CocoDetection

    ann_file = data / "annotations.json"
    document = _read_json(ann_file, f"{ann_file} (--data must hold annotations.json)")
    if not isinstance(document, dict) or not document.get("categories"):
        raise ValueError(f"{ann_file} has no 'categories': a COCO ground truth needs a non-empty list of "
                         "{'id', 'name'} entries to score detections against")
    dataset = CocoDetection(data / "images", ann_file)
    return dataset.coco, dataset


def _read_json(path, what: str):
    """The JSON document at ``path``; FileNotFoundError / ValueError naming ``what``."""
    import json

    if not path.is_file():
        raise FileNotFoundError(f"{what} does not exist")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} is not readable JSON: {err}") from None


def _analyze_out(out):
    """OUT as given (new, or an empty folder), or the first free runs/analyze-N."""
    from pathlib import Path

    if out is None:
        n = 1
        while Path(f"runs/analyze-{n}").exists():
            n += 1
        return Path(f"runs/analyze-{n}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} already exists and is not an empty folder; give a new one "
                         "(nothing there is overwritten)")
    return out


def _results_file(path, coco) -> list:
    """A COCO results list read from ``path``, with the checks that name the file and the entry."""
    import math

    results = _read_json(path, f"results file {path}")
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
    from detviz.engine.checkpoints import build_model_from_checkpoint, load_checkpoint
    from detviz.engine.families import get_family
    from detviz.engine.inference import predict_dataset
    from detviz.engine.processes import training_device
    from detviz.evaluation import to_coco_results

    checkpoint = load_checkpoint(args.checkpoint, num_classes=len(dataset.label_to_category_id))
    stored = {int(k): v for k, v in checkpoint["label_to_category_id"].items()}
    if stored != dataset.label_to_category_id:
        raise ValueError(f"{args.checkpoint} was trained on the categories {stored} (label: category id), "
                         f"--data {args.data} has {dataset.label_to_category_id}")
    family = get_family(checkpoint["model_family"])
    model = build_model_from_checkpoint(checkpoint).to(training_device(args.device)).eval()
    size = checkpoint["train_config"]["input_size"]
    predictions = predict_dataset(family, model, dataset, size, batch_size=args.batch_size)
    results = to_coco_results(predictions, dataset.image_ids, dataset.label_to_category_id)
    evidence = None
    if family.name in EVIDENCE_FAMILIES:
        evidence = prior_evidence(family.name, model, dataset, size, batch_size=args.batch_size)
    return results, evidence, f"checkpoint {args.checkpoint} ({family.name}, input {size})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m detviz", description="detviz command line tools")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    _add_data(commands)
    _add_train(commands)
    _add_evaluate(commands)
    _add_analyze(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; argument errors exit with status 2, run errors with 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, TypeError, OSError, FloatingPointError) as err:
        parser.exit(1, f"{parser.prog} {args.command}: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
