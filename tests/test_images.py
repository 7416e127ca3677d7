"""facial_emotion.images: reading any image file upright, to 8-bit grayscale, safely."""

import os
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import deadline
from facial_emotion.errors import UserError
from facial_emotion.images import MAX_IMAGE_PIXELS, load_face, read_image, to_grayscale




def png_header(width, height):
    """A valid PNG that declares width x height 8-bit gray pixels and holds none: what a
    decompression bomb's header looks like, a few dozen bytes on disk."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_a_fifo_is_refused_at_once_never_opened(tmp_path):
    fifo = tmp_path / "face.png"
    os.mkfifo(fifo)
    started = time.monotonic()
    with deadline(10), pytest.raises(UserError, match="not a regular file"):
        read_image(fifo)
    assert time.monotonic() - started < 5


def test_float_tiff_of_0_to_1_is_stretched_not_black(tmp_path):
    path = tmp_path / "gray.tif"
    Image.fromarray(np.full((32, 32), 0.5, dtype=np.float32), "F").save(path)
    assert read_image(path).mode == "F"
    assert load_face(path).mean() == pytest.approx(128, abs=1)
    ramp = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (64, 1))
    Image.fromarray(ramp, "F").save(path)
    gray = np.asarray(to_grayscale(read_image(path)))
    assert gray.min() == 0 and gray.max() == 255


def test_negative_floats_are_stretched_over_their_own_range(tmp_path):
    path = tmp_path / "signed.tif"
    ramp = np.tile(np.linspace(-3.0, 1.0, 64, dtype=np.float32), (64, 1))
    ramp[0, 0] = np.inf  # not finite: left out of the range
    Image.fromarray(ramp, "F").save(path)
    gray = np.asarray(to_grayscale(read_image(path))).astype(int)
    assert gray[1, 0] == 0 and gray[1, -1] == 255
    assert np.all(np.diff(gray[1]) >= 0), "the ramp keeps its order"
    assert gray[1, 32] == pytest.approx(255 * (ramp[1, 32] + 3) / 4, abs=1)


def test_nan_pixels_are_black_in_an_image_with_negative_values(tmp_path):
    path = tmp_path / "signed.tif"
    ramp = np.tile(np.linspace(-3.0, 1.0, 64, dtype=np.float32), (64, 1))
    ramp[0, 0] = np.nan
    Image.fromarray(ramp, "F").save(path)
    assert np.asarray(to_grayscale(read_image(path)))[0, 0] == 0


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_images_are_divided_down(tmp_path, suffix):
    path = tmp_path / f"deep{suffix}"
    Image.fromarray(np.full((32, 32), 32768, dtype=np.uint16)).save(path)
    assert read_image(path).mode.startswith("I")
    assert load_face(path).mean() == pytest.approx(127.5, abs=1)
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    Image.fromarray(ramp).save(path)
    gray = np.asarray(to_grayscale(read_image(path)))
    assert gray[0, 0] == 0 and gray[0, -1] == 255


def test_exif_rotation_is_applied(tmp_path):
    pixels = np.zeros((20, 40), dtype=np.uint8)
    pixels[:, :20] = 255  # left half white as stored
    image = Image.fromarray(pixels, "L")
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    upright = np.asarray(read_image(path))
    assert upright.shape == (40, 20)
    assert upright[:20].mean() > 200 and upright[20:].mean() < 50  # the stored left is now the top


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(100_000, 100_000))
    assert path.stat().st_size < 100
    started = time.monotonic()
    with pytest.raises(UserError, match=r"bomb\.png: refused"):
        read_image(path)
    assert time.monotonic() - started < 2


def test_over_100_megapixels_is_refused_even_without_pillows_own_guard(tmp_path, monkeypatch):
    # Pillow's bomb guard is process-wide, and any library may switch it off (or raise it);
    # the tool's own limit still holds.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    path = tmp_path / "huge.png"
    path.write_bytes(png_header(12_000, 10_000))
    with pytest.raises(UserError, match=r"huge\.png: 12000x10000 pixels is more than 100 megapixels; refused"):
        read_image(path)


@pytest.mark.parametrize("width, height", [(10_000, 9_500), (10_000, 10_000)])  # 95 MP, and 100 MP exactly
def test_an_image_of_up_to_100_megapixels_is_not_refused_for_its_size(tmp_path, width, height):
    path = tmp_path / "big.png"
    path.write_bytes(png_header(width, height))  # holding no pixels: broken, but not too big
    assert width * height <= MAX_IMAGE_PIXELS
    with pytest.raises(UserError) as error:
        read_image(path)
    assert "refused" not in str(error.value) and "broken image" in str(error.value)


def progressive_jpeg(path, scans=None, side=64):
    """A progressive JPEG of random pixels at `path`; with `scans`, its last scan repeated until
    the file holds that many."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side), dtype=np.uint8)).save(
        buffer, "JPEG", progressive=True)
    data = buffer.getvalue()
    if scans is not None:
        last_scan = data[data.rindex(b"\xff\xda"):data.rindex(b"\xff\xd9")]
        data = data[:data.rindex(b"\xff\xd9")] + last_scan * (scans - data.count(b"\xff\xda")) + b"\xff\xd9"
        assert data.count(b"\xff\xda") == scans
    path.write_bytes(data)
    return path


