"""What real photos and video frames do to a face: framing, position, rotation, light, blur, low
resolution, JPEG compression and noise.

Training draws these shifts at random (`degrade_randomly`, the last step of the
ImageDataGenerator's preprocessing function); every evaluation applies each one at a fixed
magnitude (`ROBUSTNESS_SHIFTS`, `apply_shift`) and reports the accuracy under it, so the figures
and the augmentation speak of the same shifts. Faces are float arrays of 0..255 pixels, 48x48,
with or without a trailing channel axis. No TensorFlow here.
"""

import cv2
import numpy as np
from PIL import Image

# The robustness panel: each condition, the shift it applies and its magnitude. The magnitudes
# are those at which an independent measurement found the model shipped then (the model card's
# base model) weakest against the `fer` package (a mini-Xception on PyPI): a face detected in a
# photo is often 16-40 px wide, blurred, badly lit or compressed.
ROBUSTNESS_SHIFTS = {
    "crop_80": ("scale", 0.8),         # centre crop of 80% of the side: a tight detector box
    "pad_120": ("scale", 1.2),         # padded to 120%, edge pixels repeated: a loose box
    "shift_10": ("shift", 0.1),        # moved 10% of the side right and down: an off-centre box
    "rotate_15": ("rotate", 15.0),     # degrees: a tilted head
    "brightness_50": ("brightness", 0.5),  # half as bright: a dim room
    "contrast_50": ("contrast", 0.5),  # half the contrast around the mean: haze, a flat exposure
    "gamma_2": ("gamma", 2.0),         # mid-tones darkened: an underexposed face
    "blur_1": ("blur", 1.0),           # Gaussian blur, sigma 1 px at 48x48: focus, motion
    "low_res_16": ("low_res", 16),     # 16 px wide, blown up to 48: a small face in a group photo
    "jpeg_15": ("jpeg", 15),           # JPEG quality 15: a compressed video frame
    "noise_10": ("noise", 10.0),       # Gaussian noise, sigma 10 of 255: a dark, grainy sensor
}
# The panel's noise is the same on every run: a fixed generator seed.
PANEL_NOISE_SEED = 0

# Training's random shifts, applied in this order (light first, then what the camera and the
# file do): for each, the probability that a face gets it and the range its
# magnitude is drawn from. Each is rare enough that about a sixth of the faces get none of them
# (0.8 ** 6 * 0.5), so clean faces are still learnt; together they cover the panel's magnitudes
# and a little beyond. Low resolution is the shift that costs most: after fine-tunes with 0.2 and
# 12-40 px, then 0.3 and 10-32 px, 16-px faces were still 14 and 13 points below plain, so it is
# drawn for half the faces, 10-28 px. Applied after the generator's rotation, shift, flip and
# framing scale.
# Brightness is drawn here rather than by ImageDataGenerator's brightness_range, which would
# change every face.
RANDOM_SHIFTS = {
    "brightness": (0.2, (0.4, 1.4)),   # factor
    "contrast": (0.2, (0.35, 1.0)),    # factor around the face's mean
    "gamma": (0.2, (0.5, 2.5)),        # exponent, drawn log-uniform
    "low_res": (0.5, (10, 28)),        # side in pixels before blowing back up to 48: the costliest shift
    "blur": (0.2, (0.4, 1.6)),         # sigma in pixels
    "noise": (0.2, (2.0, 14.0)),       # sigma of 255
    "jpeg": (0.2, (8, 60)),            # quality
}


def _scale(face, scale):
    """A centre crop of `scale` of the side (< 1), or a face padded to `scale` with its edge pixels
    (> 1), resized back to the face's size as prediction resizes a detector's crop (Pillow,
    bilinear)."""
    side = face.shape[0]
    if scale < 1:
        keep = round(side * scale)
        start = (side - keep) // 2
        face = face[start:start + keep, start:start + keep]
    elif scale > 1:
        face = np.pad(face, round(side * (scale - 1) / 2), mode="edge")
    image = Image.fromarray(np.clip(face, 0, 255).astype(np.uint8), "L")
    return np.asarray(image.resize((side, side), Image.Resampling.BILINEAR), dtype=np.float32)


