"""MOVi read without TensorFlow (`slotssm_hf.data.movi`) from a miniature MOVi-A folder written by
`tests/utils/tfds_writer.py`, its Arrow / Parquet copies (`slotssm_hf.data.export`) and `slotssm-hf tfds-export`."""

import os

import numpy as np
import pytest
from tfds_writer import COLOURS, SHAPES, write_movi

from slotssm_hf.cli import main as cli
from slotssm_hf.data.export import export
from slotssm_hf.data.movi import MOVi, load_movi, movi_example
from slotssm_hf.data.tfds import TFDSFolder, TFDSFormatError, read_tfds

STORED = ("video", "segmentations", "depth", "forward_flow", "backward_flow", "normal", "object_coordinates")


@pytest.fixture(scope="module")
def movi(tmp_path_factory):
    folder = tmp_path_factory.mktemp("movi") / "movi_a" / "16x16" / "1.0.0"
    return folder, write_movi(folder)


def assert_same(decoded, written, where=""):
    """`decoded` equals `written`, structure, values and (for arrays) dtypes."""
    if isinstance(written, dict):
        assert set(decoded) == set(written), where
        for key in written:
            assert_same(decoded[key], written[key], f"{where}/{key}")
    elif isinstance(written, list):
        assert len(decoded) == len(written), where
        for index, (a, b) in enumerate(zip(decoded, written)):
            assert_same(a, b, f"{where}[{index}]")
    elif isinstance(written, np.ndarray) and written.dtype.kind != "i":  # int64 labels read back as int64
        assert decoded.dtype == written.dtype and np.array_equal(decoded, written), where
    else:
        assert np.array_equal(np.asarray(decoded), np.asarray(written)), where


def test_every_movi_feature_decodes_to_what_was_written(movi):
    folder, written = movi
    for split in ("train", "validation"):
        decoded = list(TFDSFolder(folder).examples(split))
        assert len(decoded) == len(written[split])
        for example, values in zip(decoded, written[split]):
            assert_same(example, values)


def test_depth_and_flow_are_dequantised_with_their_ranges(movi):
    folder, written = movi
    for example, values in zip(load_movi(folder, "train"), written["train"]):
        for name in ("depth", "forward_flow", "backward_flow"):
            low, high = values["metadata"][f"{name}_range"].astype(np.float64)
            expected = values[name].astype(np.float64) / 65535 * (high - low) + low
            assert example[name].dtype == np.float32 and example[name].shape == values[name].shape
            np.testing.assert_allclose(example[name], expected, rtol=1e-6, atol=1e-5)
            assert example[name].min() >= low - 1e-5 and example[name].max() <= high + 1e-5


def test_boxes_are_dense_per_frame_with_their_mask(movi):
    folder, written = movi
    for example, values in zip(load_movi(folder, "train", max_instances=5), written["train"]):
        frames, count = len(values["video"]), int(values["metadata"]["num_instances"])
        assert example["boxes"].shape == (frames, 5, 4) and example["boxes_mask"].shape == (frames, 5)
        assert np.asarray(example["instance_mask"]).tolist() == [i < count for i in range(5)]
        for instance in range(5):
            visible = values["instances"]["bbox_frames"][instance] if instance < count else []
            for frame in range(frames):
                mask = example["boxes_mask"][frame, instance]
                box = example["boxes"][frame, instance]
                if frame in visible:
                    row = list(visible).index(frame)
                    assert mask and np.array_equal(box, values["instances"]["bboxes"][instance][row])
                else:
                    assert not mask and not box.any()


def test_instances_past_max_instances_are_dropped_and_their_pixels_become_background(movi):
    folder, written = movi
    values = next(v for v in written["train"] if v["metadata"]["num_instances"] >= 2)
    name = values["metadata"]["video_name"]
    decoded = next(e for e in TFDSFolder(folder).examples("train") if e["metadata"]["video_name"] == name)
    example = movi_example(decoded, max_instances=1)
    assert example["boxes"].shape[1] == 1 and example["instance_mask"].tolist() == [True]
    expected = np.where(values["segmentations"] > 1, 0, values["segmentations"])
    assert np.array_equal(example["segmentations"], expected)


def test_class_labels_carry_the_names_of_the_labels_files(movi):
    dataset = load_movi(movi[0], "validation", columns=["instances"])
    assert dataset.features["instances"]["shape_label"].feature.names == SHAPES
    assert dataset.features["instances"]["color_label"].feature.names == COLOURS


def test_only_the_requested_columns_come_out(movi):
    example = next(iter(load_movi(movi[0], "validation", columns=["video", "boxes", "backward_flow"])))
    assert set(example) == {"video", "boxes", "backward_flow"} and example["backward_flow"].dtype == np.float32


def test_unknown_columns_and_non_movi_folders_are_refused(movi, tmp_path):
    with pytest.raises(TFDSFormatError, match="no MOVi feature flow; it has: .*backward_flow"):
        load_movi(movi[0], "train", columns=["flow"])
    from tfds_writer import dict_json, tensor_json, write_tfds_folder

    write_tfds_folder(tmp_path, "other", dict_json({"x": tensor_json([], "int64")}), {"train": [[]]})
    with pytest.raises(TFDSFormatError, match="is not a MOVi folder: its features.json lacks video"):
        load_movi(tmp_path, "train")


def test_the_features_describe_the_examples(movi):
    import datasets

    features = MOVi(movi[0]).features()
    assert features["depth"] == datasets.Array4D(shape=(3, 16, 16, 1), dtype="float32")
    assert features["boxes"] == datasets.Array3D(shape=(3, 23, 4), dtype="float32")
    (row,) = load_movi(movi[0], "validation").with_format("arrow")  # every value converts to its declared type
    assert row.num_rows == 1