def test_a_progressive_jpeg_of_thousands_of_scans_is_refused_before_decoding(tmp_path):
    path = progressive_jpeg(tmp_path / "scans.jpg", scans=2010)
    with deadline(5), pytest.raises(UserError, match="progressive JPEG of 20"):
        read_image(path)
    ordinary = progressive_jpeg(tmp_path / "ordinary.jpg")
    assert read_image(ordinary).size == (64, 64)


def test_a_jpeg_of_exactly_the_scan_limit_is_read_and_one_more_is_refused(tmp_path):
    from facial_emotion.images import MAX_JPEG_SCANS, check_jpeg_scans

    check_jpeg_scans(progressive_jpeg(tmp_path / "limit.jpg", MAX_JPEG_SCANS, side=32))
    over = progressive_jpeg(tmp_path / "over.jpg", MAX_JPEG_SCANS + 1, side=32)
    with pytest.raises(UserError) as caught:
        check_jpeg_scans(over)
    assert str(caught.value) == f"{over}: a progressive JPEG of 101 scans (more than 100); refused"


def gray_of(mode, values):
    """to_grayscale of a one-row image of `mode` holding `values`, as a list of 8-bit pixels."""
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    image = Image.fromarray(np.array([values], dtype=dtype))
    assert image.mode == mode
    return np.asarray(to_grayscale(image)).ravel().tolist()


@pytest.mark.parametrize("mode, values, expected", [
    # 16-bit pixels, and 32-bit ones above 255 within 0..65535, are divided by 65535.
    ("I;16", [0, 384, 33025, 65535], [0, 1, 129, 255]),
    ("I", [0, 300], [0, 1]),
    ("I", [0, 256], [0, 1]),
    ("I", [1000, 2000, 65535], [4, 8, 255]),
    # 32-bit pixels within 0..255 stay; beyond 65535 they are mapped from their own range.
    ("I", [0, 255], [0, 255]),
    ("I", [1000, 65536], [0, 255]),
    ("I", [-100, 0, 100], [0, 128, 255]),
    # Floats of 0..1 are stretched; floats within 0..255 stay; others are mapped from their range.
    ("F", [0.0, 0.045, 1.0], [0, 11, 255]),
    ("F", [0.0, 1.5], [0, 2]),
    ("F", [0.0, 100.0], [0, 100]),
    ("F", [10.0, 255.0], [10, 255]),
    ("F", [10.0, 256.0], [0, 255]),
    ("F", [-1.0, 0.0, 1.0], [0, 128, 255]),
    ("F", [-1.0, -0.91, 1.0], [0, 11, 255]),  # 0.045 of the range: 11.5 of 255 would round to 12
])
def test_wide_pixels_are_brought_to_8_bits_by_their_kind_and_range(mode, values, expected):
    assert gray_of(mode, values) == expected


