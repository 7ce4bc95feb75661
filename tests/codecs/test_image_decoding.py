"""What users send as images: the accepted request shapes, and the 400s for everything else."""

from __future__ import annotations

import base64
import io
import struct
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kxform.codecs.image import IMAGE_CONTENT_TYPES, ImagePipeline, image_bytes, normalize, open_image, to_tensor
from kxform.errors import DecodeError, LimitError, PluginError
from kxform.limits import configured
from tests.codecs.imagefiles import b64, encode

pipeline = ImagePipeline(mean=(0.5,) * 3, std=(0.5,) * 3)


@pytest.fixture(scope="module")
def small_photo(flower: Image.Image) -> Image.Image:
    return flower.resize((32, 24))


@pytest.fixture(scope="module")
def png(small_photo: Image.Image) -> bytes:
    return encode(small_photo)


@pytest.fixture(scope="module")
def jpeg(photo_paths: dict[str, Path]) -> bytes:
    return photo_paths["flower"].read_bytes()


def shapes(data: bytes) -> dict[str, object]:
    encoded = b64(data)
    return {
        "image_bytes.b64": {"image_bytes": {"b64": encoded}},
        "image.b64": {"image": {"b64": encoded}},
        "bare-b64": {"b64": encoded},
        "base64-string": encoded,
        "raw-bytes": data,
        "data-url": f"data:image/png;base64,{encoded}",
        "wrapped-base64": "\n".join(textwrap.wrap(encoded, 76)) + "\n",
    }


@pytest.mark.parametrize("shape", list(shapes(b"")))
def test_image_pipeline_batch_every_request_shape_gives_the_same_array(png: bytes, shape: str) -> None:
    instance = shapes(png)[shape]
    assert image_bytes(instance, "instances[0]") == png
    np.testing.assert_array_equal(pipeline.batch([instance, png]), np.stack([pipeline(png)] * 2))


@pytest.mark.parametrize(
    ("instance", "message"),
    [
        pytest.param(
            {"image_bytes": {"b64": "abc"}},
            r"instances\[1\]\.image_bytes\.b64 is not valid base64 \(Incorrect padding\); "
            r"send the base64 of the PNG/JPEG bytes",
            id="image_bytes-padding",
        ),
        pytest.param(
            {"image": {"b64": "ab!c"}},
            r"instances\[1\]\.image\.b64 is not valid base64 \(Only base64 data is allowed\)",
            id="image-alphabet",
        ),
        pytest.param({"b64": "abc"}, r"instances\[1\]\.b64 is not valid base64", id="bare-b64"),
        pytest.param("abc", r"instances\[1\] is not valid base64", id="string"),
        pytest.param("é" * 4, r"instances\[1\] is not valid base64 \(non-ASCII character at 0\)", id="non-ascii"),
        pytest.param({"b64": 3}, r"instances\[1\]\.b64 must be a base64 string, got int", id="b64-int"),
        pytest.param(
            {"image_bytes": "aGk="},
            r'instances\[1\]\.image_bytes must be an object \{"b64": \.\.\.\}, got str',
            id="image_bytes-not-object",
        ),
        pytest.param(
            {"url": "http://x/cat.png", "id": 3},
            r"instances\[1\] has keys 'url', 'id' but no image; send a base64 string, \{\"b64\": \.\.\.\}, "
            r"\{\"image_bytes\": \{\"b64\": \.\.\.\}\} or \{\"image\": \{\"b64\": \.\.\.\}\}",
            id="unknown-keys",
        ),
        pytest.param({}, r"instances\[1\] has keys \(none\) but no image", id="empty-object"),
        pytest.param(42, r"instances\[1\] is int, not an image; send a base64 string", id="number"),
        pytest.param([1, 2], r"instances\[1\] is list, not an image", id="list"),
    ],
)
def test_image_bytes_bad_instance_raises_400_naming_the_field_and_the_fix(instance: Any, message: str) -> None:
    with pytest.raises(DecodeError, match=message) as info:
        image_bytes(instance, "instances[1]")
    assert info.value.http_status == 400


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def ppm(image: Image.Image) -> bytes:
    return encode(image, "PPM")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda png, jpeg, small: b"hello, world", "is not an image in a format served here", id="text"),
        pytest.param(lambda png, jpeg, small: truncated(png), "is a truncated or corrupt image", id="truncated-png"),
        pytest.param(
            lambda png, jpeg, small: truncated(jpeg),
            r"truncated or corrupt image \(image file is truncated",
            id="truncated-jpeg",
        ),
        pytest.param(lambda png, jpeg, small: ppm(small), "not an image in a format served here", id="ppm-refused"),
        pytest.param(lambda png, jpeg, small: b"", "not an image in a format served here", id="empty"),
    ],
)
def test_image_pipeline_batch_undecodable_image_raises_400_naming_the_instance(
    png: bytes, jpeg: bytes, small_photo: Image.Image, make: Any, message: str
) -> None:
    instances = [{"image_bytes": {"b64": b64(png)}}, {"image_bytes": {"b64": b64(make(png, jpeg, small_photo))}}]
    with pytest.raises(DecodeError, match=message) as info:
        pipeline.batch(instances)
    assert info.value.message.startswith("instances[1].image_bytes.b64 ")
    assert "send " in info.value.message
    assert info.value.http_status == 400


