"""Images as users send them, decoded and preprocessed in numpy and Pillow exactly as torchvision does.

The pipeline reproduces ``transforms.Compose([Resize, CenterCrop, ToTensor, Normalize])`` for PIL
input, so a transformer needs no torch. Request errors are :class:`~kxform.errors.DecodeError` naming
the instance (``instances[3].image_bytes.b64``); a misconfigured pipeline is a
:class:`~kxform.errors.PluginError`, raised when the plugin builds it.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from kxform import limits
from kxform.codecs.dtypes import Array
from kxform.errors import DecodeError, LimitError, PluginError
from kxform.offload import INLINE_MAX_PIXELS, require_worker

__all__ = [
    "IMAGE_CONTENT_TYPES",
    "JPEG_CONTENT_TYPE",
    "PNG_CONTENT_TYPE",
    "ImagePipeline",
    "Size",
    "b64decode",
    "center_crop",
    "convert_mode",
    "encode_b64_image",
    "image_bytes",
    "looks_like_image",
    "normalize",
    "open_image",
    "resize",
    "resized_size",
    "to_tensor",
]

logger = logging.getLogger(__name__)

PNG_CONTENT_TYPE: Final = "image/png"
JPEG_CONTENT_TYPE: Final = "image/jpeg"
IMAGE_CONTENT_TYPES: Final = (
    PNG_CONTENT_TYPE,
    JPEG_CONTENT_TYPE,
    "image/gif",
    "image/bmp",
    "image/webp",
    "image/tiff",
)
"""The content types :func:`open_image` decodes; others are refused (EPS, for one, runs Ghostscript)."""
_FORMATS: Final = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")  # Pillow's names, same order

Size = int | tuple[int, int]
"""An int (for resize: the shorter side; for crop: a square) or ``(height, width)``, as in torchvision."""

_CHANNELS: Final = {"RGB": 3, "L": 1}
# torchvision's InterpolationMode -> Pillow filter table (transforms.functional.pil_modes_mapping).
_FILTERS: Final = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
# The first bytes of every format in _FORMATS (WEBP files start with RIFF).
_IMAGE_MAGIC: Final = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"RIFF",
    b"II*\x00",
    b"MM\x00*",
)
_SHAPES: Final = 'a base64 string, {"b64": ...}, {"image_bytes": {"b64": ...}} or {"image": {"b64": ...}}'
_SEND_IMAGE: Final = "send the base64 of the PNG/JPEG bytes"


def encode_b64_image(pixels: Array, image_format: str = "PNG") -> str:
    """The base64 text of ``pixels`` (uint8 HxW or HxWxC) encoded as an image: the inverse of a request's ``b64``."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buffer, format=image_format)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def image_bytes(instance: object, field: str) -> bytes:
    """The encoded image of one request instance; ``field`` is its path, e.g. ``"instances[3]"``."""
    return _locate_image(instance, field)[0]


def _locate_image(instance: object, field: str) -> tuple[bytes, str]:
    """The image bytes of ``instance`` and the path they were found at, for later error messages."""
    if isinstance(instance, bytes | bytearray | memoryview):
        return _raw_or_base64(bytes(instance), field), field
    if isinstance(instance, str):
        return b64decode(instance, field), field
    if not isinstance(instance, Mapping):
        raise DecodeError(f"{field} is {type(instance).__name__}, not an image; send {_SHAPES}")
    for key in ("image_bytes", "image"):
        if key in instance:
            return _b64_member(instance[key], f"{field}.{key}")
    if "b64" in instance:
        return b64decode(instance["b64"], f"{field}.b64"), f"{field}.b64"
    keys = ", ".join(repr(str(key)) for key in instance)
    raise DecodeError(f"{field} has keys {keys or '(none)'} but no image; send {_SHAPES}")


def looks_like_image(data: bytes) -> bool:
    """Whether ``data`` starts as a file of one of the served formats does."""
    return data.startswith(_IMAGE_MAGIC)


def _raw_or_base64(data: bytes, field: str) -> bytes:
    """Raw image bytes as they are; the base64 text of an image (a V2 JSON BYTES element) decoded.

    JSON cannot carry raw bytes, so V2 JSON clients send images as base64 strings, as MLServer's
    ``base64`` content type does; an element that is not an image but is base64 is taken as one.
    """
    if data.startswith(_IMAGE_MAGIC) or not data.isascii():
        return data
    try:
        decoded = b64decode(data, field)
    except DecodeError:
        return data  # neither an image nor base64: open_image says what it is not
    return decoded if decoded.startswith(_IMAGE_MAGIC) else data


