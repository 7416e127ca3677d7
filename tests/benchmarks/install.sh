#!/usr/bin/env bash
# The two installs side by side: a prediction-only venv (`pip install .`) and a full one
# (`pip install ".[train]"`), made one after the other on this machine; their site-packages
# sizes and install times; then a first answer on a photo from the prediction-only venv
# against `import tensorflow` in the full one, interleaved, 5 rounds.
#
#     bash tests/benchmarks/install.sh [ROUNDS]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
rounds=${1:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$work/dist" "$repo"
rm -rf "$repo/build" "$repo"/*.egg-info
wheel=$(ls "$work"/dist/facial_emotion-*.whl)
for kind in predict train; do
    python -m venv "$work/$kind"
    spec=$wheel; [[ $kind == train ]] && spec="$wheel[train]"
    started=$(date +%s.%N)
    "$work/$kind/bin/python" -m pip install --quiet --disable-pip-version-check "$spec"
    seconds=$(echo "$(date +%s.%N) - $started" | bc)
    echo "$kind: install ${seconds%.*} s, site-packages $(du -sh "$work/$kind"/lib/python*/site-packages | cut -f1)"
done
cp "$repo/tests/data/astronaut.jpg" "$work/photo.jpg"
cd "$work"
for round in $(seq "$rounds"); do
    a=$( { /usr/bin/time -f %e predict/bin/facial-emotion photo.jpg >/dev/null; } 2>&1 )
    b=$( { /usr/bin/time -f %e train/bin/python -c "import tensorflow" >/dev/null; } 2>&1 | tail -1)
    echo "round $round: facial-emotion photo.jpg ${a} s, import tensorflow ${b} s"
done
