import numpy as np
from PIL import Image

from resnets.data.image_file import collect_images, read_if_small, reduced_size, to_rgb
from resnets.data.io import open_image, read_rgb
from tests.synthetic import BAD_INPUTS, GOOD_INPUTS, fresh_python, make_hostile_inputs


def test_the_reader_and_the_prefetcher_import_without_torch():
    code = ("import sys\n"
            "import resnets.data.image_file, resnets.data.prefetch\n"
            "print('torch' in sys.modules)")
    assert fresh_python(code) == ["False"]


def test_small_files_read_as_open_image_reads_them_and_bad_ones_are_left(tmp_path):
    files = make_hostile_inputs(tmp_path)
    for case in GOOD_INPUTS:
        small = read_if_small(files[case], max_side=64)
        assert small is not None, case
        expected = np.asarray(to_rgb(open_image(files[case])))
        assert small.pixels.dtype == np.uint8 and np.array_equal(small.pixels, expected), case
    assert read_if_small(files["rotated"], 64).size == (48, 64)  # the header's, not upright
    assert read_if_small(files["rotated"], 64).jpeg and not read_if_small(files["cmyk"], 64).jpeg
    for case in BAD_INPUTS:
        assert read_if_small(files[case], max_side=64) is None, case
    assert read_if_small(files["rgba"], max_side=63) is None  # 64 px wide


def test_reduced_size_is_what_open_image_asks_the_jpeg_decoder_for(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (1000, 600), (10, 200, 10)).save(path)
    assert reduced_size((1000, 600), None) is None
    assert reduced_size((1000, 600), 100) is None       # 400 / 600 > 1/2: full size
    assert reduced_size((1000, 600), 32) == (213, 128)  # the decoder rounds up to 1/4
    assert tuple(read_rgb(path, min_side=32).shape) == (3, 150, 250)
    assert tuple(read_rgb(path, min_side=100).shape) == (3, 600, 1000)


def test_collect_images_walks_folders_and_keeps_files_as_given(tmp_path):
    files = make_hostile_inputs(tmp_path / "in")
    listed = collect_images([tmp_path / "in", files["empty"]])
    assert files["folder"] not in listed  # a folder named x.jpg is not walked into...
    assert collect_images([files["folder"]]) == [files["folder"]]  # ...but kept when given
    assert listed[-1] == files["empty"] and listed[:-1] == sorted(listed[:-1])
