"""How OpenCV's Haar box sits on a face, relative to FER-2013's framing of the same face.

    python tests/benchmarks/haar_framing.py [--data ../shared/fer2013/validation] [--faces 700]

Each FER-2013 face is upscaled 4x (192 px) and pasted at a random place into a 640x480 picture
whose background repeats the face's edge pixels outward (so there is no hard square border for
the detector to lock on to). The Haar detector (facial_emotion/detection.py) then looks for it, as it would in a
user's photo. For every face found whose box overlaps the pasted face, the script records the
box's side relative to the FER-2013 face's side and the offset of the box's centre. The crop
margin that gives back FER-2013's framing is (1 / ratio - 1) / 2 on each side.
"""

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import emotion_recognition as er  # noqa: E402
from facial_emotion.detection import FACE_MARGIN, FaceDetector  # noqa: E402
from facial_emotion.images import read_image, to_grayscale  # noqa: E402

SCALE = 4
CANVAS = (640, 480)


def paste(face, rng):
    """A 640x480 RGB picture holding the 4x face at a random place; returns it and the face's box."""
    side = face.shape[0] * SCALE
    big = np.asarray(Image.fromarray(face).resize((side, side), Image.Resampling.BILINEAR))
    x = int(rng.integers(0, CANVAS[0] - side))
    y = int(rng.integers(0, CANVAS[1] - side))
    canvas = np.pad(big, ((y, CANVAS[1] - side - y), (x, CANVAS[0] - side - x)), mode="edge")
    return np.stack([canvas] * 3, axis=-1), (x, y, side)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=er.PROJECT_DIR.parent / "shared" / "fer2013" / "validation")
    parser.add_argument("--faces", type=int, default=700)
    args = parser.parse_args()
    files = sorted(path for name in er.list_class_folders(args.data) for path in er.list_images(args.data / name))
    rng = np.random.default_rng(0)
    picks = rng.choice(len(files), size=min(args.faces, len(files)), replace=False)
    detector = FaceDetector("haar")
    ratios, offsets_x, offsets_y, found = [], [], [], 0
    for index in picks:
        face = np.asarray(to_grayscale(read_image(files[index])))
        picture, (x, y, side) = paste(face, rng)
        boxes = [detection.box for detection in detector.detect(picture)]
        hits = [box for box in boxes if abs(box[0] + box[2] / 2 - (x + side / 2)) < side / 2
                and abs(box[1] + box[3] / 2 - (y + side / 2)) < side / 2]
        if not hits:
            continue
        found += 1
        bx, by, bw, bh = hits[0]
        ratios.append(bw / side)
        offsets_x.append((bx + bw / 2 - (x + side / 2)) / side)
        offsets_y.append((by + bh / 2 - (y + side / 2)) / side)
    ratio = statistics.median(ratios)
    quartiles = np.percentile(ratios, [25, 75])
    print(f"Haar found {found} of {len(picks)} faces ({found / len(picks):.0%})")
    print(f"box side / FER-2013 face side: median {ratio:.3f}, quartiles {quartiles[0]:.3f}-{quartiles[1]:.3f}")
    print(f"box centre offset (share of the face side): x median {statistics.median(offsets_x):+.3f}, "
          f"y median {statistics.median(offsets_y):+.3f}")
    print(f"margin on each side that gives FER-2013's framing: {(1 / ratio - 1) / 2:.3f} "
          f"(detection.py uses {FACE_MARGIN})")


if __name__ == "__main__":
    main()
