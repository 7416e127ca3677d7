"""Every detector (BlazeFace, Haar, MTCNN) on the same pictures: faces found and time per picture.

    python tests/benchmarks/detectors.py

The pictures are the public-domain test photo and variants of it made here: as is, tilted
30 degrees, half covered, shrunk to a small face in a large frame, enlarged to 3072 px, plus
two FER-2013 faces pasted on a plain background and a picture with no face. Each holds one
face except where named.
"""

import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from facial_emotion.detection import DETECTORS, FaceDetector  # noqa: E402
from test_faces import ASTRONAUT, no_face_picture, two_face_picture  # noqa: E402

ROUNDS = 3


def pictures(folder):
    photo = Image.open(ASTRONAUT).convert("RGB")
    covered = photo.copy()
    ImageDraw.Draw(covered).rectangle([170, 115, 280, 175], fill=(40, 40, 40))  # mouth and chin
    small = Image.new("RGB", (1600, 1200), (120, 120, 120))
    small.paste(photo.resize((160, 160)), (700, 500))
    return {
        "photo (1 face)": photo,
        "tilted 30 deg (1)": photo.rotate(30, resample=Image.Resampling.BILINEAR, fillcolor=(255, 255, 255)),
        "lower face covered (1)": covered,
        "small face in 1600x1200 (1)": small,
        "enlarged to 3072 px (1)": photo.resize((3072, 3072), Image.Resampling.BICUBIC),
        "two FER faces (2)": Image.open(two_face_picture(folder / "two.jpg")).convert("RGB"),
        "no face (0)": Image.open(no_face_picture(folder / "none.png")).convert("RGB"),
    }


def main():
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        images = {name: np.asarray(image) for name, image in pictures(Path(folder)).items()}
    detectors = {kind: FaceDetector(kind) for kind in DETECTORS}
    for detector in detectors.values():
        detector.detect(images["photo (1 face)"])  # warm-up
    print(f"{'picture':30s}" + "".join(f" {kind + ' faces':>15s} {kind + ' ms':>12s}" for kind in detectors))
    for name, image in images.items():
        row = []
        for detector in detectors.values():
            times = []
            for _ in range(ROUNDS):
                started = time.perf_counter()
                found = detector.detect(image)
                times.append((time.perf_counter() - started) * 1000)
            row += [len(found), statistics.median(times)]
        print(f"{name:30s}" + "".join(f" {faces:>15d} {ms:>12.0f}" for faces, ms in zip(row[::2], row[1::2])))


if __name__ == "__main__":
    main()
