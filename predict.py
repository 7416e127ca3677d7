"""Predict the emotion of the face in each image file.

    python predict.py photo.jpg                       # photo.jpg: happy (87.3%)
    python predict.py faces/ --top-k 3                # a folder, three best emotions each
    python predict.py a.png b.png --json              # machine-readable, one object per image

Image loading, preprocessing, model loading and class names all come from emotion_recognition,
the module that trained the model, so prediction sees exactly what training saw.
"""

import argparse
import json
import sys
from pathlib import Path

import emotion_recognition as er


def collect_inputs(paths):
    """Files as given, folders walked recursively for image files (sorted, symlink loops safe)."""
    inputs = []
    for path in map(Path, paths):
        if path.is_dir():
            inputs.extend(_walk_images(path))
        else:
            inputs.append(path)
    return inputs


def _walk_images(folder):
    found, seen = [], set()
    for root, directories, files in _safe_walk(folder, seen):
        found.extend(Path(root) / name for name in sorted(files) if er.is_image_file(name))
    return found


def _safe_walk(folder, seen):
    import os

    for root, directories, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a symlink loop, or a folder reached twice: walk it once
            directories[:] = []
            continue
        seen.add(real)
        directories.sort()
        yield root, directories, files


def predict_files(paths, model, class_names, temperature=1.0, tta=False):
    """One result dict per path, in the --json schema; a bad file gets an error, not an exception."""
    results, faces, owners = [], [], []
    for path in paths:
        result = {"file": str(path), "faces": [], "error": None}
        try:
            image = er.open_image(path)
        except er.UserError as error:
            result["error"] = str(error)
        else:
            faces.append(er.preprocess_face(image))
            owners.append((result, [0, 0, image.width, image.height]))
        results.append(result)
    if faces:
        probabilities = er.predict_probabilities(model, faces, temperature, tta=tta)
        for (result, box), scores in zip(owners, probabilities):
            result["faces"].append(describe_face(box, scores, class_names))
    return results


def describe_face(box, scores, class_names):
    best = int(scores.argmax())
    return {"box": [int(value) for value in box], "emotion": class_names[best],
            "confidence": round(float(scores[best]), 4),
            "scores": {name: round(float(score), 4) for name, score in zip(class_names, scores)}}


def format_result(result, top_k=1):
    if not result["faces"]:
        return f"{result['file']}: no face found"
    parts = []
    for face in result["faces"]:
        ranked = sorted(face["scores"].items(), key=lambda item: -item[1])[:top_k]
        parts.append(", ".join(f"{name} ({score:.1%})" for name, score in ranked))
    return f"{result['file']}: " + "; ".join(parts)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Predict the emotion of the face in each image.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--model", type=Path, default=er.DEFAULT_MODEL_PATH,
                        help="a model saved by emotion_recognition.py, with its .json beside it")
    parser.add_argument("--top-k", type=int, default=1, help="how many emotions to print per face")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per image")
    parser.add_argument("--tta", action="store_true", help="average each face with its mirror image")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        model, metadata = er.load_model_bundle(args.model)
    except er.UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return er.EXIT_USER_ERROR
    inputs = collect_inputs(args.images)
    if not inputs:
        print("error: no image files found in " + ", ".join(args.images), file=sys.stderr)
        return er.EXIT_USER_ERROR
    results = predict_files(inputs, model, metadata["class_names"], metadata.get("temperature", 1.0),
                            tta=args.tta)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            if not result["error"]:
                print(format_result(result, args.top_k))
    failed = [result for result in results if result["error"]]
    for result in failed:
        print(f"error: {result['error']}", file=sys.stderr)
    return er.EXIT_USER_ERROR if failed else 0


if __name__ == "__main__":
    sys.exit(main())