def _b64_member(value: object, field: str) -> tuple[bytes, str]:
    if not isinstance(value, Mapping) or "b64" not in value:
        raise DecodeError(f'{field} must be an object {{"b64": ...}}, got {type(value).__name__}; {_SEND_IMAGE}')
    return b64decode(value["b64"], f"{field}.b64"), f"{field}.b64"


def b64decode(value: object, field: str, send: str = _SEND_IMAGE) -> bytes:
    """Base64 text (also a data URL, or wrapped lines) → bytes, or a DecodeError naming ``field`` and what to
    ``send`` instead."""
    if not isinstance(value, str | bytes):
        raise DecodeError(f"{field} must be a base64 string, got {type(value).__name__}; {send}")
    try:
        encoded = value.encode("ascii") if isinstance(value, str) else value
    except UnicodeEncodeError as exc:
        raise DecodeError(f"{field} is not valid base64 (non-ASCII character at {exc.start}); {send}") from exc
    if encoded.startswith(b"data:"):  # a data URL, as browsers' FileReader.readAsDataURL makes
        encoded = encoded.partition(b",")[2]
    if b"\n" in encoded:  # wrapped at 76 columns, as the `base64` command prints by default
        encoded = encoded.translate(None, b"\r\n")
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise DecodeError(f"{field} is not valid base64 ({exc}); {send}") from exc


def open_image(data: bytes, field: str) -> Image.Image:
    """The fully decoded, upright (EXIF-oriented) image of ``data``, or a DecodeError naming ``field``.

    Truncated files are refused (``ImageFile.LOAD_TRUNCATED_IMAGES`` is left off). The size in the
    header is checked before any pixel is decoded: pixels (``--max_image_pixels``) and aspect ratio
    (``--max_image_aspect_ratio``); a large image on the event loop moves to the worker pool.
    """
    try:
        image = Image.open(io.BytesIO(data), formats=_FORMATS)
        limits.current().check_image(image.width, image.height, field)
        require_worker(image.width * image.height, INLINE_MAX_PIXELS)
        image.load()
    except Image.DecompressionBombError as exc:
        raise LimitError(
            f"{field} has more than the {limits.current().max_image_pixels} pixels allowed (--max_image_pixels; "
            f"Pillow says: {exc}); send a smaller image"
        ) from exc
    except UnidentifiedImageError as exc:
        raise DecodeError(
            f"{field} is not an image in a format served here ({', '.join(_FORMATS)}); {_SEND_IMAGE}"
        ) from exc
    except MemoryError as exc:
        raise LimitError(f"{field} needs more memory to decode than this server has; send a smaller image") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise DecodeError(f"{field} is a truncated or corrupt image ({exc}); send the complete image file") from exc
    return _upright(image, field)


# Where Pillow's getexif() finds an orientation (EXIF, ImageMagick's PNG text, XMP; TIFF has tag_v2).
_ORIENTATION_SOURCES = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")
# Modes whose pixels are bytes, one per channel: read straight from tobytes(), the cheapest copy.
_BYTE_CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4}


def _upright(image: Image.Image, field: str) -> Image.Image:
    """The image turned as its EXIF orientation says; an unreadable orientation tag is ignored, as viewers do."""
    if not hasattr(image, "tag_v2") and not any(key in image.info for key in _ORIENTATION_SOURCES):
        return image  # nothing says how it is turned (most PNGs): skip Pillow's EXIF parsing
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except (struct.error, OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError) as exc:
        logger.debug("%s: EXIF orientation unreadable (%s); image kept as stored", field, exc)
    return image


def convert_mode(image: Image.Image, mode: str, field: str = "image") -> Image.Image:
    """``image`` in ``mode`` ("RGB" or "L") as ``img.convert(mode)`` makes it: alpha is dropped."""
    _check_mode(mode)
    if image.mode == mode:
        return image
    if image.mode == "P" and "transparency" in image.info:
        # Same pixels as a direct convert, without Pillow's warning about palette transparency.
        image = image.convert("RGBA")
    try:
        return image.convert(mode)
    except ValueError as exc:
        raise DecodeError(f"{field} is a {image.mode} image, which cannot become {mode} ({exc}); send RGB") from exc


def resized_size(width: int, height: int, size: Size) -> tuple[int, int]:
    """The ``(width, height)`` torchvision's ``Resize(size)`` gives an image of ``width`` x ``height``."""
    if not isinstance(size, int):
        return size[1], size[0]
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)  # torchvision's rounding, float and all
    return (new_short, new_long) if width <= height else (new_long, new_short)


