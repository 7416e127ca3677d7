"""Find the faces in photos and videos and predict the emotion of each.

    python predict.py photo.jpg                       # photo.jpg: happy (87.3%)
    python predict.py photos/ --annotate annotated/   # a folder; copies with boxes and labels
    python predict.py clip.mp4 --every 5 --csv emotions.csv
    python predict.py face.png --top-k 3 --json       # machine-readable
    python predict.py clip.mp4 --plot scores.png      # each person's emotions over time
    python predict.py photos/ --plot counts.png       # how many faces got each emotion
    python predict.py --webcam                        # live, q to quit (needs a GUI OpenCV build)
    python predict.py photo.jpg --runtime keras       # TensorFlow instead of the ONNX export

The command line lives in the package (`facial_emotion.predict_cli`), so that an installed
package runs the same thing as `facial-emotion`; this script keeps it working from a clone.
"""

import sys

from facial_emotion.predict_cli import main, parse_args, run  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
