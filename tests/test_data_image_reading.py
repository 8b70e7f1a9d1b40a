"""Reading images: PIL's process-wide flag is never written, EXIF orientation is applied."""

import io
import types

import numpy as np
import pytest
from PIL import Image, ImageFile

from ssmad.data import ImageReadError, read_image


class _RecordingModule(types.ModuleType):
    """A module class that records every attribute assignment (PIL.ImageFile during a test)."""

    assigned: list[str] = []

    def __setattr__(self, name, value):
        _RecordingModule.assigned.append(name)
        super().__setattr__(name, value)


def test_reading_never_writes_pils_global_truncation_flag(tmp_path, monkeypatch):
    good, truncated = tmp_path / "good.png", tmp_path / "truncated.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(good)
    truncated.write_bytes(good.read_bytes()[:900])
    monkeypatch.setattr(ImageFile, "__class__", _RecordingModule)
    _RecordingModule.assigned.clear()
    read_image(good)
    with pytest.raises(ImageReadError, match="truncated.png"):
        read_image(truncated)
    assert "LOAD_TRUNCATED_IMAGES" not in _RecordingModule.assigned


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    Image.fromarray(array).save(path, exif=exif.tobytes(), quality=95)
    upright = np.asarray(read_image(path))
    assert upright.shape == (40, 20, 3)
    assert upright[:10].mean() > 200 and upright[-10:].mean() < 50  # white on top after rotation


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_zero_byte_and_bomb_files_name_the_reason(tmp_path, monkeypatch):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.png.*0 bytes"):
        read_image(empty)
    big = tmp_path / "big.png"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, "PNG")
    big.write_bytes(buffer.getvalue())
    for limit in (1000, 3000):  # PIL refuses above twice its limit, ssmad above the limit itself
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with pytest.raises(ImageReadError, match="big.png.*decompression bomb"):
            read_image(big)