def resize(image: Image.Image, size: Size, interpolation: str = "bilinear") -> Image.Image:
    """torchvision's ``Resize(size, interpolation)`` for a PIL image (antialiased, as Pillow always is)."""
    _check_size(size, "resize")
    target = resized_size(image.width, image.height, size)
    if target == image.size:  # torchvision returns the image untouched then
        return image
    return image.resize(target, _pil_filter(interpolation))


def _pil_filter(interpolation: str) -> Image.Resampling:
    try:
        return _FILTERS[interpolation]
    except KeyError:
        raise PluginError(
            f"interpolation {interpolation!r} is not supported; use one of {', '.join(_FILTERS)}"
        ) from None


def _check_size(size: object, name: str) -> None:
    values = size if isinstance(size, tuple | list) and len(size) == 2 else (size,)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise PluginError(f"{name} size must be a positive int or a (height, width) pair, got {size!r}")


def _check_mode(mode: str) -> None:
    if mode not in _CHANNELS:
        raise PluginError(f"image mode {mode!r} is not supported; use one of {', '.join(_CHANNELS)}")


def center_crop(image: Image.Image, size: Size) -> Image.Image:
    """torchvision's ``CenterCrop(size)``: the centre ``size``, zero-padded where the image is smaller."""
    _check_size(size, "crop")
    crop_height, crop_width = (size, size) if isinstance(size, int) else size
    left = _crop_start(image.width, crop_width)
    top = _crop_start(image.height, crop_height)
    return image.crop((left, top, left + crop_width, top + crop_height))  # outside the image is 0