def test_open_image_over_the_pixel_limit_is_a_413_naming_the_flag() -> None:
    data = encode(Image.new("RGB", (120, 120)))
    with configured(max_image_pixels=100 * 100), pytest.raises(LimitError) as info:
        open_image(data, "instances[0].b64")
    assert info.value.message == (
        "instances[0].b64 is 120x120 = 14400 pixels, more than the 10000 allowed (--max_image_pixels); "
        "send a smaller image"
    )
    assert info.value.http_status == 413


@pytest.mark.parametrize("size", [(40000, 1), (1, 20000)], ids=["wide", "tall"])
def test_open_image_with_an_extreme_aspect_ratio_is_a_400_before_decoding(size: tuple[int, int]) -> None:
    data = encode(Image.new("L", size))
    with pytest.raises(DecodeError, match=r"aspect ratio beyond 200:1 \(--max_image_aspect_ratio\)") as info:
        open_image(data, "instances[0]")
    assert info.value.http_status == 400


def test_open_image_decompression_bomb_error_is_a_413(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(Image.new("RGB", (150, 150)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)
    expected = r"more than the \d+ pixels allowed \(--max_image_pixels; Pillow says: Image size \(22500 pixels\)"
    with pytest.raises(LimitError, match=expected) as info:
        open_image(data, "instances[0].b64")
    assert info.value.message.startswith("instances[0].b64 ")
    assert info.value.http_status == 413


def jpeg_with_exif(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """A 4x2 red JPEG whose EXIF IFD holds ``(tag, type, count, value)`` entries exactly as given."""
    ifd = b"".join(struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\0") for tag, kind, count, value in entries)
    tiff = b"II*\x00" + struct.pack("<IH", 8, len(entries)) + ifd + struct.pack("<I", 0)
    buffer = io.BytesIO()
    Image.new("RGB", (4, 2), (255, 0, 0)).save(buffer, format="JPEG", exif=b"Exif\x00\x00" + tiff)
    return buffer.getvalue()


ORIENTATION_6 = (0x0112, 3, 1, b"\x06\x00")  # rotate 90: Pillow rewrites the EXIF after turning the image


@pytest.mark.parametrize(
    "other",
    [
        pytest.param((0x0128, 2, 4, b"abc\0"), id="struct-error"),  # ResolutionUnit (SHORT) stored as text
        pytest.param((0x011A, 2, 4, b"abc\0"), id="type-error"),  # XResolution (RATIONAL) stored as text
    ],
)
def test_open_image_keeps_an_image_whose_exif_cannot_be_rewritten(other: tuple[int, int, int, bytes]) -> None:
    image = open_image(jpeg_with_exif([ORIENTATION_6, other]), "instances[0]")

    assert image.mode == "RGB"
    assert image.size in ((4, 2), (2, 4))


def test_open_image_within_the_pixel_limit_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)
    assert open_image(encode(Image.new("RGB", (100, 100))), "instances[0]").size == (100, 100)


def test_open_image_loads_the_pixels_so_the_input_can_go() -> None:
    image = open_image(encode(Image.new("RGB", (4, 4), "red")), "instances[0]")
    assert image.getpixel((3, 3)) == (255, 0, 0)


def test_normalize_wrong_channel_count_raises_400_saying_what_the_model_wants(small_photo: Image.Image) -> None:
    gray = to_tensor(small_photo.convert("L"))
    with pytest.raises(DecodeError, match=r"instances\[2\] has 1 channel but the model wants 3") as info:
        normalize(gray, (0.5,) * 3, (0.5,) * 3, field="instances[2]")
    assert info.value.http_status == 400


def test_image_pipeline_batch_of_different_sizes_without_resize_raises_naming_both(small_photo: Image.Image) -> None:
    instances = [encode(small_photo), encode(small_photo.resize((20, 10)))]
    with pytest.raises(DecodeError, match=r"instances\[1\] is 20x10 .* but instances\[0\] is 32x24; .*resize and crop"):
        pipeline.batch(instances)


def test_image_pipeline_batch_of_different_sizes_with_resize_and_crop_stacks_them(small_photo: Image.Image) -> None:
    resized = ImagePipeline(resize=16, crop=16)
    batch = resized.batch([encode(small_photo), encode(small_photo.resize((20, 10))), encode(small_photo)])
    assert batch.shape == (3, 3, 16, 16)
    np.testing.assert_array_equal(batch[0], batch[2])


def test_image_pipeline_batch_empty_raises() -> None:
    with pytest.raises(DecodeError, match="instances is empty; send at least one image"):
        pipeline.batch([])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"mode": "RGBA"}, "image mode 'RGBA' is not supported; use one of RGB, L", id="mode"),
        pytest.param({"interpolation": "cubic"}, "interpolation 'cubic' is not supported", id="interpolation"),
        pytest.param({"resize": 0}, r"resize size must be a positive int or a \(height, width\) pair", id="resize"),
        pytest.param({"crop": (1, 2, 3)}, r"crop size must be a positive int or a \(height, width\) pair", id="crop"),
        pytest.param({"mean": (0.5,)}, "needs mean and std together", id="mean-alone"),
        pytest.param({"mean": (0.5,) * 3, "std": (0.5,) * 2}, "std has 2 values but mode 'RGB' gives 3", id="std-len"),
        pytest.param({"mode": "L", "mean": (0.5,) * 3, "std": (1,)}, "mean has 3 values but mode 'L'", id="gray"),
        pytest.param({"mean": (0.5,), "std": (0.0,)}, r"std \(0\.0,\) contains 0", id="zero-std"),
        pytest.param({"dtype": np.int32}, "dtype must be float16, float32 or float64", id="dtype"),
    ],
)
def test_image_pipeline_misconfigured_raises_plugin_error_at_construction(options: Any, message: str) -> None:
    with pytest.raises(PluginError, match=message):
        ImagePipeline(**options)


def test_image_pipeline_is_hashable_with_list_arguments() -> None:
    from_lists = ImagePipeline(resize=[8, 8], mean=[0.5], std=[0.5])  # type: ignore[arg-type]
    assert from_lists == ImagePipeline(resize=(8, 8), mean=(0.5,), std=(0.5,))
    assert hash(from_lists) == hash(ImagePipeline(resize=(8, 8), mean=(0.5,), std=(0.5,)))


def test_image_content_types_start_with_png_and_jpeg() -> None:
    assert IMAGE_CONTENT_TYPES[:2] == ("image/png", "image/jpeg")
    assert all(content_type.startswith("image/") for content_type in IMAGE_CONTENT_TYPES)


def test_image_bytes_round_trips_what_base64_encodes(png: bytes) -> None:
    assert image_bytes(base64.b64encode(png).decode(), "instances[0]") == png
