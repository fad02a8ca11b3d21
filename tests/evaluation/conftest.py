"""What the evaluation tests share: a COCO ground truth built in memory, from a list of boxes or a dict."""
import contextlib
import copy
import io

from pycocotools.coco import COCO


def coco_in_memory(annotations, num_images, categories) -> COCO:
    """``annotations`` as (image_id, category_id, [x, y, w, h], iscrowd) on ``num_images`` 200 x 200
    images numbered from 1; annotation ids 1, 2, ... in list order."""
    dataset = {"images": [{"id": i, "file_name": f"{i}.png", "width": 200, "height": 200}
                          for i in range(1, num_images + 1)],
               "categories": categories,
               "annotations": [{"id": k + 1, "image_id": image_id, "category_id": category_id, "bbox": bbox,
                                "area": bbox[2] * bbox[3], "iscrowd": crowd}
                               for k, (image_id, category_id, bbox, crowd) in enumerate(annotations)]}
    return coco_from_dataset(dataset)


def coco_from_dataset(dataset: dict) -> COCO:
    """The pycocotools index of a COCO ground-truth dict (a copy: the caller's dict is left as it is)."""
    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        coco.createIndex()
    return coco