# --- Arrow / Parquet copies -------------------------------------------------------------------------------------------


def test_an_arrow_copy_loads_back_with_the_same_values(movi, tmp_path):
    import datasets

    folder, written = movi
    export(folder, tmp_path / "copy", log=lambda *_: None)
    copy = datasets.load_from_disk(str(tmp_path / "copy"))
    assert set(copy) == {"train", "validation"} and len(copy["train"]) == 3
    assert copy["train"].features == TFDSFolder(folder).hf_features()
    rows = copy["train"].with_format("numpy")
    for index, values in enumerate(written["train"]):
        row = rows[index]
        for name in STORED:
            assert np.array_equal(row[name], values[name]), name
        for bbox, expected in zip(row["instances"]["bboxes"], values["instances"]["bboxes"]):
            assert np.allclose(np.asarray(bbox).reshape(-1, 4), expected)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no staging folder or cache left


def test_a_parquet_copy_loads_with_load_dataset(movi, tmp_path):
    import datasets

    folder, written = movi
    export(folder, tmp_path / "copy", splits=["validation"], format="parquet", columns=["video", "instances"],
           log=lambda *_: None)  # fmt: skip
    assert os.listdir(tmp_path / "copy" / "data") == ["validation-00000-of-00001.parquet"]
    copy = datasets.load_dataset(str(tmp_path / "copy"), split="validation")
    assert copy.features["instances"]["shape_label"].feature.names == SHAPES
    assert np.array_equal(copy.with_format("numpy")[0]["video"], written["validation"][0]["video"])


def test_load_movi_on_a_copy_equals_load_movi_on_the_folder(movi, tmp_path):
    import datasets

    folder, _ = movi
    export(folder, tmp_path / "copy", splits=["validation"], log=lambda *_: None)
    from_copy = next(iter(load_movi(datasets.load_from_disk(str(tmp_path / "copy"))["validation"])))
    from_folder = next(iter(load_movi(folder, "validation")))
    for name in ("depth", "forward_flow", "boxes", "boxes_mask", "instance_mask"):
        assert np.array_equal(np.asarray(from_copy[name]), from_folder[name]), name


def test_a_movi_copy_holds_load_movis_output(movi, tmp_path):
    import datasets

    folder, _ = movi
    export(folder, tmp_path / "copy", splits=["validation"], movi=True, columns=["video", "depth", "boxes"],
           max_instances=4, log=lambda *_: None)  # fmt: skip
    row = datasets.load_from_disk(str(tmp_path / "copy"))["validation"].with_format("numpy")[0]
    expected = next(iter(load_movi(folder, "validation", columns=["video", "depth", "boxes"], max_instances=4)))
    assert set(row) == {"video", "depth", "boxes"} and row["depth"].dtype == np.float32
    for name in expected:
        assert np.array_equal(row[name], expected[name]), name


def test_push_to_hub_pushes_the_copy(movi, tmp_path, monkeypatch):
    import datasets

    pushed = []
    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub",
                        lambda self, repo_id, **kw: pushed.append((repo_id, self, kw)))  # fmt: skip
    export(movi[0], tmp_path / "copy", splits=["validation"], push_to_hub="someone/movi_a", private=True,
           log=lambda *_: None)  # fmt: skip
    ((repo_id, dataset_dict, kwargs),) = pushed
    assert repo_id == "someone/movi_a" and kwargs["private"] and list(dataset_dict) == ["validation"]


# --- slotssm-hf tfds-export -------------------------------------------------------------------------------------------


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_the_command_writes_a_copy(movi, tmp_path, capsys):
    import datasets

    assert cli(["tfds-export", str(movi[0].parent.parent), str(tmp_path / "copy"), "--split", "validation",
                "--columns", "video", "metadata"]) == 0  # fmt: skip
    copy = datasets.load_from_disk(str(tmp_path / "copy"))
    assert list(copy) == ["validation"] and set(copy["validation"].features) == {"video", "metadata"}


def test_the_command_fails_in_one_line_on_a_corrupt_shard_and_writes_nothing(movi, tmp_path, capsys):
    import shutil

    shutil.copytree(movi[0], tmp_path / "source")
    shard = tmp_path / "source" / "movi_a-validation.tfrecord-00000-of-00001"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert cli(["tfds-export", str(tmp_path / "source"), str(tmp_path / "copy")]) == 2
    line = error_line(capsys)
    assert line.startswith("error: ") and "validation.tfrecord-00000-of-00001: corrupt record at byte 0" in line, line
    assert sorted(os.listdir(tmp_path)) == ["source"]


def test_the_command_refuses_a_missing_split_and_an_existing_output(movi, tmp_path, capsys):
    assert cli(["tfds-export", str(movi[0]), str(tmp_path / "copy"), "--split", "test"]) == 2
    assert error_line(capsys).endswith("has no split 'test'; its splits: train, validation")
    (tmp_path / "copy").mkdir()
    assert cli(["tfds-export", str(movi[0]), str(tmp_path / "copy")]) == 2
    assert error_line(capsys).endswith("already exists; pass --overwrite to replace it")
    assert os.listdir(tmp_path / "copy") == []


def test_read_tfds_and_load_movi_agree_on_what_they_share(movi):
    raw = next(iter(read_tfds(movi[0], "validation", ["video", "segmentations"])))
    meaning = next(iter(load_movi(movi[0], "validation", ["video", "segmentations"])))
    for name in ("video", "segmentations"):
        assert np.array_equal(raw[name], meaning[name]), name
