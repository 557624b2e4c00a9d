"""Images of every bit depth and mode decoded as what they mean (issue 23): PIL's own convert("RGB") cached a 16-bit
PNG nearly all white and a float TIFF all black. What has no such reading, and a decompression bomb, is one line."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from space.errors import ConvspaceError
from trainers.cache import open_rgb, to_rgb
from trainers.data import image_datasets, load_data


def _grey(image: Image.Image) -> list[int]:
    """The first row of an RGB image as grey values, checking the three channels agree."""
    rgb = np.asarray(image)
    assert image.mode == "RGB" and (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    return rgb[0, :, 0].tolist()


@pytest.mark.parametrize("dtype, suffix", [("<u2", "png"), (">u2", "tif"), ("<u2", "tif")])
def test_16_bit_grey_is_scaled_by_255_over_65535(tmp_path, dtype, suffix):
    Image.fromarray(np.array([[0, 257, 25700, 32896, 65535]], dtype=dtype)).save(tmp_path / f"g.{suffix}")
    with Image.open(tmp_path / f"g.{suffix}") as image:
        assert image.mode.startswith("I;16")  # what Pillow opens a 16-bit file as
        assert _grey(to_rgb(image)) == [0, 1, 100, 128, 255]  # PIL's convert: [0, 255, 255, 255, 255]


def test_32_bit_integer_grey_within_16_bits_is_scaled_and_beyond_them_refused():
    assert _grey(to_rgb(Image.fromarray(np.array([[0, 25700, 65535]], dtype=np.int32)))) == [0, 100, 255]
    with pytest.raises(ValueError, match=r"^32-bit integer pixels from -5 to 70000 have no known range \(16-bit expected\)$"):
        to_rgb(Image.fromarray(np.array([[-5, 70000]], dtype=np.int32)))


def test_float_tiff_in_0_1_is_scaled_by_255_other_ranges_stretched_and_nan_refused(tmp_path):
    Image.fromarray(np.array([[0, 0.2, 0.5, 1.0]], dtype=np.float32)).save(tmp_path / "unit.tif")
    with Image.open(tmp_path / "unit.tif") as image:
        assert image.mode == "F" and _grey(to_rgb(image)) == [0, 51, 128, 255]  # PIL's convert: [0, 0, 0, 1]
    assert _grey(to_rgb(Image.fromarray(np.array([[-1, 0, 3]], dtype=np.float32)))) == [0, 64, 255]  # min..max
    assert _grey(to_rgb(Image.fromarray(np.array([[7, 7]], dtype=np.float32)))) == [255, 255]  # flat: clipped to [0, 1]
    with pytest.raises(ValueError, match="^float pixels include NaN or infinity$"):
        to_rgb(Image.fromarray(np.array([[0, np.nan]], dtype=np.float32)))


def test_palette_cmyk_and_alpha_are_converted_as_a_viewer_shows_them(tmp_path):
    palette = Image.new("P", (3, 1))
    palette.putpalette([0, 0, 0, 200, 30, 30, 30, 200, 30] + [0] * 759)
    palette.putdata([1, 2, 0])
    palette.save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as image:
        assert image.mode == "P" and np.asarray(to_rgb(image))[0].tolist() == [[200, 30, 30], [30, 200, 30], [0, 0, 0]]
    palette.save(tmp_path / "pt.png", transparency=0)  # the black entry transparent: white, as a viewer shows it
    with Image.open(tmp_path / "pt.png") as image:
        assert np.asarray(to_rgb(image))[0].tolist() == [[200, 30, 30], [30, 200, 30], [255, 255, 255]]
    Image.new("CMYK", (1, 1), (0, 255, 0, 0)).save(tmp_path / "c.tif")
    with Image.open(tmp_path / "c.tif") as image:
        assert image.mode == "CMYK" and to_rgb(image).getpixel((0, 0)) == (255, 0, 255)  # magenta ink on white
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(10, 20, 30, 255), (255, 0, 0, 128), (0, 0, 0, 0)])
    assert np.asarray(to_rgb(rgba))[0].tolist() == [[10, 20, 30], [255, 127, 127], [255, 255, 255]]
    la = Image.new("LA", (2, 1))
    la.putdata([(0, 255), (0, 128)])  # a black drawing on a transparent ground stays visible (dropping alpha: all black)
    assert _grey(to_rgb(la)) == [0, 127]
    with pytest.raises(ValueError, match=r"^images of mode 'La' are not supported: save it as RGB$"):
        to_rgb(Image.new("La", (1, 1)))


def _tree(root, images: dict[str, Image.Image]):
    """root/{train,val}/<class>/0.<ext>: one image per class and split."""
    for split in ("train", "val"):
        for name, image in images.items():
            (root / split / name.split(".")[0]).mkdir(parents=True, exist_ok=True)
            image.save(root / split / name.split(".")[0] / f"0.{name.split('.')[1]}")
    return root


def test_an_image_folder_of_16_bit_pngs_and_float_tiffs_is_cached_and_loaded_as_they_mean(tmp_path):
    root = _tree(tmp_path / "imgs", {"deep.png": Image.fromarray(np.full((16, 20), 25700, dtype=np.uint16)),
                                      "float.tif": Image.fromarray(np.full((16, 20), 0.25, dtype=np.float32))})
    cached = load_data(str(root), 32, cache_dir=str(tmp_path / "cache"))
    images, labels = cached.train.tensors
    assert labels.tolist() == [0, 1] and images[0].unique().tolist() == [100] and images[1].unique().tolist() == [64]
    full = image_datasets(str(root), 0, None, None, None)  # full training's loader: the same conversion
    assert full.train[0][0].getpixel((3, 3)) == (100, 100, 100) and full.val[1][0].getpixel((3, 3)) == (64, 64, 64)


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG of a few bytes whose header declares width x height pixels: decoding it would take width * height bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side, what", [(20_000, "DecompressionBombError: 4e8 pixels"), (10_000, "DecompressionBombWarning: 1e8 pixels")])
def test_a_decompression_bomb_is_refused_in_one_line_naming_it(tmp_path, side, what):
    root = _tree(tmp_path / "imgs", {"cat.png": Image.new("RGB", (8, 8)), "dog.png": Image.new("RGB", (8, 8))})
    (root / "train" / "dog" / "0.png").write_bytes(_bomb_png(side, side))
    message = rf"^data: refused {root}/train/dog/0\.png: Image size \({side * side} pixels\) exceeds limit of \d+ pixels, could be decompression bomb"
    with pytest.raises(ConvspaceError, match=message) as refused:
        load_data(str(root), 32, cache_dir=str(tmp_path / "cache"))
    assert "\n" not in str(refused.value) and not list((tmp_path / "cache").iterdir())  # no cache, no .building-* folder
    with pytest.raises(ConvspaceError, match=message):
        open_rgb(str(root / "train" / "dog" / "0.png"))  # full training's loader


def test_a_bomb_met_by_a_data_loader_worker_in_full_training_is_still_one_line(tmp_path):
    from torch.utils.data import DataLoader

    from trainers.full import from_workers

    root = _tree(tmp_path / "imgs", {"cat.png": Image.new("RGB", (8, 8)), "dog.png": Image.new("RGB", (8, 8))})
    (root / "train" / "dog" / "0.png").write_bytes(_bomb_png(20_000, 20_000))
    data = image_datasets(str(root), 0, None, np.asarray, np.asarray)
    with pytest.raises(ConvspaceError) as refused:  # torch raises it again with the worker's traceback in the message
        list(from_workers(DataLoader(data.train, batch_size=2, num_workers=1)))
    assert str(refused.value).startswith(f"data: refused {root}/train/dog/0.png: Image size (400000000 pixels)") and "\n" not in str(refused.value)
