#!/usr/bin/env bash
# The package as a user installs it: build the wheel, install it with its own dependencies into a
# fresh venv (no TensorFlow), then, from a folder outside the checkout, run the console script and
# the Python API on a test photo. Prints the venv's size and install time.
#
#     bash tests/check_install.sh            # CI runs this before the tests
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$work/dist" "$repo"
rm -rf "$repo/build" "$repo"/*.egg-info
python -m venv "$work/venv"
started=$(date +%s)
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$work"/dist/facial_emotion-*.whl
echo "prediction-only install: $(( $(date +%s) - started )) s, site-packages $(du -sh "$work"/venv/lib/python*/site-packages | cut -f1)"
cp "$repo/tests/data/astronaut.jpg" "$work/photo.jpg"
cd "$work"
venv/bin/python - <<'PY'
import importlib.util
assert importlib.util.find_spec("tensorflow") is None, "the prediction-only install holds TensorFlow"
assert importlib.util.find_spec("keras") is None, "the prediction-only install holds Keras"
import facial_emotion
assert "site-packages" in facial_emotion.__file__, facial_emotion.__file__
[face] = facial_emotion.find_emotions("photo.jpg")
assert face.emotion == "happy" and face.confidence > 0.9, face
print("find_emotions from the installed package:", face.emotion, face.confidence)
PY
out=$(venv/bin/facial-emotion photo.jpg)
echo "facial-emotion photo.jpg: $out"
[[ "$out" == "photo.jpg: happy ("* ]]
err=$(venv/bin/facial-emotion photo.jpg --parquet rows.parquet 2>&1) && status=0 || status=$?
[[ $status == 1 && "$err" == *'facial-emotion[parquet]'* ]] ||
    { echo "--parquet without the parquet extra: expected one line naming it, got: $err"; exit 1; }
venv/bin/facial-emotion photo.jpg --plot chart.png >/dev/null || { echo "--plot failed in the prediction-only install"; exit 1; }
[[ -s chart.png ]] || { echo "--plot wrote no chart"; exit 1; }
echo "--plot works without seaborn; --parquet names its extra"
status=0
err=$(venv/bin/facial-emotion-train --data-dir . 2>&1) || status=$?
echo "facial-emotion-train without the train extra: $err (exit $status)"
[[ $status == 1 && "$err" == *'pip install "facial-emotion[train]"'* ]]
status=0
err=$(venv/bin/facial-emotion photo.jpg --runtime keras 2>&1) || status=$?
[[ $status == 1 && "$err" == *'facial-emotion[train]'* && $(wc -l <<<"$err") == 1 ]] ||
    { echo "--runtime keras without the train extra: expected one line naming it, got: $err"; exit 1; }
echo "install check passed"
