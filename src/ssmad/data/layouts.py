"""Where the files are: one reader per dataset layout, as the datasets are distributed.

Every reader lists, for one class, its training normals and its test images as `Sample`
records (file paths and labels; nothing is decoded here). Layouts (docs/design.md, "Datasets"):

- mvtec / mpdd: `<class>/train/good/*`, `<class>/test/<good|defect>/*`,
  `<class>/ground_truth/<defect>/<stem>_mask.png`.
- btad: `<01|02|03>/train/ok/*`, `<class>/test/<ok|ko>/*` (.bmp or .png),
  `<class>/ground_truth/ko/<stem>.png` (also accepted: `<stem>_mask.*`).
- mvtec3d (RGB only): `<class>/train/good/rgb/*`, `<class>/test/<type>/rgb/*`,
  `<class>/test/<type>/gt/<stem>.png` (its `validation/` normals are not used).
- mvtec2 (MVTec AD 2): `<class>/train/good/*`, `<class>/validation/good/*`,
  `<class>/test_public/<good|bad>/*`, `<class>/test_public/ground_truth/bad/<stem>_mask.png`,
  and the unlabelled `<class>/test_private/*`, `<class>/test_private_mixed/*`
  (:func:`read_mvtec2_class` has every split and its assumptions; `read_class` gives train and
  test_public).
- visa: `split_csv/1cls.csv` (object, split, label, image, mask; paths relative to the root).
- folder (a user's own product): normal images directly in the class folder, or in
  `train/` (or `train/good/`); optional `test/good/` (or `test/ok/`) and any other
  `test/<defect>/` folders; masks under `ground_truth/` or `masks/`, matched to a test image
  `test/<defect>/<stem>.*` by its defect folder first (`<mask folder>/<defect>/<stem>[_mask].*`),
  else by file stem anywhere below the mask folders, but only when exactly one mask has that
  stem: two candidates are an error naming both (a wrong mask would silently corrupt the pixel
  metrics).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ssmad.data.image_io import is_image_file

DATASET_KINDS = ("mvtec", "mvtec2", "visa", "mpdd", "btad", "mvtec3d", "folder")
AUTO_KIND = "auto"  # detect the layout (``detect_kind``)
DATASET_CHOICES = (AUTO_KIND, *DATASET_KINDS)
NORMAL_FOLDER_NAMES = ("good", "ok", "normal")
MASK_FOLDER_NAMES = ("ground_truth", "masks")


@dataclass(frozen=True)
class Sample:
    """One image of a dataset: its file, mask file (None if normal or missing), label, class."""

    path: Path
    label: int
    class_name: str
    defect_type: str
    mask_path: Path | None = None


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name (empty if it does not exist)."""
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if is_image_file(path))