def _warp(face, matrix):
    return cv2.warpAffine(face, matrix, face.shape[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _shift(face, share):
    offset = share * face.shape[0]
    return _warp(face, np.float32([[1, 0, offset], [0, 1, offset]]))


def _rotate(face, degrees):
    centre = ((face.shape[1] - 1) / 2, (face.shape[0] - 1) / 2)
    return _warp(face, cv2.getRotationMatrix2D(centre, degrees, 1.0))


def _contrast(face, factor):
    mean = float(face.mean())
    return mean + (face - mean) * factor


def _gamma(face, exponent):
    return 255.0 * (np.clip(face, 0, 255) / 255.0) ** exponent


def _blur(face, sigma):
    return cv2.GaussianBlur(face, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REPLICATE)


def _low_res(face, side):
    side = int(round(side))
    small = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, face.shape[::-1], interpolation=cv2.INTER_LINEAR)


def _jpeg(face, quality):
    pixels = np.clip(np.rint(face), 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(round(quality))])
    return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE).astype(np.float32) if ok else face


def _noise(face, sigma, generator):
    return face + generator.normal(0.0, sigma, face.shape).astype(np.float32)


def _brightness(face, factor):
    return face * factor


# Each kind of shift: its function of (face, magnitude), or of (face, magnitude, generator).
SHIFT_FUNCTIONS = {"scale": _scale, "shift": _shift, "rotate": _rotate, "brightness": _brightness,
                   "contrast": _contrast, "gamma": _gamma, "blur": _blur, "low_res": _low_res, "jpeg": _jpeg,
                   "noise": _noise}
# The kinds that draw random numbers, and so take a generator.
RANDOM_KINDS = ("noise",)


def shift_face(face, kind, magnitude, generator=None):
    """One face (2-D float array of 0..255 pixels) under one shift; the result is clipped to 0..255.
    `generator` draws the noise (a NumPy Generator or the legacy np.random module)."""
    if kind not in SHIFT_FUNCTIONS:
        raise ValueError(f"unknown shift {kind!r}")
    face = np.asarray(face, dtype=np.float32)
    if kind in RANDOM_KINDS:
        out = SHIFT_FUNCTIONS[kind](face, magnitude, generator if generator is not None else np.random.default_rng())
    else:
        out = SHIFT_FUNCTIONS[kind](face, magnitude)
    return np.clip(out, 0, 255).astype(np.float32)


def apply_shift(faces, condition):
    """Faces [n, 48, 48, 1] (or [n, 48, 48]) under one of ROBUSTNESS_SHIFTS, same shape."""
    kind, magnitude = ROBUSTNESS_SHIFTS[condition]
    faces = np.asarray(faces, dtype=np.float32)
    generator = np.random.default_rng(PANEL_NOISE_SEED)
    planes = faces[..., 0] if faces.ndim == 4 else faces
    out = np.stack([shift_face(plane, kind, magnitude, generator) for plane in planes]) if len(planes) else planes
    return out[..., np.newaxis] if faces.ndim == 4 else out


def degrade_randomly(face, shifts=RANDOM_SHIFTS):
    """Training's random photometric and resolution shifts of one face ([48, 48, 1] or [48, 48]),
    drawn from NumPy's global generator so that the batches of a seeded run repeat exactly.
    Light first, then what the camera and the file do: resolution, blur, noise, compression."""
    face = np.asarray(face, dtype=np.float32)
    plane = face[..., 0] if face.ndim == 3 else face
    for kind, (probability, (low, high)) in shifts.items():  # in RANDOM_SHIFTS's order
        if np.random.random() >= probability:
            continue
        if kind == "gamma":
            magnitude = float(np.exp(np.random.uniform(np.log(low), np.log(high))))
        else:
            magnitude = float(np.random.uniform(low, high))
        plane = shift_face(plane, kind, magnitude, np.random)
    return plane[..., np.newaxis] if face.ndim == 3 else plane
