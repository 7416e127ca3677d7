"""How often is a face in a photo named right, end to end? Models compared on the same found faces.

    python tests/benchmarks/scene_emotions.py [MODEL ...] [--data ../shared/fer2013/validation]
        [--scenes 400] [--quality 75] [--seed 1000]

Synthetic scenes: FER-2013 validation faces (labels from their class folders), drawn with
replacement, pasted, tinted and feathered as in face_scenes.py, up to four to a 640x480 scene,
24-120 px wide (log-uniform; 24 px is the smallest face predict.py reports): the faces of a
group photo or a video frame. Each scene is saved as a JPEG (--quality) and read back, as a
camera or a website would hand it over. predict.py's own detect-and-crop step
(detection.find_faces with BlazeFace) finds the faces; a face counts as found when a box has
IoU >= 0.4 with the pasted square. Each found face's crop is classified by every MODEL (ONNX
Runtime when its export matches, as predict.py; default: the shipped model). Printed: faces
found and each model's accuracy on the same found faces, per face size; with two models, how
many faces only one of them names right. Scene seeds start at --seed: face_scenes.py's tuning
scenes were seeds 0-299.
"""

import argparse
import io
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

PROJECT_DIR = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT_DIR))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import face_scenes  # noqa: E402
from facial_emotion.detection import FaceDetector, find_faces  # noqa: E402
from facial_emotion.errors import UserError  # noqa: E402
from facial_emotion.saved_model import DEFAULT_MODEL_PATH, load_model, predict_probabilities  # noqa: E402

FACE_SIDES = (24, 120)  # px: smaller than face_scenes.py's, where the classifier is weakest
BUCKETS = ((24, 32), (32, 45), (45, 70), (70, 120))


def labelled_faces(folder, class_names):
    """(path, class index) of every face under the class folders of `folder`, sorted."""
    missing = [name for name in class_names if not (Path(folder) / name).is_dir()]
    if missing:
        raise UserError(f"{folder}: no class folder {missing[0]}/")
    return [(path, index) for index, name in enumerate(class_names)
            for path in sorted((Path(folder) / name).iterdir()) if path.suffix.lower() in (".jpg", ".png")]


def make_scene(rng, faces, photo, quality):
    """A 640x480 RGB scene (after a JPEG round trip) and its faces' true boxes and labels."""
    canvas = face_scenes.make_background(rng, photo)
    boxes, labels = [], []
    for x, y, side in face_scenes.place_sides(rng, face_scenes.FACES_PER_SCENE, FACE_SIDES):
        path, label = faces[rng.integers(len(faces))]
        face, alpha = face_scenes.render_face(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), side, rng)
        face_scenes.paste(canvas, face, alpha, (x + side / 2, y + side / 2), 0.0)
        boxes.append([x, y, side, side])
        labels.append(label)
    encoded = io.BytesIO()
    Image.fromarray(canvas).save(encoded, "JPEG", quality=quality)
    return np.asarray(Image.open(encoded).convert("RGB")), boxes, labels


def measure(models, data, scenes, quality, first_seed):
    """Faces found per bucket, and for each model whether it named each found face right."""
    loaded = [load_model(path, runtime="auto") for path in models]
    class_names = loaded[0][1]["class_names"]
    if any(metadata["class_names"] != class_names for _, metadata in loaded):
        raise UserError("the models name different classes")
    faces = labelled_faces(data, class_names)
    if not faces:
        raise UserError(f"{data}: no .jpg or .png face in its class folders")
    photo = cv2.cvtColor(cv2.imread(str(face_scenes.ASTRONAUT)), cv2.COLOR_BGR2RGB)
    detector = FaceDetector("blazeface")
    crops, labels, buckets, total = [], [], [], np.zeros(len(BUCKETS), int)
    for seed in range(first_seed, first_seed + scenes):
        scene, truths, truth_labels = make_scene(np.random.default_rng(seed), faces, photo, quality)
        found = find_faces(Image.fromarray(scene), detector)
        for truth in truths:
            total[face_scenes.bucket_of(truth[2], BUCKETS)] += 1
        for truth_index, box_index in face_scenes.match(truths, [detection.box for detection, _ in found]):
            crops.append(found[box_index][1])
            labels.append(truth_labels[truth_index])
            buckets.append(face_scenes.bucket_of(truths[truth_index][2], BUCKETS))
    if not crops:
        raise UserError(f"no face found in {scenes} scenes")
    labels = np.asarray(labels)
    right = [predict_probabilities(model, np.stack(crops)).argmax(axis=1) == labels for model, _ in loaded]
    return np.asarray(buckets), total, right


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="*", default=[DEFAULT_MODEL_PATH])
    parser.add_argument("--data", type=Path, default=PROJECT_DIR.parent / "shared" / "fer2013" / "validation")
    parser.add_argument("--scenes", type=int, default=400)
    parser.add_argument("--quality", type=int, default=75)
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.scenes < 1 or not 1 <= args.quality <= 100 or args.seed < 0:
        parser.error("--scenes must be at least 1, --quality 1-100, --seed at least 0")
    try:
        buckets, total, right = measure(args.models, args.data, args.scenes, args.quality, args.seed)
    except UserError as error:
        sys.exit(f"error: {error}")
    print(f"{args.scenes} scenes from seed {args.seed}, JPEG quality {args.quality}; accuracy on the faces found")
    print(f"{'face side':>12s} {'found':>12s}" + "".join(f" {str(path)[-40:]:>42s}" for path in args.models))
    for index, (low, high) in enumerate(BUCKETS):
        inside = buckets == index
        print(f"{f'{low}-{high} px':>12s} {f'{inside.sum()}/{total[index]}':>12s}"
              + "".join(f" {hits[inside].mean() if inside.any() else float('nan'):>42.3f}" for hits in right))
    print(f"{'all':>12s} {f'{len(buckets)}/{total.sum()}':>12s}" + "".join(f" {hits.mean():>42.3f}" for hits in right))
    if len(right) == 2:
        differ = right[1] != right[0]
        print(f"the faces only one model names right: {int((right[0] & differ).sum())} by the first, "
              f"{int((right[1] & differ).sum())} by the second")


if __name__ == "__main__":
    main()
