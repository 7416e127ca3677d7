"""The code that training and prediction share: images and their preprocessing, the saved model
and its two runtimes, face detection, video, the detect-crop-classify pipeline, and its outputs.

Its prediction side never imports TensorFlow or Keras: only `keras_runtime` (loaded when the
Keras runtime is asked for) and the training side (`finishing`, used by emotion_recognition.py)
do. Prediction from Python:

    from facial_emotion import detect_emotion, find_emotions
    detect_emotion("dataset/validation/happy/PublicTest_10130075.jpg")   # ('happy', 95.4)
    find_emotions("tests/data/astronaut.jpg")                           # [Face(box=[164, 57, 119, 119], ...)]
"""

from facial_emotion.api import detect_emotion, find_emotions  # noqa: F401
