"""Reading images and turning a face into the model's input: the one preprocessing that training
and prediction share."""

import errno
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facial_emotion.errors import OutOfResources, UserError, first_line
from facial_emotion.files import check_regular_file, describe_oserror

# FER-2013's native resolution; every face is brought to this size before the model sees it.
IMAGE_SIZE = (48, 48)
# One channel: FER-2013 is grayscale, and colour carries little expression information.
INPUT_SHAPE = IMAGE_SIZE + (1,)
# The image files training and prediction both read: formats Pillow decodes that people keep
# faces in. One list for both, so a folder that trains is a folder that predicts.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# The video files a folder is searched for: the containers OpenCV's FFmpeg build reads.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
# Pillow's guard against decompression bombs, made an error instead of a warning: 100 megapixels
# is more than any phone photo (a 12 MP photo is 12), and a bigger file could take gigabytes.
MAX_IMAGE_PIXELS = 100_000_000
# Pillow warns of a decompression bomb above its own limit (89.5 MP), which read_image makes an
# error; this process's limit is the project's.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
# Images (and video frames) smaller than this on their shorter side are refused: at 16 px a
# FER-2013 face still shows eyes, brows and mouth apart; below, blowing it up to the model's 48
# px invents the expression, and a 1x1 image would still get a confident emotion.
MIN_IMAGE_SIDE = 16
# A progressive JPEG is decoded once per scan over the whole picture: ordinary files have about
# 10 scans; a 4 MB file of 40,000 repeated scans took minutes. More than this is refused.
MAX_JPEG_SCANS = 100
# Pillow's modes of integer and floating-point pixels, which need scaling to 8 bits.
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


def is_image_file(path):
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video_file(path):
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def read_image(path):
    """Open an image file as an upright PIL image (EXIF orientation applied), any mode; an
    animated file gives its first frame. Errors a user can cause (missing, not a regular file,
    unreadable, not an image, truncated, a decompression bomb) become one-line `UserError`s
    naming the file."""
    path = Path(path)
    check_regular_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # malformed EXIF and the like: the image still reads
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise UserError(f"{path}: {image.width}x{image.height} pixels is more than "
                                    f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels; refused")
                if image.format == "JPEG" and image.info.get("progressive"):
                    check_jpeg_scans(path)
                image.load()
                return ImageOps.exif_transpose(image)
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image file Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"{path}: refused: its declared size could take gigabytes to decode") from None
    except Exception as error:  # Pillow's plug-ins raise many types for a broken file (DDS: NotImplementedError)
        if isinstance(error, OSError) and error.errno in (errno.EMFILE, errno.ENFILE):
            raise OutOfResources(f"out of file handles while opening {path} ({describe_oserror(error)}): raise "
                                 "the limit (ulimit -n) and run again") from None
        raise UserError(f"{path}: broken image ({first_line(error)})") from None


def check_jpeg_scans(path):
    """Refuse a progressive JPEG of more than MAX_JPEG_SCANS scans before it is decoded. A scan
    starts with the marker FF DA, which the compressed data never holds (an FF there is followed
    by 00 or a restart marker)."""
    with open(path, "rb") as handle:
        scans = handle.read().count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        raise UserError(f"{path}: a progressive JPEG of {scans} scans (more than {MAX_JPEG_SCANS}); refused")


def check_size(path, width, height):
    """Refuse images too small to hold a face (see MIN_IMAGE_SIDE)."""
    if min(width, height) < MIN_IMAGE_SIDE:
        raise UserError(f"{path}: too small to hold a face ({width}x{height} pixels)")


def _wide_to_8_bit(image):
    """Integer or floating-point pixels -> 8-bit grayscale. 16-bit integers (and 32-bit ones
    within 0..65535) are divided down; floats of 0..1 (as scientific TIFFs store them) are
    stretched to 0..255; values already in 0..255 stay; any other range (negative values, 32-bit
    values above 65535) is mapped from its own minimum and maximum. NaN and infinite pixels
    become black."""
    array = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(array)
    array = np.where(finite, array, 0.0)
    low, high = (float(array[finite].min()), float(array[finite].max())) if finite.any() else (0.0, 0.0)
    if image.mode.startswith("I;16") or (image.mode == "I" and low >= 0 and 255 < high <= 65535):
        scaled = array / 65535.0 * 255.0
    elif image.mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = array * 255.0
    elif low >= 0.0 and high <= 255.0:
        scaled = array
    elif high > low:
        scaled = (array - low) / (high - low) * 255.0
    else:
        scaled = np.zeros_like(array)
    scaled = np.where(finite, scaled, 0.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def to_grayscale(image):
    """Convert a PIL image of any mode to 8-bit grayscale ('L')."""
    if image.mode == "L":
        return image
    if image.mode in WIDE_MODES:
        return _wide_to_8_bit(image)
    return to_rgb(image).convert("L")


def to_rgb(image):
    """Convert a PIL image of any mode to 8-bit RGB. Transparent pixels become white, so a
    cut-out face on a transparent background does not sit on black: an alpha channel's, and a
    transparent colour's (a PNG's tRNS in palette, grayscale or RGB pictures)."""
    if image.mode in WIDE_MODES:
        return _wide_to_8_bit(image).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB") if image.mode != "RGB" else image


def preprocess_face(image):
    """A grayscale PIL face crop -> float32 array (48, 48, 1) of raw 0..255 pixels.

    Scaling to 0..1 is the model's own first layer (Rescaling), so this is all the preprocessing
    there is, for training and prediction alike.
    """
    if image.size != IMAGE_SIZE:
        image = image.resize(IMAGE_SIZE, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)[:, :, np.newaxis]


def load_face(path):
    """An image file, taken whole as a face -> model input array (48, 48, 1)."""
    return preprocess_face(to_grayscale(read_image(path)))
