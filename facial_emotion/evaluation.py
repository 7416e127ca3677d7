"""How good a model is: accuracy, macro-F1, per-class figures, calibration error and the
temperature that fixes it, and the robustness panel (the faces under shifts.ROBUSTNESS_SHIFTS).
No TensorFlow: the same functions score a run at the end of training and a saved model under
`--evaluate`."""

import numpy as np

from facial_emotion import shifts
from facial_emotion.saved_model import apply_temperature, predict_probabilities

# Temperatures tried when calibrating: 601 log-spaced values from 0.05 (sharpen) to 20 (flatten),
# scored by expected calibration error over 15 equal-width confidence bins (Guo et al., 2017).
TEMPERATURE_GRID = (0.05, 20.0, 601)
CALIBRATION_BINS = 15
# The two re-framings of the panel that the model's JSON and metrics.json also record as
# "framing_accuracy": a field kept for readers written before the panel existed.
EVALUATION_FRAMINGS = ("crop_80", "pad_120")


def accuracy_of(model, faces, labels, tta=False):
    return round(float(np.mean(predict_probabilities(model, faces, tta=tta).argmax(axis=1) == labels)), 4)


def robustness_summary(plain_accuracy, shifted):
    """The panel's record: accuracy under each shift, and the mean and worst drop from plain
    accuracy, in points (percentage points of accuracy)."""
    drops = {name: plain_accuracy - accuracy for name, accuracy in shifted.items()}
    worst = max(drops, key=drops.get)
    return {"accuracy": round(float(plain_accuracy), 4),
            "shifts": {name: round(float(accuracy), 4) for name, accuracy in shifted.items()},
            "mean_drop_points": round(100 * float(np.mean(list(drops.values()))), 2),
            "worst_drop_points": round(100 * float(drops[worst]), 2), "worst_shift": worst}


def robustness_panel(model, faces, labels, tta=False):
    """Accuracy on the faces as they are and under each of shifts.ROBUSTNESS_SHIFTS, with the
    mean and worst drop (see robustness_summary)."""
    shifted = {name: accuracy_of(model, shifts.apply_shift(faces, name), labels, tta)
               for name in shifts.ROBUSTNESS_SHIFTS}
    return robustness_summary(accuracy_of(model, faces, labels, tta), shifted)


def framing_of(panel):
    """The two re-framings of a robustness panel, as the JSON's "framing_accuracy"."""
    return {name: panel["shifts"][name] for name in EVALUATION_FRAMINGS}


def describe_panel(panel):
    """The robustness panel as one line for the terminal."""
    return (f"robustness: mean drop {panel['mean_drop_points']:.1f} points, worst {panel['worst_drop_points']:.1f} "
            f"({panel['worst_shift']}); "
            + ", ".join(f"{name} {accuracy:.3f}" for name, accuracy in panel["shifts"].items()))


