"""The shared decoder: every format and mode decodes to what a viewer shows, the same in every stage."""

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from synthetic.image_corpus import make_corpus, picture
from transfer.core.images import ImageError, check_image, load_image
from transfer.features.decode_pool import ImageDecoder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, make_corpus(folder)


def pillow_pixels(path, size=None):
    """What Pillow itself gives: first frame, EXIF orientation applied, RGB; resized bilinearly when asked."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
    return np.asarray(image if size is None else image.resize((size, size), Image.Resampling.BILINEAR))


def test_corpus_covers_every_format_the_decoder_claims(corpus):
    folder, samples = corpus
    formats = {Image.open(folder / sample.name).format for sample in samples}
    assert formats == {"BMP", "GIF", "JPEG", "MPO", "PNG", "TIFF", "WEBP"}
    modes = {Image.open(folder / sample.name).mode for sample in samples}
    assert {"1", "P", "L", "LA", "RGB", "RGBA", "CMYK", "I;16"} <= modes


def test_every_file_decodes_to_the_picture_written(corpus):
    folder, samples = corpus
    for sample in samples:
        pixels = load_image(folder / sample.name)
        assert pixels.dtype == np.uint8 and pixels.shape == sample.expected.shape, sample.name
        difference = np.abs(pixels.astype(int) - sample.expected.astype(int)).mean()
        assert difference <= sample.tolerance, f"{sample.name}: mean difference {difference:.2f}"
        np.testing.assert_array_equal(pixels, pillow_pixels(folder / sample.name), err_msg=sample.name)
        assert check_image(folder / sample.name) is None


def test_exif_orientation_is_applied_as_viewers_do(corpus):
    folder, _ = corpus
    stored = np.asarray(Image.open(folder / "exif_rotated.jpg").convert("RGB"))
    assert stored.shape[:2] == picture().shape[1::-1]  # the file holds the picture on its side
    assert load_image(folder / "exif_rotated.jpg").shape[:2] == picture().shape[:2]


def test_first_frame_of_animations_and_multi_picture_files(corpus):
    folder, _ = corpus
    for name in ("animated.gif", "animated.webp", "multi_picture.jpg"):
        assert getattr(Image.open(folder / name), "n_frames", 1) == 2
    # The second frames are the negative: a decoder that took them would be far off.
    assert np.abs(load_image(folder / "animated.webp").astype(int) - picture()).mean() == 0


def test_resizing_gives_the_model_input(corpus):
    folder, samples = corpus
    for sample in samples:
        resized = load_image(folder / sample.name, 24)
        assert resized.shape == (24, 24, 3) and resized.dtype == np.uint8
        np.testing.assert_array_equal(resized, pillow_pixels(folder / sample.name, 24), err_msg=sample.name)


def test_the_features_stage_batches_use_the_same_pixels(corpus):
    folder, samples = corpus
    paths = [str(folder / sample.name) for sample in samples]
    with ImageDecoder(32, batch_size=6, workers=2) as decoder:
        batches = [batch.copy() for batch in decoder.batches(paths)]  # each batch's buffer is reused later
        again = np.concatenate([batch.copy() for batch in decoder.batches(paths[::-1])])
    assert [len(batch) for batch in batches] == [6, 6, 6, len(paths) - 18]
    stacked = np.concatenate(batches)
    np.testing.assert_array_equal(again, stacked[::-1])  # a second pass through the same workers
    for row, path in enumerate(paths):
        np.testing.assert_array_equal(stacked[row], pillow_pixels(path, 32), err_msg=path)


def _truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture()).save(buffer, "JPEG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("truncated.jpg", _truncated_jpeg(), "not a readable image"),
        ("notes.jpg", b"just text\n", "not an image file"),
        ("empty.png", b"", "not an image file"),
        ("icon.ico", None, "ICO is not a supported format"),
    ],
)
def test_unusable_files_are_refused_with_a_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    if content is None:
        Image.fromarray(picture(16, 16)).save(path, "ICO")
    else:
        path.write_bytes(content)
    assert reason in check_image(path)
    with pytest.raises(ImageError, match=reason):
        load_image(path)


def test_a_folder_or_missing_file_is_refused(tmp_path):
    assert check_image(tmp_path) == "is a folder, not an image file"
    assert check_image(tmp_path / "missing.jpg") == "no such file"


def test_a_file_failing_at_features_time_is_named_with_what_to_do(tmp_path):
    from transfer.core.errors import StageError

    bad = tmp_path / "cls" / "changed.jpg"
    bad.parent.mkdir()
    bad.write_bytes(_truncated_jpeg())
    good = []
    for i in range(3):
        good.append(str(tmp_path / "cls" / f"good_{i}.png"))
        Image.fromarray(picture()).save(good[-1])
    expected = r"cls/changed.jpg: not a readable image.*dvc checkout data/images"
    with pytest.raises(StageError, match=expected), ImageDecoder(32, batch_size=2, workers=2) as decoder:
        list(decoder.batches(good + [str(bad)]))


def test_the_extract_stage_keeps_every_file_the_decoder_reads(corpus, tmp_path):
    import tarfile

    from stages.extract import extract

    folder, samples = corpus
    archive = tmp_path / "corpus.tar"
    with tarfile.open(archive, "w") as tar:
        for label in ("first", "second"):
            for sample in samples:
                tar.add(folder / sample.name, f"photos/{label}/{sample.name}")
    report = extract(archive, tmp_path / "images", tmp_path / "data.json", exclude=())
    assert report["images_per_class"] == {"first": len(samples), "second": len(samples)}
    assert report["skipped_files"] == []


def test_the_decoder_fits_its_buffers_in_the_shared_memory_there_is(monkeypatch, corpus):
    from transfer.core.errors import StageError
    from transfer.features import decode_pool as decoder_module

    folder, samples = corpus
    batch_bytes = 4 * 32 * 32 * 3
    monkeypatch.setattr(decoder_module, "_shared_memory_free", lambda: 7 * batch_bytes)  # e.g. Docker's 64 MiB
    with ImageDecoder(32, batch_size=4, workers=8) as decoder:
        assert decoder.n_slots == 3  # not workers + 3
        paths = [str(folder / sample.name) for sample in samples]
        np.testing.assert_array_equal(
            np.concatenate([b.copy() for b in decoder.batches(paths)])[5], pillow_pixels(paths[5], 32)
        )
    monkeypatch.setattr(decoder_module, "_shared_memory_free", lambda: 2 * batch_bytes)
    with pytest.raises(StageError, match=r"shared memory \(/dev/shm\) has 0 MiB free.*features.batch_size"):
        ImageDecoder(32, batch_size=4, workers=2)
