"""The code that training and prediction share: images and their preprocessing, the saved model
and its two runtimes, face detection, video, the detect-crop-classify pipeline, and its outputs.

Its prediction side never imports TensorFlow or Keras: only `keras_runtime` (loaded when the
Keras runtime is asked for) and the training side (`finishing`, used by emotion_recognition.py)
do. `import facial_emotion` itself loads neither OpenCV nor ONNX Runtime: the API below is
imported when first used. Prediction from Python:

    from facial_emotion import detect_emotion, find_emotions, track_emotions
    detect_emotion("dataset/validation/happy/PublicTest_10130075.jpg")   # ('happy', 0.9541)
    find_emotions("tests/data/astronaut.jpg")          # [Face(box=[164, 57, 119, 119], ...)]
    find_emotions(numpy_array_or_pil_image)            # H x W grayscale or H x W x 3 RGB, uint8
    for frame in track_emotions("clip.mp4", every=5):  # Frame(index, time, faces), each with its person
        print(frame.time, [(face.person, face.emotion) for face in frame.faces])
"""

API = ("detect_emotion", "find_emotions", "track_emotions")
__all__ = list(API)


def __getattr__(name):
    if name in API:
        from facial_emotion import api

        return getattr(api, name)
    raise AttributeError(f"module 'facial_emotion' has no attribute {name!r}")
