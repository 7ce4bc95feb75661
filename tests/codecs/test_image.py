"""The numpy/Pillow image pipeline against torchvision.transforms, on real photos."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from kxform.codecs.image import (
    ImagePipeline,
    center_crop,
    convert_mode,
    normalize,
    open_image,
    resize,
    resized_size,
    to_tensor,
)
from tests.codecs.imagefiles import encode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TOLERANCE = 1e-5

imagenet_torchvision = transforms.Compose(
    [
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]
)
imagenet = ImagePipeline(resize=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
cifar_torchvision = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
cifar = ImagePipeline(mean=(0.5,) * 3, std=(0.5,) * 3)


def max_difference(ours: np.ndarray, reference: torch.Tensor) -> float:
    assert ours.shape == tuple(reference.shape)
    return float(np.abs(ours - reference.numpy()).max())


def rgba(photo: Image.Image) -> Image.Image:
    with_alpha = photo.copy()
    with_alpha.putalpha(Image.linear_gradient("L").resize(photo.size))
    return with_alpha


def palette_with_transparency(photo: Image.Image) -> Image.Image:
    paletted = photo.quantize(256)
    paletted.info["transparency"] = bytes(range(256))
    return paletted


# How a user's file differs from the upright RGB photo; torchvision users call .convert("RGB").
VARIANTS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "rgb": lambda photo: photo,
    "grayscale": lambda photo: photo.convert("L"),
    "rgba": rgba,
    "palette": lambda photo: photo.quantize(256),
    "palette-transparency": palette_with_transparency,
    "la": lambda photo: photo.convert("LA"),
    "cmyk": lambda photo: photo.convert("CMYK"),
    "16-bit-gray": lambda photo: photo.convert("I").point(lambda v: v * 256).convert("I;16"),
}


@pytest.mark.parametrize("photo_name", ["china", "flower"])
def test_image_pipeline_imagenet_matches_torchvision_on_the_jpeg_photos(
    photo_paths: dict[str, Path], photo_name: str
) -> None:
    path = photo_paths[photo_name]
    ours = imagenet(path.read_bytes())
    with Image.open(path) as image:
        reference = imagenet_torchvision(image.convert("RGB"))
    assert ours.dtype == np.float32
    assert max_difference(ours, reference) <= TOLERANCE


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.filterwarnings("ignore:Palette images with Transparency")  # torchvision's side warns, not ours
def test_image_pipeline_imagenet_matches_torchvision_on_converted_variants(flower: Image.Image, variant: str) -> None:
    stored = VARIANTS[variant](flower)
    data = encode(stored, "TIFF" if stored.mode == "CMYK" else "PNG")
    with Image.open(io.BytesIO(data)) as reloaded:
        reference = imagenet_torchvision(reloaded.convert("RGB"))
    assert max_difference(imagenet(data), reference) <= TOLERANCE


# The transpose a camera's file holds, for each EXIF orientation, relative to the upright photo.
STORED_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


@pytest.mark.parametrize("orientation", [pytest.param(o, id=f"orientation-{o}") for o in STORED_TRANSPOSES])
@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_open_image_applies_exif_orientation_so_photos_come_out_upright(
    flower: Image.Image, orientation: int, image_format: str
) -> None:
    quality = {"quality": 100} if image_format == "JPEG" else {}
    upright = open_image(encode(flower, image_format, **quality), "instances[0]")
    stored = upright.transpose(STORED_TRANSPOSES[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored, image_format, exif=exif, **quality)

    decoded = open_image(data, "instances[0]")

    assert decoded.size == upright.size
    difference = np.abs(np.asarray(decoded, np.int16) - np.asarray(upright, np.int16))
    assert difference.mean() < (2.0 if image_format == "JPEG" else 1e-9)  # JPEG re-encoding is lossy


@pytest.mark.parametrize("orientation", [pytest.param(o, id=f"orientation-{o}") for o in STORED_TRANSPOSES])
def test_image_pipeline_exif_rotated_photo_matches_torchvision_on_the_upright_one(
    flower: Image.Image, orientation: int
) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(flower.transpose(STORED_TRANSPOSES[orientation]), "PNG", exif=exif)
    assert max_difference(imagenet(data), imagenet_torchvision(flower)) <= TOLERANCE


def test_image_pipeline_cifar_batch_matches_torchvision_on_32x32_photos(photo_paths: dict[str, Path]) -> None:
    images = [Image.open(path).convert("RGB").resize((32, 32)) for path in photo_paths.values()]
    images.append(images[0].convert("L"))  # a grayscale one, converted to RGB like the others
    ours = cifar.batch([encode(image) for image in images])
    reference = torch.stack([cifar_torchvision(image.convert("RGB")) for image in images])
    assert ours.shape == (3, 3, 32, 32)
    assert ours.flags.c_contiguous
    assert max_difference(ours, reference) <= TOLERANCE


def test_image_pipeline_grayscale_mode_gives_one_channel_like_torchvision(flower: Image.Image) -> None:
    pipeline = ImagePipeline(mode="L", resize=64, crop=48, mean=(0.5,), std=(0.25,))
    reference = transforms.Compose(
        [transforms.Resize(64), transforms.CenterCrop(48), transforms.ToTensor(), transforms.Normalize((0.5,), (0.25,))]
    )
    ours = pipeline(encode(flower), "instances[0]")
    assert ours.shape == (1, 48, 48)
    assert max_difference(ours, reference(flower.convert("L"))) <= TOLERANCE


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "lanczos"])
def test_image_pipeline_interpolations_match_torchvision(flower: Image.Image, interpolation: str) -> None:
    mode = InterpolationMode(interpolation)
    reference = transforms.Compose(
        [transforms.Resize(100, interpolation=mode), transforms.CenterCrop(90), transforms.ToTensor()]
    )
    pipeline = ImagePipeline(resize=100, crop=90, interpolation=interpolation)
    assert max_difference(pipeline(encode(flower)), reference(flower)) <= TOLERANCE


@pytest.mark.parametrize("dtype", [pytest.param(np.float16, id="fp16"), pytest.param(np.float64, id="fp64")])
def test_image_pipeline_other_float_dtypes_hold_the_same_values(flower: Image.Image, dtype: type) -> None:
    pipeline = ImagePipeline(resize=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, dtype=dtype)
    ours = pipeline(encode(flower))
    assert ours.dtype == dtype
    tolerance = 4e-3 if dtype == np.float16 else TOLERANCE  # fp16 keeps ~3 decimal digits
    assert max_difference(ours.astype(np.float32), imagenet_torchvision(flower)) <= tolerance


@pytest.mark.parametrize(
    ("width", "height", "size"),
    [
        pytest.param(640, 427, 256, id="landscape"),
        pytest.param(427, 640, 256, id="portrait"),
        pytest.param(500, 333, 224, id="odd-landscape"),
        pytest.param(333, 500, 224, id="odd-portrait"),
        pytest.param(1000, 999, 256, id="almost-square"),
        pytest.param(300, 300, 256, id="square"),
        pytest.param(3, 1, 7, id="tiny-upscale"),
        pytest.param(640, 427, (100, 150), id="exact-height-width"),
    ],
)
def test_resize_size_rule_matches_torchvision(width: int, height: int, size: int | tuple[int, int]) -> None:
    image = Image.new("RGB", (width, height))
    expected = transforms.Resize(size)(image).size
    assert resize(image, size).size == expected
    assert resized_size(width, height, size) == expected


def test_resized_size_shorter_side_rounds_down_the_longer_as_torchvision_does() -> None:
    assert resized_size(640, 427, 256) == (383, 256)  # 256 * 640 / 427 = 383.7
    assert resized_size(427, 640, 256) == (256, 383)


def test_resize_to_the_size_it_has_returns_the_image_untouched(flower: Image.Image) -> None:
    assert resize(flower, min(flower.size)) is flower


@pytest.mark.parametrize(
    ("width", "height", "size"),
    [
        pytest.param(100, 50, 80, id="pad-height-crop-width"),
        pytest.param(50, 100, (80, 60), id="pad-width-crop-height"),
        pytest.param(5, 3, 8, id="pad-both-odd"),
        pytest.param(101, 103, 50, id="round-half-to-even"),
        pytest.param(64, 64, 64, id="same-size"),
    ],
)
def test_center_crop_matches_torchvision_including_zero_padding(
    flower: Image.Image, width: int, height: int, size: int | tuple[int, int]
) -> None:
    for mode in ("RGB", "L"):
        image = flower.resize((width, height)).convert(mode)
        expected = np.asarray(transforms.CenterCrop(size)(image))
        np.testing.assert_array_equal(np.asarray(center_crop(image, size)), expected)


@pytest.mark.parametrize("mode", ["RGB", "L", "1"])
def test_to_tensor_matches_torchvision_to_tensor_exactly(flower: Image.Image, mode: str) -> None:
    image = flower.convert(mode)
    ours = to_tensor(image)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, transforms.ToTensor()(image).numpy())


@pytest.mark.parametrize(
    ("mode", "mean", "std"),
    [
        pytest.param("RGB", IMAGENET_MEAN, IMAGENET_STD, id="rgb-imagenet"),
        pytest.param("L", (0.5,), (0.5,), id="gray"),
        pytest.param("RGB", (0.5,), (0.2,), id="broadcast-one-value"),
    ],
)
def test_normalize_matches_torchvision_normalize(
    flower: Image.Image, mode: str, mean: tuple[float, ...], std: tuple[float, ...]
) -> None:
    image = flower.convert(mode)
    ours = normalize(to_tensor(image), mean, std)
    assert ours.dtype == np.float32
    assert max_difference(ours, transforms.Normalize(mean, std)(transforms.ToTensor()(image))) <= 1e-6


def test_image_pipeline_fused_step_equals_to_tensor_then_normalize(photo_paths: dict[str, Path]) -> None:
    data = photo_paths["china"].read_bytes()
    composed = normalize(to_tensor(imagenet.prepare(data)), IMAGENET_MEAN, IMAGENET_STD)
    assert np.abs(imagenet(data) - composed).max() <= 1e-6


@pytest.mark.parametrize("variant", ["rgba", "palette", "palette-transparency", "la", "16-bit-gray"])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_convert_mode_is_what_img_convert_gives_without_warnings(flower: Image.Image, variant: str, mode: str) -> None:
    image = VARIANTS[variant](flower.resize((64, 48)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = convert_mode(image, mode)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about palette transparency here
        expected = image.convert(mode)
    assert ours.mode == mode
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(expected))
