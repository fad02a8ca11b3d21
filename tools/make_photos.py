"""Write the photos of data/photos/ from images bundled with scikit-image (licences: data/photos/README.md).

    python tools/make_photos.py

Only crops, never resizes: every box in data/photos/annotations.json is in pixels of the
written JPEG. The coffee crop drops the top 10 rows so that, next to the motorcycle, the
Faster R-CNN transform (short side 800, long side at most 1333, pad to a multiple of 32)
gives the 800 x 1248 batch that notes 001/003 trace: 390 x 600 -> 800 x 1230 and
500 x 741 -> 800 x 1185, padded together to 800 x 1248.
"""
from pathlib import Path

from PIL import Image
from skimage import data

OUT = Path(__file__).resolve().parents[1] / "data" / "photos"

# file name: (skimage loader, crop box (left, top, right, bottom) in the source image)
PHOTOS = {
    "coffee.jpg": (data.coffee, (0, 10, 600, 400)),
    "motorcycle.jpg": (lambda: data.stereo_motorcycle()[0], (0, 0, 741, 500)),
    "chelsea.jpg": (data.chelsea, (0, 0, 451, 300)),
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (load, (left, top, right, bottom)) in PHOTOS.items():
        image = Image.fromarray(load()[top:bottom, left:right])
        image.save(OUT / name, quality=95)
        print(f"{name}: {image.width} x {image.height}")


if __name__ == "__main__":
    main()
