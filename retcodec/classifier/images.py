"""Image sets for the classifier analysis: arrays, DataLoaders, or a folder tree read lazily.

Every source becomes an :class:`ImageSet`: ``len(s)`` images, ``s[a:b]`` a
float32 array ``(b - a, C, H, W)`` (already normalised), ``s.labels`` an int
array ``(n,)`` (``-1`` where unknown) and ``s.class_names``. The contributions
engine reads it by slices, so a folder tree is decoded batch by batch, never
held in memory.

Folder trees follow the ImageNet layout ``root/<class_name>/<image>.jpg``;
classes are the sorted folder names. Each image is resized (shorter side to
``resize``), centre-cropped to ``crop`` x ``crop``, scaled to [0, 1] and
normalised per channel, ``(x - mean) / std`` (:func:`preprocess_image`).

The normalisation belongs to the network (it is what the network was trained
on): :class:`Normalization` holds it, by name (``"imagenet"``: the ImageNet
mean/std, the default; ``"[-1,1]"``: ``2x - 1``, as EfficientNet-Lite and other
TensorFlow-converted networks want; ``"[0,1]"``: none) or as explicit values.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from retcodec.errors import ConfigurationError, MissingDataError, NonFiniteError, RetcodecError, ShapeError
from retcodec.io.paths import user_path
from retcodec.io.validation import as_int

__all__ = ["ImageSet", "ArrayImages", "FolderImages", "as_image_set", "from_loader",
           "Normalization", "NORMALIZATIONS", "DEFAULT_NORMALIZATION", "preprocess_image",
           "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# named normalisations of [0, 1] RGB: (mean, std) per channel
NORMALIZATIONS: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "[-1,1]": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "[0,1]": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
DEFAULT_NORMALIZATION = "imagenet"


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x - mean) / std`` of images scaled to [0, 1]; part of a model's description.

    Build it with :meth:`from_spec`: a name of :data:`NORMALIZATIONS`, a
    ``"m1,m2,m3/s1,s2,s3"`` string, a ``(mean, std)`` pair or a mapping with
    ``mean`` and ``std``. One value applies to every channel.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = "custom"

    @classmethod
    def from_spec(cls, spec: Any = DEFAULT_NORMALIZATION) -> "Normalization":
        if isinstance(spec, Normalization):
            return spec
        if isinstance(spec, str):
            key = spec.strip().lower().replace(" ", "")
            if key in NORMALIZATIONS:
                return cls(*NORMALIZATIONS[key], name=key)
            if "/" in key:
                mean, _, std = key.partition("/")
                try:
                    return cls._checked([float(v) for v in mean.split(",")], [float(v) for v in std.split(",")])
                except ValueError:
                    pass
            raise ConfigurationError(f"unknown normalization {spec!r}; use one of {list(NORMALIZATIONS)} "
                                     f"or 'mean1,mean2,mean3/std1,std2,std3'")
        if isinstance(spec, Mapping) and {"mean", "std"} <= set(spec):
            return cls._checked(spec["mean"], spec["std"])
        if isinstance(spec, (tuple, list)) and len(spec) == 2:
            return cls._checked(spec[0], spec[1])
        raise ConfigurationError(f"normalization must be a name, a (mean, std) pair or a mapping with "
                                 f"mean and std, got {spec!r}")

    @classmethod
    def _checked(cls, mean: Any, std: Any) -> "Normalization":
        m = tuple(float(v) for v in np.atleast_1d(np.asarray(mean, dtype=np.float64)))
        s = tuple(float(v) for v in np.atleast_1d(np.asarray(std, dtype=np.float64)))
        if not m or len(m) != len(s) and 1 not in (len(m), len(s)):
            raise ConfigurationError(f"mean and std need one value per channel (or one for all), got "
                                     f"mean={list(m)}, std={list(s)}")
        if not (np.all(np.isfinite(m)) and np.all(np.isfinite(s)) and min(s) > 0):
            raise ConfigurationError(f"std must be > 0 and mean, std finite, got mean={list(m)}, std={list(s)}")
        named = [k for k, (nm, ns) in NORMALIZATIONS.items() if (nm, ns) == (m, s)]
        return cls(m, s, named[0] if named else "custom")

    def per_channel(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """``mean, std`` as float32 arrays ``(channels,)``."""
        return _per_channel(self.mean, channels, "mean"), _per_channel(self.std, channels, "std")

    def describe(self) -> str:
        values = f"mean={list(self.mean)}, std={list(self.std)}"
        return values if self.name == "custom" else f"{self.name} ({values})"


class ImageSet:
    """Base of image sources: ``len``, slicing to ``(k, C, H, W)`` float32, labels, class names."""

    labels: np.ndarray
    class_names: list[str]

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self, index: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, key: slice | int | Sequence[int]) -> np.ndarray:
        index = np.arange(len(self))[key]
        if np.ndim(index) == 0:
            return self._read(np.asarray([index]))[0]
        return self._read(np.asarray(index))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self[0:1].shape[1:])

    def subset(self, index: Sequence[int] | np.ndarray) -> "ArrayImages":
        """The images at ``index``, read into memory."""
        index = np.asarray(index, dtype=np.int64)
        return ArrayImages(self[index], self.labels[index], self.class_names)


class ArrayImages(ImageSet):
    """Images held in memory: ``x (n, C, H, W)`` or ``(n, H, W)`` (one channel added)."""

    def __init__(self, x: Any, labels: Any = None, class_names: Sequence[str] | None = None) -> None:
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or min(x.shape) < 1:
            raise ShapeError(f"images must be an array (n, C, H, W) or (n, H, W) with n >= 1, got "
                             f"shape {x.shape}")
        if not np.isfinite(x).all():
            raise NonFiniteError("the images hold NaN or Inf")
        self.x = x
        self.labels, self.class_names = _labels(labels, len(x), class_names)

    def __len__(self) -> int:
        return len(self.x)

    def _read(self, index: np.ndarray) -> np.ndarray:
        return self.x[index]


class FolderImages(ImageSet):
    """``root/<class_name>/*.jpg`` read lazily with Pillow (see module doc).

    Parameters
    ----------
    root : folder with one subfolder per class.
    resize : shorter side after resizing (None: no resize).
    crop : side of the centre crop (None: no crop; then all images must share a size).
    mean, std : per-channel normalisation (length ``channels``); ignored when
        ``normalization`` is given.
    channels : 3 (RGB) or 1 (grey).
    max_per_class : keep only the first files (sorted) of each class.
    normalization : a :class:`Normalization` or anything :meth:`Normalization.from_spec`
        takes (e.g. the model's, ``model.normalization``).
    """

    def __init__(self, root: str | Path, resize: int | None = 256, crop: int | None = 224,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 channels: int = 3, max_per_class: int | None = None,
                 normalization: Any = None) -> None:
        self.root = user_path(root, "image folder")
        if not self.root.is_dir():
            raise MissingDataError(f"no image folder at {self.root}")
        resize = None if resize is None else as_int(resize, "resize", low=1)
        crop = None if crop is None else as_int(crop, "crop", low=1)
        max_per_class = None if max_per_class is None else as_int(max_per_class, "max_per_class", low=1)
        if channels not in (1, 3):
            raise ConfigurationError(f"channels must be 1 or 3, got {channels}")
        norm = Normalization.from_spec(normalization if normalization is not None else (mean, std))
        self.normalization = norm
        self.mean, self.std = norm.per_channel(channels)
        self.resize, self.crop, self.channels = resize, crop, channels
        self.class_names = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        files, labels = [], []
        for k, name in enumerate(self.class_names):
            found = sorted(p for p in (self.root / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            found = found[:max_per_class] if max_per_class else found
            files += found
            labels += [k] * len(found)
        if not files:
            raise MissingDataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in class folders under "
                                   f"{self.root}; expected root/<class_name>/<image>.jpg")
        self.files = files
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, index: np.ndarray) -> np.ndarray:
        arrays = [self._load(self.files[int(i)]) for i in index]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ShapeError(f"images of different sizes {sorted(shapes)}: give crop= to centre-crop "
                             f"them to one size")
        return np.stack(arrays) if arrays else np.zeros((0, self.channels, 1, 1), np.float32)

    def _load(self, path: Path) -> np.ndarray:
        """One image as ``(C, H, W)`` float32, resized, cropped and normalised."""
        from PIL import Image

        try:
            with Image.open(path) as im:
                return preprocess_image(im, self.resize, self.crop, self.normalization, self.channels)
        except Image.DecompressionBombError as err:
            raise ConfigurationError(f"image {path} is too large to decode safely ({_first_line(err)}); "
                                     f"downscale it first") from None
        except (OSError, ValueError, SyntaxError, EOFError) as err:
            if isinstance(err, RetcodecError):
                raise
            raise MissingDataError(f"cannot read image {path}: {_first_line(err)}") from None


def _npz_images(path: Path, labels: Any, class_names: Any) -> "ArrayImages":
    """Images from a ``.npz`` of plain arrays (object arrays, i.e. pickles, are refused)."""
    import zipfile
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files:
                raise ShapeError(f"{path} must hold an array 'x' (n, C, H, W) and optionally 'y'")
            names = z["class_names"].tolist() if "class_names" in z.files else class_names
            return ArrayImages(z["x"], z["y"] if "y" in z.files else labels, names)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        if isinstance(err, RetcodecError):
            raise
        raise ConfigurationError(f"{path} is not a .npz of plain numeric arrays ({_first_line(err)}); "
                                 f"object arrays (pickles) are never loaded. Save x and y with "
                                 f"numpy.savez") from None


def _first_line(err: Exception) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:200]


#: PIL modes of more than 8 bits per sample, and the full scale of each
_DEEP_MODES = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0}


def _to_unit_range(image: Any) -> Any:
    """A 16-bit, 32-bit integer or float PIL image as a float ("F") image scaled to [0, 1];
    other modes unchanged (their 8-bit conversion is exact)."""
    from PIL import Image

    if image.mode not in _DEEP_MODES and image.mode not in ("I", "F"):
        return image
    arr = np.asarray(image, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ShapeError("the image holds NaN or Inf pixels")
    top = float(arr.max()) if arr.size else 0.0
    if image.mode in _DEEP_MODES or (image.mode == "I" and 255 < top <= 65535):
        scale = 65535.0
    elif image.mode == "F" and top <= 1.0 and float(arr.min()) >= 0.0:
        scale = 1.0
    elif top <= 255 and float(arr.min()) >= 0:
        scale = 255.0
    else:
        raise ShapeError(f"an image of mode {image.mode} holds values {arr.min():g}..{top:g}, outside 0..65535; "
                         f"save it as 8- or 16-bit")
    return Image.fromarray((arr / scale).astype(np.float32), mode="F")


def preprocess_image(image: Any, resize: int | None = 256, crop: int | None = 224,
                     normalization: Any = DEFAULT_NORMALIZATION, channels: int = 3) -> np.ndarray:
    """One image as the network sees it: ``(C, H, W)`` float32.

    ``image``: a PIL image or a uint8 array ``(H, W)`` / ``(H, W, 3)``. Resized
    (bilinear, shorter side to ``resize`` pixels), centre-cropped to ``crop`` x
    ``crop``, scaled to [0, 1] and normalised (:class:`Normalization`).
    """
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ShapeError(f"an image array must be uint8 (H, W) or (H, W, 3), got {image.dtype} "
                             f"{image.shape}")
        image = Image.fromarray(image)
    if channels not in (1, 3):
        raise ConfigurationError(f"channels must be 1 or 3, got {channels}")
    deep = _to_unit_range(image)
    if deep.mode == "F":                  # 16-bit or float: scaled by its own range, never clipped at 255
        im = _centre_crop(_resize_shorter(deep, resize), crop)
        arr = np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)[None]
        arr = np.repeat(arr, channels, axis=0)
    else:
        im = image.convert("RGB" if channels == 3 else "L")
        im = _centre_crop(_resize_shorter(im, resize), crop)
        arr = np.asarray(im, dtype=np.float32) / 255.0
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    mean, std = Normalization.from_spec(normalization).per_channel(channels)
    return ((arr - mean[:, None, None]) / std[:, None, None]).astype(np.float32)


def _resize_shorter(im: Any, size: int | None) -> Any:
    if size is None:
        return im
    w, h = im.size
    scale = size / min(w, h)
    from PIL import Image
    return im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)


def _centre_crop(im: Any, size: int | None) -> Any:
    if size is None:
        return im
    w, h = im.size
    if size > min(w, h):
        raise ShapeError(f"crop {size} is larger than the (resized) image {w}x{h}; use a smaller crop "
                         f"or a larger resize")
    left, top = (w - size) // 2, (h - size) // 2
    return im.crop((left, top, left + size, top + size))


def _per_channel(values: Sequence[float] | float, channels: int, what: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values, dtype=np.float32))
    if arr.size == 1:
        arr = np.repeat(arr, channels)
    if arr.shape != (channels,):
        raise ConfigurationError(f"{what} needs {channels} values (one per channel), got {arr.tolist()}")
    return arr


def _labels(labels: Any, n: int, class_names: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    """Integer labels ``(n,)`` (-1: unknown) and class names."""
    if labels is None:
        y = np.full(n, -1, dtype=np.int64)
    else:
        if hasattr(labels, "detach"):
            labels = labels.detach().cpu().numpy()
        y = np.asarray(labels)
        if y.shape != (n,):
            raise ShapeError(f"labels must have shape ({n},), one per image, got {y.shape}")
        if y.dtype.kind not in "iu":
            if y.dtype.kind == "f" and np.all(y == np.round(y)):
                y = y.astype(np.int64)
            else:
                raise ConfigurationError(f"labels must be integer class indices, got dtype {y.dtype}")
        y = y.astype(np.int64)
        if (y < -1).any():
            raise ConfigurationError("labels must be >= 0 (or -1 for unknown)")
    n_classes = int(y.max()) + 1 if (y >= 0).any() else 0
    if class_names is None:
        names = [str(k) for k in range(n_classes)]
    else:
        names = [str(c) for c in class_names]
        if len(names) < n_classes:
            raise ConfigurationError(f"{len(names)} class names for labels up to {n_classes - 1}")
    return y, names


def from_loader(loader: Iterable[Any], max_images: int | None = None,
                class_names: Sequence[str] | None = None) -> ArrayImages:
    """Read ``(images, labels)`` batches of a DataLoader (or any iterable) into memory.

    Batches may be tensors of images alone or ``(images, labels, ...)`` tuples.
    """
    xs, ys = [], []
    count = 0
    for batch in loader:
        x, y = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) and len(batch) > 1 else (batch, None)
        x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
        xs.append(x)
        if y is not None:
            ys.append(y.detach().cpu().numpy() if hasattr(y, "detach") else np.asarray(y))
        count += len(x)
        if max_images is not None and count >= max_images:
            break
    if not xs:
        raise ShapeError("the loader gave no images")
    if ys and len(ys) != len(xs):
        raise ShapeError("some batches of the loader have labels and some do not")
    x = np.concatenate(xs)[:max_images]
    y = np.concatenate(ys)[:max_images] if ys else None
    if class_names is None:
        class_names = getattr(getattr(loader, "dataset", None), "classes", None)
    return ArrayImages(x, y, class_names)


def as_image_set(images: Any, labels: Any = None, class_names: Sequence[str] | None = None,
                 **folder_options: Any) -> ImageSet:
    """An :class:`ImageSet` from an ImageSet, an array/tensor, a folder path, or a DataLoader.

    A ``.npz`` file is read as arrays ``x`` (images) and optionally ``y`` (labels)
    and ``class_names``. ``folder_options`` go to :class:`FolderImages`.
    """
    if isinstance(images, ImageSet):
        return images
    if isinstance(images, (str, Path)):
        path = Path(images)
        if path.is_dir():
            return FolderImages(path, **folder_options)
        if path.suffix == ".npz" and path.is_file():
            return _npz_images(path, labels, class_names)
        raise MissingDataError(f"no image folder or .npz file at {path}")
    if isinstance(images, np.ndarray) or hasattr(images, "detach"):
        return ArrayImages(images, labels, class_names)
    if hasattr(images, "__iter__"):
        return from_loader(images, class_names=class_names)
    raise ConfigurationError(f"images must be an array, a tensor, a folder, a .npz file or a DataLoader, "
                             f"got {type(images).__name__}")
