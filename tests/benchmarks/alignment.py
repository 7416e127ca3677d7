"""Does turning a tilted face upright by its eyes help the classifier? Measured, not assumed.

    python tests/benchmarks/alignment.py [--faces 350] [--data ../shared/fer2013/validation]

FER-2013 validation faces are drawn 160 px wide into 640x480 pictures, each tilted by a random
15-30 degrees either way (and, as a control, upright). BlazeFace finds them; each found face is
classified by the shipped model (ONNX Runtime) twice: cropped from its box as predict.py crops
it, and cropped by detection.align_crop, rotated so the eye line is level. Accuracy of both.
"""

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

PROJECT_DIR = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT_DIR))
from facial_emotion import blazeface, detection  # noqa: E402
from facial_emotion.detection import FACE_MARGIN, crop_face  # noqa: E402
from facial_emotion.images import load_face, preprocess_face  # noqa: E402
from facial_emotion.saved_model import DEFAULT_MODEL_PATH, load_model, predict_probabilities  # noqa: E402

SIDE = 160  # a face's width in the picture: large enough that detection is not the question


def picture_with(face, angle, generator):
    """A 640x480 grey picture with soft texture and the face (48x48) drawn SIDE px wide, turned
    by `angle` degrees about its centre; returns the picture and the face's centre."""
    picture = np.clip(generator.normal(120, 25, (480, 640)), 0, 255).astype(np.uint8)
    picture = cv2.GaussianBlur(picture, (0, 0), 6)
    big = cv2.resize(face.astype(np.uint8), (SIDE, SIDE), interpolation=cv2.INTER_LINEAR)
    pad = SIDE // 2
    padded = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    centre = (padded.shape[1] / 2, padded.shape[0] / 2)
    turned = cv2.warpAffine(padded, cv2.getRotationMatrix2D(centre, angle, 1.0), padded.shape[::-1],
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    x, y = int(generator.integers(40, 640 - 40 - padded.shape[1])), int(generator.integers(20, 480 - 20 - padded.shape[0]))
    mask = np.zeros_like(turned, dtype=np.float32)
    cv2.circle(mask, (int(centre[0]), int(centre[1])), int(SIDE * 0.72), 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 8)
    region = picture[y:y + turned.shape[0], x:x + turned.shape[1]].astype(np.float32)
    picture[y:y + turned.shape[0], x:x + turned.shape[1]] = (mask * turned + (1 - mask) * region).astype(np.uint8)
    return picture, (x + centre[0], y + centre[1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=PROJECT_DIR.parent / "shared" / "fer2013" / "validation")
    parser.add_argument("--faces", type=int, default=350)
    args = parser.parse_args()
    model, metadata = load_model(DEFAULT_MODEL_PATH, runtime="onnx")
    classes = metadata["class_names"]
    files = [(path, label) for label, name in enumerate(classes) for path in sorted((args.data / name).iterdir())]
    generator = np.random.default_rng(0)
    picks = generator.choice(len(files), size=min(args.faces, len(files)), replace=False)
    detector = blazeface.BlazeFaceDetector()
    for title, tilted in (("tilted 15-30 degrees", True), ("upright (control)", False)):
        found, labels, plain, aligned = 0, [], [], []
        for index in picks:
            path, label = files[index]
            angle = float(generator.uniform(15, 30) * generator.choice([-1, 1])) if tilted else 0.0
            picture, centre = picture_with(load_face(path)[:, :, 0], angle, generator)
            faces = [face for face in detector.detect(cv2.cvtColor(picture, cv2.COLOR_GRAY2RGB))
                     if face.box[0] <= centre[0] <= face.box[0] + face.box[2]
                     and face.box[1] <= centre[1] <= face.box[1] + face.box[3]]
            if not faces:
                continue
            found += 1
            from PIL import Image

            plain.append(crop_face(Image.fromarray(picture), faces[0].box))
            upright = detection.align_crop(picture, faces[0], FACE_MARGIN)
            aligned.append(preprocess_face(Image.fromarray(upright)))
            labels.append(label)
        labels = np.asarray(labels)
        accuracy = {name: float(np.mean(predict_probabilities(model, np.stack(crops)).argmax(axis=1) == labels))
                    for name, crops in (("box crop", plain), ("aligned crop", aligned))}
        print(f"{title}: {found} of {len(picks)} found; accuracy on them: box crop {accuracy['box crop']:.3f}, "
              f"aligned by the eyes {accuracy['aligned crop']:.3f} "
              f"({100 * (accuracy['aligned crop'] - accuracy['box crop']):+.1f} points)")


if __name__ == "__main__":
    main()