@pytest.mark.filterwarnings("error")  # no division by a zero range on the way
@pytest.mark.parametrize("mode, values", [("F", [300.0, 300.0]), ("I", [-7, -7]), ("F", [np.nan, np.inf])])
def test_a_flat_picture_out_of_range_and_one_of_no_finite_pixel_come_out_black(mode, values):
    assert gray_of(mode, values) == [0, 0]


# ---------------------------------------------------------------------------------------------
# Modes: transparency on white, grayscale as it is, the model's input
# ---------------------------------------------------------------------------------------------
from facial_emotion import images  # noqa: E402


def pixels(image):
    """A one-row picture's pixels, left to right, as tuples (or numbers for one channel)."""
    return [tuple(pixel) if np.ndim(pixel) else int(pixel) for pixel in np.asarray(image)[0].tolist()]


def half_transparent(mode):
    """A 2x1 picture: a black opaque pixel, then a black fully transparent one, in `mode`."""
    rgba = Image.new("RGBA", (2, 1))
    rgba.putdata([(0, 0, 0, 255), (0, 0, 0, 0)])
    return rgba if mode == "RGBA" else rgba.convert(mode)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA"])
def test_transparent_pixels_become_white_and_opaque_ones_stay(mode):
    rgb = images.to_rgb(half_transparent(mode))
    assert rgb.mode == "RGB" and pixels(rgb) == [(0, 0, 0), (255, 255, 255)]


def test_a_palette_picture_with_a_transparent_colour_gets_white_there_and_one_without_keeps_its_colour():
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    palette.putdata([0, 1])
    assert pixels(images.to_rgb(palette)) == [(0, 0, 0), (200, 10, 10)]
    palette.info["transparency"] = 0
    assert pixels(images.to_rgb(palette)) == [(255, 255, 255), (200, 10, 10)]


@pytest.mark.parametrize("mode, values, key", [("L", [0, 200], 0), ("RGB", [(0, 0, 0), (9, 9, 9)], (0, 0, 0))])
def test_a_transparent_colour_in_a_grayscale_or_rgb_picture_becomes_white(mode, values, key):
    picture = Image.new(mode, (2, 1))
    picture.putdata(values)
    picture.info["transparency"] = key  # what Pillow reads from a PNG's tRNS chunk
    second = (200, 200, 200) if mode == "L" else (9, 9, 9)
    assert pixels(images.to_rgb(picture)) == [(255, 255, 255), second]


def test_rgb_and_grayscale_pictures_are_used_as_they_are():
    rgb, gray = Image.new("RGB", (4, 4), (10, 20, 30)), Image.new("L", (4, 4), 77)
    assert images.to_rgb(rgb) is rgb and images.to_grayscale(gray) is gray
    assert np.asarray(images.to_grayscale(rgb)).tolist() == [[round(0.299 * 10 + 0.587 * 20 + 0.114 * 30)] * 4] * 4


def test_a_face_of_another_size_is_resized_bilinearly_to_float32_48x48():
    face = Image.fromarray(np.random.default_rng(2).integers(0, 256, (97, 61), dtype=np.uint8))
    array = images.preprocess_face(face)
    assert array.shape == (48, 48, 1) and array.dtype == np.float32
    np.testing.assert_array_equal(array[:, :, 0], np.asarray(face.resize((48, 48), Image.Resampling.BILINEAR)))


def test_a_picture_of_exactly_the_smallest_side_is_accepted():
    images.check_size("a.png", 16, 400)
    with pytest.raises(UserError) as refused:
        images.check_size("a.png", 400, 15)
    assert str(refused.value) == "a.png: too small to hold a face (400x15 pixels)"


def test_a_grayscale_png_with_a_transparent_gray_reads_as_white_there(tmp_path):
    picture = Image.new("L", (2, 1))
    picture.putdata([0, 200])
    picture.save(tmp_path / "cutout.png", transparency=0)
    assert pixels(images.to_rgb(read_image(tmp_path / "cutout.png"))) == [(255, 255, 255), (200, 200, 200)]