def _crop_start(length: int, crop: int) -> int:
    if crop > length:  # torchvision pads (crop - length) // 2 before, the rest after
        return -((crop - length) // 2)
    return round((length - crop) / 2.0)  # torchvision's int(round(...)): half to even


def to_tensor(image: Image.Image, field: str = "image") -> Array:
    """torchvision's ``ToTensor`` for an 8-bit image: float32, channels first, in [0, 1]."""
    pixels = _pixels(image, field)
    tensor = np.empty((pixels.shape[2], pixels.shape[0], pixels.shape[1]), dtype=np.float32)
    np.divide(pixels.transpose(2, 0, 1), np.float32(255), out=tensor)
    return tensor


def _pixels(image: Image.Image, field: str) -> Array:
    """The image's pixels as a height x width x channels uint8 array."""
    if image.mode == "1":  # torchvision scales bilevel images to 0/255 too
        image = image.convert("L")
    channels = _BYTE_CHANNELS.get(image.mode)
    if channels is not None:
        return np.frombuffer(image.tobytes(), np.uint8).reshape(image.height, image.width, channels)
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8:
        raise DecodeError(
            f"{field} is a {image.mode} image of {pixels.dtype} pixels, not 8-bit; convert it with "
            "convert_mode(image, 'RGB') first"
        )
    return pixels[:, :, np.newaxis] if pixels.ndim == 2 else pixels


def normalize(array: Array, mean: Sequence[float], std: Sequence[float], field: str = "image") -> Array:
    """torchvision's ``Normalize(mean, std)``: ``(array - mean) / std`` per channel of a CHW array."""
    channels = array.shape[-3]
    dtype = array.dtype if array.dtype.kind == "f" else np.dtype(np.float32)
    mean_array = _per_channel(mean, channels, "mean", field).astype(dtype)
    std_array = _per_channel(std, channels, "std", field).astype(dtype)
    return (array - mean_array) / std_array


def _per_channel(values: Sequence[float], channels: int, name: str, field: str) -> Array:
    if len(values) not in (1, channels):
        raise DecodeError(
            f"{field} has {channels} channel{'s' * (channels != 1)} but the model wants {len(values)} "
            f"({name} has {len(values)} values); convert the image to {'RGB' if len(values) == 3 else 'L'}"
        )
    return np.asarray(values, dtype=np.float64).reshape(-1, 1, 1)


@dataclass(frozen=True, slots=True)
class ImagePipeline:
    """Encoded image -> CHW array, as ``Compose([Resize, CenterCrop, ToTensor, Normalize])`` would make it.

    ``mode`` is the colour mode every image is converted to first ("RGB": 3 channels, "L": 1);
    ``resize``, ``crop``, ``mean``/``std`` (both or neither) and ``interpolation`` are those of the
    torchvision transforms; ``dtype`` is the float type of the output.
    """

    mode: str = "RGB"
    resize: Size | None = None
    crop: Size | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    interpolation: str = "bilinear"
    dtype: npt.DTypeLike = np.float32
    # ToTensor and Normalize fused: pixel * scale - offset, per channel.
    _scale: Array = dataclass_field(init=False, repr=False, compare=False)
    _offset: Array | None = dataclass_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_pipeline(self)
        dtype = np.dtype(self.dtype)
        object.__setattr__(self, "dtype", dtype)
        for name in ("resize", "crop", "mean", "std"):  # tuples, so that pipelines are hashable
            if isinstance(getattr(self, name), Sequence):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        # Computed in float64, rounded once; float16 output is still computed in float32.
        compute = np.float64 if dtype == np.float64 else np.float32
        mean = np.asarray(self.mean if self.mean is not None else (0.0,), np.float64).reshape(-1, 1, 1)
        std = np.asarray(self.std if self.std is not None else (1.0,), np.float64).reshape(-1, 1, 1)
        object.__setattr__(self, "_scale", (1.0 / (255.0 * std)).astype(compute))
        object.__setattr__(self, "_offset", None if self.mean is None else (mean / std).astype(compute))

    @property
    def channels(self) -> int:
        """How many channels every output image has."""
        return _CHANNELS[self.mode]

    def __call__(self, data: bytes, field: str = "image") -> Array:
        """One encoded image as a channels x height x width array."""
        image = self.prepare(data, field)
        out = np.empty((self.channels, image.height, image.width), dtype=self.dtype)
        self._fill(image, out, field)
        return out

    def batch(self, instances: Sequence[object], field: str = "instances") -> Array:
        """The images of ``instances`` (see :func:`image_bytes`) as one N x C x H x W array."""
        if len(instances) == 0:
            raise DecodeError(f"{field} is empty; send at least one image")
        first = self._decode(instances[0], f"{field}[0]")
        out = np.empty((len(instances), self.channels, first.height, first.width), dtype=self.dtype)
        self._fill(first, out[0], f"{field}[0]")
        for index in range(1, len(instances)):
            image = self._decode(instances[index], f"{field}[{index}]")
            _check_same_size(image, first, f"{field}[{index}]", f"{field}[0]")
            self._fill(image, out[index], f"{field}[{index}]")
        return out

    def prepare(self, data: bytes, field: str = "image") -> Image.Image:
        """The image of ``data`` decoded, converted, resized and cropped: everything but the tensor."""
        image = convert_mode(open_image(data, field), self.mode, field)
        if self.resize is not None:
            image = resize(image, self.resize, self.interpolation)
        if self.crop is not None:
            image = center_crop(image, self.crop)
        return image

    def _decode(self, instance: object, field: str) -> Image.Image:
        data, path = _locate_image(instance, field)
        return self.prepare(data, path)

    def _fill(self, image: Image.Image, out: Array, field: str) -> None:
        """Write ToTensor + Normalize of ``image`` into ``out`` (C x H x W), with no other array made."""
        np.multiply(_pixels(image, field).transpose(2, 0, 1), self._scale, out=out)
        if self._offset is not None:
            np.subtract(out, self._offset, out=out)


def _check_same_size(image: Image.Image, first: Image.Image, field: str, first_field: str) -> None:
    if image.size != first.size:
        raise DecodeError(
            f"{field} is {image.width}x{image.height} after preprocessing but {first_field} is "
            f"{first.width}x{first.height}; send images of one size, or set the pipeline's resize and crop"
        )


def _check_pipeline(pipeline: ImagePipeline) -> None:
    _check_mode(pipeline.mode)
    _pil_filter(pipeline.interpolation)
    for name in ("resize", "crop"):
        if getattr(pipeline, name) is not None:
            _check_size(getattr(pipeline, name), name)
    if (pipeline.mean is None) != (pipeline.std is None):
        raise PluginError("ImagePipeline needs mean and std together (as Normalize does); give both or neither")
    if pipeline.mean is not None and pipeline.std is not None:
        _check_normalize(pipeline.mean, pipeline.std, _CHANNELS[pipeline.mode], pipeline.mode)
    if np.dtype(pipeline.dtype) not in (np.float16, np.float32, np.float64):
        raise PluginError(f"ImagePipeline dtype must be float16, float32 or float64, got {pipeline.dtype!r}")


def _check_normalize(mean: Sequence[float], std: Sequence[float], channels: int, mode: str) -> None:
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise PluginError(
                f"ImagePipeline {name} has {len(values)} values but mode {mode!r} gives {channels} "
                f"channel(s); give {channels} values or change mode"
            )
    if any(value == 0 for value in std):
        raise PluginError(f"ImagePipeline std {tuple(std)} contains 0; every std must be non-zero")