def _subfolders(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []


def _find_mask(folder: Path, stem: str) -> Path | None:
    """The mask for image `stem` in `folder`: `<stem>_mask.*` or `<stem>.*`, else None."""
    for candidate_stem in (f"{stem}_mask", stem):
        for path in list_images(folder):
            if path.stem == candidate_stem:
                return path
    return None


def _mask_index(folders: list[Path]) -> dict[str, list[Path]]:
    """Map of image stem -> every mask file with that stem below `folders` (recursively)."""
    index: dict[str, list[Path]] = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if is_image_file(path):
                stem = path.stem[: -len("_mask")] if path.stem.endswith("_mask") else path.stem
                index.setdefault(stem, []).append(path)
    return index


def _one_mask(image: Path, candidates: list[Path]) -> Path | None:
    """The only candidate mask of `image`, None without one; two or more are an error naming them."""
    if len(candidates) > 1:
        raise ValueError(
            f"ambiguous mask for test image {image}: both {candidates[0]} and {candidates[1]} match it; "
            "put each mask under <mask folder>/<defect>/ named like its image, or rename one"
        )
    return candidates[0] if candidates else None


def _folder_mask(image: Path, defect: str, mask_roots: list[Path], index: dict[str, list[Path]]) -> Path | None:
    """The mask of a folder-layout test image: in its defect's mask folder first, else by unique stem."""
    in_defect_folder = [mask for root in mask_roots if (mask := _find_mask(root / defect, image.stem))]
    if in_defect_folder:
        return _one_mask(image, in_defect_folder)
    return _one_mask(image, index.get(image.stem, []))


# ---------------------------------------------------------------- MVTec AD, MPDD, BTAD


def _mvtec_style_class(class_dir: Path, class_name: str, normal_name: str) -> tuple[list[Sample], list[Sample]]:
    """(train normals, test samples) of an MVTec-style class folder."""
    train_dir = class_dir / "train" / normal_name
    if not train_dir.is_dir():
        raise FileNotFoundError(f"missing training folder {train_dir} (expected {normal_name} images there)")
    train = [Sample(path, 0, class_name, normal_name) for path in list_images(train_dir)]
    test: list[Sample] = []
    for type_dir in _subfolders(class_dir / "test"):
        defect_type = type_dir.name
        for path in list_images(type_dir):
            if defect_type == normal_name:
                test.append(Sample(path, 0, class_name, defect_type))
            else:
                mask = _find_mask(class_dir / "ground_truth" / defect_type, path.stem)
                test.append(Sample(path, 1, class_name, defect_type, mask))
    return train, test


def _mvtec3d_class(class_dir: Path, class_name: str) -> tuple[list[Sample], list[Sample]]:
    """(train normals, test samples) of an MVTec 3D-AD class, RGB images only."""
    train_dir = class_dir / "train" / "good" / "rgb"
    if not train_dir.is_dir():
        raise FileNotFoundError(f"missing training folder {train_dir} (MVTec 3D-AD layout)")
    train = [Sample(path, 0, class_name, "good") for path in list_images(train_dir)]
    test: list[Sample] = []
    for type_dir in _subfolders(class_dir / "test"):
        for path in list_images(type_dir / "rgb"):
            if type_dir.name == "good":
                test.append(Sample(path, 0, class_name, "good"))
            else:
                mask = _find_mask(type_dir / "gt", path.stem)
                test.append(Sample(path, 1, class_name, type_dir.name, mask))
    return train, test


# ---------------------------------------------------------------- MVTec AD 2

MVTEC2_SPLITS = ("train", "validation", "test_public", "test_private", "test_private_mixed")
MVTEC2_UNLABELLED_SPLITS = ("test_private", "test_private_mixed")  # no labels, no masks: predict only
UNKNOWN_LABEL = -1  # the label of an image whose label is not published


@dataclass(frozen=True)
class Mvtec2Class:
    """Every split of one MVTec AD 2 class (Heckler-Kram et al., 2025), as `Sample` lists."""

    train: list[Sample]
    validation: list[Sample]
    test_public: list[Sample]
    test_private: list[Sample]
    test_private_mixed: list[Sample]

    def split(self, name: str) -> list[Sample]:
        """The samples of split `name` (one of MVTEC2_SPLITS)."""
        if name not in MVTEC2_SPLITS:
            raise ValueError(f"unknown MVTec AD 2 split {name!r}; use one of {', '.join(MVTEC2_SPLITS)}")
        return getattr(self, name)


def _is_mvtec2_class(folder: Path) -> bool:
    return (folder / "train" / "good").is_dir() and (folder / "validation" / "good").is_dir() \
        and (folder / "test_public").is_dir()


def read_mvtec2_class(class_dir: Path, class_name: str) -> Mvtec2Class:
    """Every split of an MVTec AD 2 class folder, read as distributed.

    Assumptions (the dataset's published description and its authors' public loading code; no copy
    of the dataset was at hand to check them):
    - train/good and validation/good hold normal images only (`NNN_<lighting>.png`, e.g.
      `000_regular.png`, `000_overexposed.png`, `000_shift_1.png`); validation is for
      calibration (thresholds), never for training;
    - test_public/good and test_public/bad hold the labelled test images; the mask of
      `test_public/bad/<stem>.png` is `test_public/ground_truth/bad/<stem>_mask.png`
      (0 normal, 255 anomalous); a missing mask leaves `mask_path` None (the dataset decides);
    - test_private and test_private_mixed hold images directly (no good/bad folders), without
      labels or masks: their samples have label UNKNOWN_LABEL and defect type "unknown";
    - images of one class share one size, which differs between classes (no resizing here).
    """
    if not (class_dir / "train" / "good").is_dir():
        raise FileNotFoundError(f"missing training folder {class_dir / 'train' / 'good'} (MVTec AD 2 layout)")

    def normals(split: str) -> list[Sample]:
        return [Sample(path, 0, class_name, "good") for path in list_images(class_dir / split / "good")]

    public = class_dir / "test_public"
    test_public = normals("test_public") + [
        Sample(path, 1, class_name, "bad", _find_mask(public / "ground_truth" / "bad", path.stem))
        for path in list_images(public / "bad")
    ]
    unlabelled = {
        split: [Sample(path, UNKNOWN_LABEL, class_name, "unknown") for path in list_images(class_dir / split)]
        for split in MVTEC2_UNLABELLED_SPLITS
    }
    return Mvtec2Class(normals("train"), normals("validation"), test_public, **unlabelled)


# ---------------------------------------------------------------- VisA


def _visa_rows(root: Path) -> list[dict[str, str]]:
    split_file = root / "split_csv" / "1cls.csv"
    if not split_file.is_file():
        raise FileNotFoundError(
            f"missing VisA split file {split_file}; VisA is read with the split_csv/1cls.csv "
            "file distributed with the dataset (columns object,split,label,image,mask)"
        )
    with split_file.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    required = {"object", "split", "label", "image", "mask"}
    if not rows or not required <= set(rows[0]):
        raise ValueError(f"{split_file} must have the columns {sorted(required)}")
    return rows


def _visa_class(root: Path, class_name: str) -> tuple[list[Sample], list[Sample]]:
    train: list[Sample] = []
    test: list[Sample] = []
    for row in _visa_rows(root):
        if row["object"] != class_name:
            continue
        anomalous = row["label"].strip().lower() == "anomaly"
        mask = root / row["mask"] if anomalous and row["mask"].strip() else None
        if mask is not None and not mask.is_file():
            mask = None
        sample = Sample(root / row["image"], int(anomalous), class_name,
                        "anomaly" if anomalous else "normal", mask)
        (train if row["split"].strip().lower() == "train" else test).append(sample)
    train = [sample for sample in train if sample.label == 0]
    return train, test


# ---------------------------------------------------------------- a user's own folders


def _folder_class(class_dir: Path, class_name: str) -> tuple[list[Sample], list[Sample]]:
    train_paths = (list_images(class_dir) or list_images(class_dir / "train")
                   or list_images(class_dir / "train" / "good"))
    train = [Sample(path, 0, class_name, "good") for path in train_paths]
    mask_roots = [class_dir / name for name in MASK_FOLDER_NAMES]
    masks = _mask_index(mask_roots)
    test: list[Sample] = []
    for type_dir in _subfolders(class_dir / "test"):
        normal = type_dir.name.lower() in NORMAL_FOLDER_NAMES
        for path in list_images(type_dir):
            if normal:
                test.append(Sample(path, 0, class_name, type_dir.name))
            else:
                mask = _folder_mask(path, type_dir.name, mask_roots, masks)
                test.append(Sample(path, 1, class_name, type_dir.name, mask))
    return train, test


def _is_folder_class(folder: Path) -> bool:
    """A folder holding one product: images directly, or a train/ folder with images."""
    return bool(list_images(folder) or list_images(folder / "train")
                or list_images(folder / "train" / "good"))


# ---------------------------------------------------------------- discovery


def _is_class_dir(kind: str, folder: Path) -> bool:
    if kind == "mvtec2":
        return _is_mvtec2_class(folder)
    if kind in ("mvtec", "mpdd"):
        return (folder / "train" / "good").is_dir()
    if kind == "btad":
        return (folder / "train" / "ok").is_dir()
    if kind == "mvtec3d":
        return (folder / "train" / "good" / "rgb").is_dir()
    return _is_folder_class(folder)


def detect_kind(root: Path) -> str:
    """Guess the layout of `root` (a dataset root or a single class folder)."""
    if (root / "split_csv" / "1cls.csv").is_file():
        return "visa"
    for folder in [root, *_subfolders(root)]:
        if _is_class_dir("mvtec3d", folder):
            return "mvtec3d"
        if _is_class_dir("btad", folder):
            return "btad"
        if _is_class_dir("mvtec2", folder):
            return "mvtec2"
        if _is_class_dir("mvtec", folder):
            return "mvtec"
    return "folder"


def resolve_classes(kind: str, root: Path) -> dict[str, Path]:
    """Available classes of a `kind` dataset at `root`: {class name: class folder}.

    `root` may be a dataset root or one class folder (then the single class is its name).
    For VisA every class maps to the root (the split file lists the files).
    """
    if kind == "visa":
        return {name: root for name in sorted({row["object"] for row in _visa_rows(root)})}
    if _is_class_dir(kind, root):
        return {root.name: root}
    return {folder.name: folder for folder in _subfolders(root) if _is_class_dir(kind, folder)}


def read_class(kind: str, class_dir: Path, class_name: str) -> tuple[list[Sample], list[Sample]]:
    """(training normals, test samples) of one class of a `kind` dataset (MVTec AD 2: train and
    test_public; :func:`read_mvtec2_class` has its other splits)."""
    if kind == "mvtec2":
        split = read_mvtec2_class(class_dir, class_name)
        return split.train, split.test_public
    if kind in ("mvtec", "mpdd"):
        return _mvtec_style_class(class_dir, class_name, "good")
    if kind == "btad":
        return _mvtec_style_class(class_dir, class_name, "ok")
    if kind == "mvtec3d":
        return _mvtec3d_class(class_dir, class_name)
    if kind == "visa":
        return _visa_class(class_dir, class_name)
    return _folder_class(class_dir, class_name)
