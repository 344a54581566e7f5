"""Write a small image folder (one subfolder per class) for `cfconv train --data DIR`.

    python scripts/make_image_folder.py digits digits16 --size 16
    cfconv train --data digits16 --image-size 16 --model spatial

- `digits`: scikit-learn's bundled 8x8 digits, upscaled (bicubic) to `--size` and written
  as RGB PNGs with a random colour tint per image, in folders `0` ... `9` (1797 images).
- `shapes`: `--per-class` filled circles, squares and triangles of random size, position
  and colour on a random background colour with pixel noise.

The same `--seed` always writes the same images. The folders have the layout of
Microsoft's Cats vs Dogs `PetImages`, so training on them exercises the same loader.
"""

import argparse
import pathlib

import numpy as np
from PIL import Image, ImageDraw


SHAPES = ("circle", "square", "triangle")


def shape_image(kind: str, size: int, rng: np.random.Generator) -> Image.Image:
    background = tuple(int(v) for v in rng.integers(0, 256, 3))
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    image = Image.new("RGB", (size, size), background)
    canvas = ImageDraw.Draw(image)
    half = rng.uniform(0.3, 0.6) * size / 2
    cx, cy = rng.uniform(half, size - half, 2)
    box = [cx - half, cy - half, cx + half, cy + half]
    if kind == "circle":
        canvas.ellipse(box, fill=colour)
    elif kind == "square":
        canvas.rectangle(box, fill=colour)
    else:
        canvas.polygon(
            [(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=colour
        )
    pixels = np.asarray(image, np.float64) + rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_shapes(root: pathlib.Path, per_class: int, size: int, rng: np.random.Generator) -> int:
    for kind in SHAPES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape_image(kind, size, rng).save(root / kind / f"{i:04d}.png")
    return len(SHAPES) * per_class


def write_digits(root: pathlib.Path, size: int, rng: np.random.Generator) -> int:
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        gray = Image.fromarray((image * (255 / 16)).astype(np.uint8)).resize(
            (size, size), Image.Resampling.BICUBIC
        )
        tint = rng.uniform(0.4, 1.0, 3)
        rgb = np.asarray(gray, np.float64)[..., None] * tint
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb.astype(np.uint8)).save(folder / f"{i:04d}.png")
    return len(digits.target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("digits", "shapes"), help="which images to write")
    parser.add_argument("out", help="the folder to create (one subfolder per class)")
    parser.add_argument("--size", type=int, default=16, help="image height and width (16)")
    parser.add_argument("--per-class", type=int, default=300, help="shapes per class (300)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    root = pathlib.Path(args.out)
    if args.kind == "digits":
        count = write_digits(root, args.size, rng)
    else:
        count = write_shapes(root, args.per_class, args.size, rng)
    print(f"wrote {count} images to {root}")


if __name__ == "__main__":
    main()
