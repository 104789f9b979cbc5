"""Datasets for the training scripts, through Hugging Face ``datasets``, validated before training.

Two sources per task: a local folder (ImageFolder for classification, the CamVid list layout
for segmentation) and a Hub dataset id (or a local dataset directory ``load_dataset`` can
read). Every problem we can detect up front -- a missing split, an empty class, a list line
pointing nowhere, a label id outside the classes -- raises :class:`InputError` with the path
and the fix, before a model is built.

Reproducible order and augmentation: :class:`ResumableSampler` yields *keys*
``epoch * n + index`` and :class:`KeyedDataset` seeds the random modules from
``(seed, epoch, index)`` around each sample's transform. A sample therefore gets the same
augmentation whatever the worker count, the prefetching, or where a run was resumed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import IterableDataset as TorchIterableDataset
from torch.utils.data import Sampler

from .errors import InputError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ClassificationData",
    "KeyedDataset",
    "ResumableSampler",
    "SegmentationData",
    "StreamingDataset",
    "check_segmentation_labels",
    "load_hub_classification",
    "load_hub_segmentation",
    "load_image_folder",
    "load_segmentation_folder",
    "sample_seed",
    "seeded_rng",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif")

# Hub segmentation sets whose conventions we know: ADE20K's id 0 is "other" (ignored), 1..150 the classes.
SEGMENTATION_PRESETS: dict[str, dict[str, Any]] = {
    "scene_parse_150": dict(num_classes=150, reduce_labels=True, ignore_index=255,
                            image_column="image", label_column="annotation", val_split="validation"),
}


# ---------------------------------------------------------------------------------------------------------------
# Containers


@dataclass
class ClassificationData:
    """Train/val splits of an image classification set and what the model needs to know about them."""

    train: Any  # datasets.Dataset or datasets.IterableDataset
    val: Any | None
    classes: list[str]
    image_column: str = "image"
    label_column: str = "label"
    streaming: bool = False
    num_train: int | None = None  # known size of a streamed train split (None: unknown)
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass
class SegmentationData:
    """Train/val splits of a semantic segmentation set; labels are single-channel class-id maps."""

    train: Any
    val: Any
    classes: list[str]
    ignore_index: int
    image_column: str = "image"
    label_column: str = "label"
    reduce_labels: bool = False
    source: str = ""
    label_counts: dict[str, dict[int, int]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def label_lut(self) -> np.ndarray:
        """uint8 id -> training id (``ignore_index`` for void), as a 256-entry lookup table."""
        lut = np.arange(256, dtype=np.int64)
        if self.reduce_labels:  # ADE20K convention: 0 = "other" -> ignored, 1..K -> 0..K-1
            lut = lut - 1
            lut[0] = self.ignore_index
        return lut


# ---------------------------------------------------------------------------------------------------------------
# Local folders


def _require_dir(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{what} '{path}' does not exist")
    if not path.is_dir():
        raise InputError(f"{what} '{path}' is not a directory")
    return path


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _scan_split(root: Path, split: str) -> dict[str, list[Path]]:
    split_dir = root / split
    if not split_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise InputError(
            f"ImageFolder '{root}' has no '{split}/' directory (found: {found or 'nothing'}); expected "
            f"{root}/train/<class>/<image> and {root}/val/<class>/<image>"
        )
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise InputError(f"ImageFolder split '{split_dir}' has no class directories; "
                         f"expected {split_dir}/<class>/<image>")
    out = {c: _images_in(split_dir / c) for c in classes}
    empty = [c for c, files in out.items() if not files]
    if empty:
        raise InputError(
            f"ImageFolder split '{split_dir}': class directories without images ({', '.join(empty)}); "
            f"image extensions read: {', '.join(IMAGE_EXTENSIONS)}"
        )
    return out


def _image_dataset(files: Sequence[str], labels: Sequence[int], classes: Sequence[str]):
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(classes))})
    return datasets.Dataset.from_dict({"image": list(files), "label": list(labels)}, features=features)


def load_image_folder(data_dir: str | Path, *, train_split: str = "train", val_split: str = "val",
                      num_classes: int | None = None) -> ClassificationData:
    """A local ImageFolder (``train/<class>/*.jpg``, ``val/<class>/*.jpg``) as ``datasets`` splits.

    Class ids follow sorted train class names (torchvision/timm order). A val class absent
    from train is an error: its images would have no label id in the model's classes.
    """
    root = _require_dir(data_dir, "--data-dir")
    train = _scan_split(root, train_split)
    classes = list(train)
    val = _scan_split(root, val_split) if (root / val_split).exists() else None
    if val is None:
        raise InputError(f"ImageFolder '{root}' has no '{val_split}/' directory; top-1/top-5 evaluation needs one")
    unknown = sorted(set(val) - set(train))
    if unknown:
        raise InputError(
            f"ImageFolder '{root}': val classes {unknown} do not exist in '{train_split}/' (train classes: {classes}); "
            "their images would get a label id outside the model's classes"
        )
    if num_classes is not None and num_classes != len(classes):
        raise InputError(f"--num-classes {num_classes} but '{root / train_split}' has {len(classes)} classes")
    index = {c: i for i, c in enumerate(classes)}

    def build(split: dict[str, list[Path]]):
        files = [str(f) for c in split for f in split[c]]
        labels = [index[c] for c in split for _ in split[c]]
        return _image_dataset(files, labels, classes)

    train_ds = build(train)
    return ClassificationData(train_ds, build(val), classes, num_train=len(train_ds), source=str(root))


def _read_list(root: Path, list_name: str) -> list[tuple[Path, Path]]:
    list_path = root / list_name
    if not list_path.is_file():
        raise InputError(
            f"segmentation folder '{root}' has no list file '{list_name}'; expected the CamVid layout: "
            f"'{list_name}' with one 'image_path label_path' pair per line, relative to the folder"
        )
    pairs = []
    missing = []
    for lineno, line in enumerate(list_path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise InputError(
                f"{list_path}:{lineno}: expected 'image_path label_path', got {line.strip()!r} ({len(parts)} fields)"
            )
        image, label = (root / parts[0], root / parts[1])
        for p in (image, label):
            if not p.is_file():
                missing.append(f"{list_path.name}:{lineno}: {p}")
        pairs.append((image, label))
    if missing:
        shown = "\n  ".join(missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InputError(f"segmentation list '{list_path}' names {len(missing)} missing files:\n  {shown}{more}")
    if not pairs:
        raise InputError(f"segmentation list '{list_path}' is empty")
    return pairs


def _class_names(root: Path, num_classes: int | None) -> tuple[list[str] | None, int | None]:
    """Class names and void id from ``class_stats.json`` or ``classes.txt`` when the folder has them."""
    stats = root / "class_stats.json"
    if stats.is_file():
        try:
            meta = json.loads(stats.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"'{stats}' is not valid JSON: {err}") from None
        names = meta.get("classes")
        if isinstance(names, list) and names:
            return [str(n) for n in names], meta.get("void_id")
    txt = root / "classes.txt"
    if txt.is_file():
        names = [line.strip() for line in txt.read_text().splitlines() if line.strip()]
        if names:
            return names, None
    return None, None


def check_segmentation_labels(label_images: Any, num_classes: int, ignore_index: int, *,
                              lut: np.ndarray | None = None, names: Sequence[str] | None = None,
                              what: str = "labels") -> dict[int, int]:
    """Pixel count per id over ``label_images`` (PIL images or paths); out-of-range ids raise InputError.

    A label map must be single channel (ids, not a colour palette rendering), and every id
    must be a class (``0..num_classes-1``) or ``ignore_index``.
    """
    from PIL import Image

    counts = np.zeros(256, dtype=np.int64)
    for i, item in enumerate(label_images):
        img = Image.open(item) if isinstance(item, (str, Path)) else item
        name = names[i] if names is not None else (str(item) if isinstance(item, (str, Path)) else f"{what}[{i}]")
        if img.mode not in ("L", "P", "I", "I;16", "1"):
            raise InputError(
                f"{name}: label image mode {img.mode!r}; labels must be single-channel maps of class ids "
                "(8-bit PNG), not colour-coded images"
            )
        arr = np.asarray(img)
        if arr.ndim != 2:
            raise InputError(f"{name}: label has shape {arr.shape}; expected a 2-D map of class ids")
        if arr.max(initial=0) > 255 or arr.min(initial=0) < 0:
            raise InputError(f"{name}: label ids must lie in 0..255, got {arr.min()}..{arr.max()}")
        ids = np.bincount(arr.astype(np.int64).ravel(), minlength=256)
        counts += ids
        present = np.nonzero(ids)[0]
        mapped = present if lut is None else lut[present]
        bad = [int(p) for p, m in zip(present, mapped, strict=True) if not (0 <= m < num_classes or m == ignore_index)]
        if bad:
            raise InputError(
                f"{name}: label ids {bad} are outside the {num_classes} classes (0..{num_classes - 1}) and are not "
                f"the ignore index {ignore_index}; fix the labels or pass --num-classes / --ignore-index"
            )
    return {int(i): int(c) for i, c in enumerate(counts) if c}


def load_segmentation_folder(data_dir: str | Path, *, num_classes: int | None = None, ignore_index: int | None = None,
                             train_list: str = "train.txt", val_list: str = "val.txt",
                             check_labels: bool = True) -> SegmentationData:
    """A CamVid-layout folder: list files of ``image label`` pairs, 8-bit PNG class-id labels.

    Class names come from ``class_stats.json`` (``classes``, ``void_id``) or ``classes.txt``
    when present, else from ``num_classes``. The ignore index defaults to the void id, else 255.
    All label maps are scanned once (a few seconds for thousands of small PNGs): an id
    outside the classes is reported with its file before training starts.
    """
    root = _require_dir(data_dir, "--data-dir")
    train_pairs = _read_list(root, train_list)
    val_pairs = _read_list(root, val_list)
    names, void_id = _class_names(root, num_classes)
    if names is None:
        if num_classes is None:
            raise InputError(f"'{root}' has no class_stats.json or classes.txt: pass --num-classes")
        names = [f"class_{i}" for i in range(num_classes)]
    elif num_classes is not None and num_classes != len(names):
        raise InputError(f"--num-classes {num_classes} but '{root}' names {len(names)} classes")
    if ignore_index is None:
        ignore_index = int(void_id) if void_id is not None else 255
    if 0 <= ignore_index < len(names):
        raise InputError(f"ignore index {ignore_index} is one of the {len(names)} class ids; "
                         f"pick a value outside 0..{len(names) - 1}")
    counts = {}
    if check_labels:
        for split, pairs in (("train", train_pairs), ("val", val_pairs)):
            counts[split] = check_segmentation_labels([lab for _, lab in pairs], len(names), ignore_index)
    _check_sizes(train_pairs[:8] + val_pairs[:8])

    def build(pairs):
        import datasets

        features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
        columns = {"image": [str(i) for i, _ in pairs], "label": [str(lab) for _, lab in pairs]}
        return datasets.Dataset.from_dict(columns, features=features)

    return SegmentationData(build(train_pairs), build(val_pairs), names, ignore_index, source=str(root),
                            label_counts=counts)


def _check_sizes(pairs: Sequence[tuple[Path, Path]]) -> None:
    from PIL import Image, UnidentifiedImageError

    for image, label in pairs:
        try:
            with Image.open(image) as im, Image.open(label) as lab:
                if im.size != lab.size:
                    raise InputError(f"image '{image}' is {im.size[0]}x{im.size[1]} but its label '{label}' is "
                                     f"{lab.size[0]}x{lab.size[1]}")
        except UnidentifiedImageError as err:
            raise InputError(f"cannot read image: {err}") from None


# ---------------------------------------------------------------------------------------------------------------
# Hub datasets


def _load_dataset(name: str, *, config: str | None, split: str, streaming: bool, cache_dir: str | None):
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split, streaming=streaming, cache_dir=cache_dir)
    except ValueError as err:
        if "split" in str(err).lower() or "Unknown split" in str(err):
            raise InputError(f"dataset '{name}' has no split '{split}': {err}") from None
        raise InputError(f"cannot load dataset '{name}' (split '{split}'): {err}") from err
    except (FileNotFoundError, ConnectionError, OSError, datasets.exceptions.DatasetsError) as err:
        raise InputError(
            f"cannot load dataset '{name}' (split '{split}'): {type(err).__name__}: {err}. Offline? Gated (log in "
            "with `hf auth login` and accept the terms)? Or use --data-dir with a local folder"
        ) from err


def _pick_column(features: Mapping[str, Any], wanted: str | None, kinds: tuple[str, ...], names: tuple[str, ...],
                 what: str, dataset: str) -> str:
    cols = list(features)
    if wanted is not None:
        if wanted not in cols:
            raise InputError(f"dataset '{dataset}' has no column '{wanted}' (columns: {cols})")
        return wanted
    for col in cols:
        if type(features[col]).__name__ in kinds:
            return col
    for n in names:
        if n in cols:
            return n
    raise InputError(f"dataset '{dataset}': cannot tell which column holds the {what} (columns: {cols}); "
                     f"pass --{what}-column")


def _peek(ds: Any, n: int) -> list[dict]:
    out = []
    for i, sample in enumerate(ds):
        if i >= n:
            break
        out.append(sample)
    return out


def load_hub_classification(name: str, *, config: str | None = None, train_split: str = "train",
                            val_split: str | None = "validation", streaming: bool = False,
                            image_column: str | None = None, label_column: str | None = None,
                            num_classes: int | None = None, cache_dir: str | None = None,
                            check_samples: int = 256) -> ClassificationData:
    """A Hub image classification set (``imagenet-1k`` style: ``image`` + ``ClassLabel`` columns).

    Labels are checked against the classes: the whole label column when not streaming (an
    Arrow scan, no image decoding), the first ``check_samples`` samples when streaming.
    """
    train = _load_dataset(name, config=config, split=train_split, streaming=streaming, cache_dir=cache_dir)
    val = (_load_dataset(name, config=config, split=val_split, streaming=streaming, cache_dir=cache_dir)
           if val_split else None)
    features = train.features
    if features is None:  # a streamed set without metadata: read the schema from a sample
        first = _peek(train, 1)
        if not first:
            raise InputError(f"dataset '{name}' split '{train_split}' is empty")
        features = {k: type(v).__name__ for k, v in first[0].items()}
    image_column = _pick_column(features, image_column, ("Image",), ("image", "img", "jpg", "png"), "image", name)
    label_column = _pick_column(features, label_column, ("ClassLabel",), ("label", "labels", "cls", "class"),
                                "label", name)
    label_feature = features[label_column] if not isinstance(features[label_column], str) else None
    names = list(getattr(label_feature, "names", None) or [])
    if num_classes is not None and names and num_classes != len(names):
        raise InputError(f"--num-classes {num_classes} but dataset '{name}' defines {len(names)} classes")
    if not names:
        if num_classes is None:
            if streaming:
                raise InputError(f"dataset '{name}': label column '{label_column}' has no class names; "
                                 "pass --num-classes")
            num_classes = int(max(train.unique(label_column))) + 1
        names = [f"class_{i}" for i in range(num_classes)]
    for split_name, ds in ((train_split, train), (val_split, val)):
        if ds is None:
            continue
        if streaming:
            labels = [s[label_column] for s in _peek(ds, check_samples)]
        else:
            labels = ds.unique(label_column)
        bad = sorted({int(v) for v in labels if not 0 <= int(v) < len(names)})
        if bad:
            raise InputError(
                f"dataset '{name}' split '{split_name}': label ids {bad[:10]} are outside the {len(names)} classes "
                f"(0..{len(names) - 1}); an unlabelled split (label -1, e.g. a test split) cannot be used for training "
                "or evaluation"
            )
    num_train = None
    if streaming:
        info = getattr(train, "info", None)
        split_info = (info.splits or {}).get(train_split) if info is not None and info.splits else None
        num_train = getattr(split_info, "num_examples", None) or None
    else:
        num_train = len(train)
    return ClassificationData(train, val, names, image_column, label_column, streaming, num_train, source=name)


def load_hub_segmentation(name: str, *, config: str | None = None, train_split: str = "train",
                          val_split: str | None = None, image_column: str | None = None,
                          label_column: str | None = None, num_classes: int | None = None,
                          ignore_index: int | None = None, reduce_labels: bool | None = None,
                          cache_dir: str | None = None, check_samples: int = 64) -> SegmentationData:
    """A Hub segmentation set (ADE20K ``scene_parse_150`` style: ``image`` + ``annotation`` images).

    Known sets fill their conventions from :data:`SEGMENTATION_PRESETS` (ADE20K: 150 classes,
    id 0 ignored, ids shifted down by one). The first ``check_samples`` label maps of each
    split are checked against the classes before training.
    """
    preset = SEGMENTATION_PRESETS.get(name.rsplit("/", 1)[-1], {})
    num_classes = num_classes if num_classes is not None else preset.get("num_classes")
    if num_classes is None:
        raise InputError(f"dataset '{name}': pass --num-classes (no preset for this dataset)")
    reduce_labels = bool(preset.get("reduce_labels", False)) if reduce_labels is None else reduce_labels
    ignore_index = ignore_index if ignore_index is not None else preset.get("ignore_index", 255)
    val_split = val_split or preset.get("val_split", "validation")
    image_column = image_column or preset.get("image_column")
    label_column = label_column or preset.get("label_column")
    train = _load_dataset(name, config=config, split=train_split, streaming=False, cache_dir=cache_dir)
    val = _load_dataset(name, config=config, split=val_split, streaming=False, cache_dir=cache_dir)
    image_column = _pick_column(train.features, image_column, (), ("image", "pixel_values", "img"), "image", name)
    label_column = _pick_column(train.features, label_column, (),
                                ("annotation", "label", "semantic_segmentation", "mask", "segmentation"), "label", name)
    data = SegmentationData(train, val, [f"class_{i}" for i in range(num_classes)], int(ignore_index), image_column,
                            label_column, reduce_labels, source=name)
    for split_name, ds in ((train_split, train), (val_split, val)):
        n = min(check_samples, len(ds))
        labels = ds.select(range(n))[label_column]
        check_segmentation_labels(labels, num_classes, data.ignore_index, lut=data.label_lut(),
                                  names=[f"{name}[{split_name}][{i}]" for i in range(n)])
    return data


# ---------------------------------------------------------------------------------------------------------------
# Reproducible order and augmentation


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one sample of one epoch."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


@contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Seed ``random``, ``numpy`` and torch's CPU generator for a block, then restore their states.

    The training loop's own random stream (mixup, drop-path) is untouched, so loading a sample
    early (prefetch) or not at all (skipped on resume) changes nothing else.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed & 0xFFFFFFFF)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class ResumableSampler(Sampler[int]):
    """Shuffled order that depends only on ``(seed, epoch)``; yields keys ``epoch * n + index``.

    Accelerate shards it (``BatchSamplerShard``) and calls ``set_epoch``; resuming mid-epoch
    is ``accelerator.skip_first_batches`` over the same order.
    """

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True) -> None:
        if num_samples < 1:
            raise InputError("the training set is empty")
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=gen).tolist()
        else:
            order = range(self.num_samples)
        base = self.epoch * self.num_samples
        return iter([base + i for i in order])


class KeyedDataset(TorchDataset):
    """Applies ``transform(sample)`` under a per-(seed, epoch, index) seed; keys come from ResumableSampler.

    Plain indices (``key < len``) work too: that is epoch 0, as an evaluation loader uses it.
    ``vary_by_epoch=False`` gives every epoch epoch 0's augmentation (a truly fixed batch).
    """

    def __init__(self, data: Any, transform: Callable[[dict], Any], seed: int = 0, vary_by_epoch: bool = True) -> None:
        self.data = data
        self.transform = transform
        self.seed = seed
        self.vary_by_epoch = vary_by_epoch
        self.n = len(data)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: int) -> Any:
        epoch, index = divmod(int(key), self.n)
        epoch = epoch if self.vary_by_epoch else 0
        sample = self.data[index]
        with seeded_rng(sample_seed(self.seed, epoch, index)):
            return self.transform(sample)


class StreamingDataset(TorchIterableDataset):
    """A streamed ``datasets.IterableDataset`` with shuffling by ``(seed, epoch)`` and seeded transforms."""

    def __init__(self, data: Any, transform: Callable[[dict], Any], seed: int = 0, shuffle: bool = True,
                 buffer_size: int = 10_000) -> None:
        self.data = data
        self.transform = transform
        self.seed = seed
        self.shuffle = shuffle
        self.buffer_size = buffer_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[Any]:
        ds = self.data.shuffle(seed=self.seed, buffer_size=self.buffer_size) if self.shuffle else self.data
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(self.epoch)
        worker = torch.utils.data.get_worker_info()
        wid = 0 if worker is None else worker.id
        for i, sample in enumerate(ds):
            with seeded_rng(sample_seed(self.seed + 7919 * wid, self.epoch, i)):
                yield self.transform(sample)