def expected_calibration_error(labels, probabilities, bins=CALIBRATION_BINS):
    """ECE with equal-width confidence bins: how far stated confidence is from actual accuracy."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)


def fit_temperature(labels, probabilities):
    """The temperature T for softmax(log p / T) with the lowest expected calibration error on
    these labels, from TEMPERATURE_GRID (the first of equal ones). Calibration error is what the
    temperature is for; the log-likelihood optimum can miss it."""
    labels = np.asarray(labels)
    low, high, count = TEMPERATURE_GRID
    temperatures = np.exp(np.linspace(np.log(low), np.log(high), count))
    errors = [expected_calibration_error(labels, apply_temperature(probabilities, float(t))) for t in temperatures]
    return float(temperatures[int(np.argmin(errors))])


def compute_metrics(class_names, labels, probabilities):
    """Accuracy, macro-F1 (over the classes present in `labels`), ECE and per-class precision,
    recall, F1 and support (scikit-learn's classification_report)."""
    from sklearn import metrics as skm

    predictions = probabilities.argmax(axis=1)
    present = sorted(set(int(label) for label in labels))
    report = skm.classification_report(labels, predictions, labels=list(range(len(class_names))),
                                       target_names=list(class_names), output_dict=True, zero_division=0)
    return {
        "accuracy": round(float(np.mean(predictions == labels)), 4),
        "macro_f1": round(float(skm.f1_score(labels, predictions, labels=present, average="macro",
                                             zero_division=0)), 4),
        "expected_calibration_error": round(expected_calibration_error(labels, probabilities), 4),
        "images": int(len(labels)),
        "per_class": {name: {"precision": round(float(report[name]["precision"]), 4),
                             "recall": round(float(report[name]["recall"]), 4),
                             "f1": round(float(report[name]["f1-score"]), 4), "support": int(report[name]["support"])}
                      for name in class_names},
    }


def text_report(class_names, labels, probabilities):
    """scikit-learn's classification report of the classes present, as text."""
    from sklearn import metrics as skm

    present = sorted(set(int(label) for label in labels))
    return skm.classification_report(labels, probabilities.argmax(axis=1), labels=present,
                                     target_names=[class_names[i] for i in present], digits=4, zero_division=0)


def with_panel(metrics, panel):
    """metrics.json's record with a robustness panel: "robustness" (accuracy per shift), its mean
    and worst drop in points, the worst shift, and "framing_accuracy"."""
    return dict(metrics, robustness=panel["shifts"], robustness_mean_drop=panel["mean_drop_points"],
                robustness_worst_drop=panel["worst_drop_points"], robustness_worst_shift=panel["worst_shift"],
                framing_accuracy=framing_of(panel))


def describe_on_validation(model, metadata, x_val, y_val, selection=None, panel=None):
    """Fit the confidence temperatures on validation, or on the `selection` set (faces, labels)
    when there is one (one temperature for plain answers, one for answers averaged with the
    mirror image, which are less extreme), and record the model's validation figures and
    robustness panel in new metadata, with the selection set's as "selection"; returns it with the
    calibrated probabilities on validation. `panel`: the robustness panel of the faces the
    temperatures are fitted on, when already known. The model itself is not changed."""
    if selection is not None:
        metadata, _ = describe_on_validation(model, metadata, *selection, panel=panel)
        panel = None
        metadata["selection"] = metadata.pop("validation")
        temperatures = metadata["temperature"], metadata["temperature_tta"]
    class_names = metadata["class_names"]
    raw, raw_tta = predict_probabilities(model, x_val), predict_probabilities(model, x_val, tta=True)
    temperature, temperature_tta = (temperatures if selection is not None
                                    else (fit_temperature(y_val, raw), fit_temperature(y_val, raw_tta)))
    plain = compute_metrics(class_names, y_val, apply_temperature(raw, temperature))
    with_tta = compute_metrics(class_names, y_val, apply_temperature(raw_tta, temperature_tta))
    recall = lambda metrics: {name: figures["recall"] for name, figures in metrics["per_class"].items()}  # noqa: E731
    panel = panel or robustness_panel(model, x_val, y_val)
    metadata = dict(metadata, temperature=round(temperature, 4), temperature_tta=round(temperature_tta, 4))
    metadata["validation"] = {
        "images": int(len(y_val)), "accuracy": plain["accuracy"], "macro_f1": plain["macro_f1"],
        "per_class_recall": recall(plain),
        "ece_before_calibration": round(expected_calibration_error(y_val, raw), 4),
        "ece_after_calibration": plain["expected_calibration_error"],
        "framing_accuracy": framing_of(panel), "robustness": panel,
        "flip_tta": {"accuracy": with_tta["accuracy"], "macro_f1": with_tta["macro_f1"],
                     "per_class_recall": recall(with_tta),
                     "ece_before_calibration": round(expected_calibration_error(y_val, raw_tta), 4),
                     "ece_after_calibration": with_tta["expected_calibration_error"]},
    }
    return metadata, apply_temperature(raw, temperature)
