"""Dataset-layout readers on tiny trees that copy the real file names and annotation formats.

Media files are empty placeholders: the readers only walk folders and parse annotations, they never decode.
"""

import os
from pathlib import Path

import pytest

from xdc.data.layouts import LAYOUTS, MEDIA_SUFFIXES, Listing, Sample, read_every_split, read_layout
from xdc.errors import DataError


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def write(path: Path, text: str, *, crlf: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", "\r\n" if crlf else "\n").encode())
    return path


def names(listing: Listing) -> list[str]:
    return [sample.path.name for sample in listing.samples]


def labels_by_name(listing: Listing) -> dict[str, str | None]:
    return {
        sample.path.name: None if sample.label is None else listing.classes[sample.label]
        for sample in listing.samples
    }


# ---------------------------------------------------------------------------------------------------------
# registry


class TestRegistry:
    def test_all_six_layouts_are_registered(self):
        assert {"folder", "kinetics", "ucf101", "hmdb51", "esc50", "dcase"} <= set(LAYOUTS)

    def test_unknown_layout_error_lists_the_known_ones(self, tmp_path):
        with pytest.raises(DataError, match="unknown dataset layout 'imagenet'") as caught:
            read_layout("imagenet", tmp_path)
        for name in LAYOUTS:
            assert name in str(caught.value)

    def test_missing_root_is_refused(self, tmp_path):
        with pytest.raises(DataError, match="does not exist"):
            read_layout("folder", tmp_path / "nowhere", split="all")

    def test_root_that_is_a_file_is_refused(self, tmp_path):
        with pytest.raises(DataError, match="not a directory"):
            read_layout("folder", touch(tmp_path / "clip.mp4"), split="all")

    def test_unsupported_split_names_the_supported_ones(self, tmp_path):
        with pytest.raises(DataError, match="split 'val' is not one of train, test, all"):
            read_layout("ucf101", tmp_path, split="val")

    @pytest.mark.parametrize(("layout", "fold"), [("ucf101", 4), ("hmdb51", 0), ("esc50", 6)])
    def test_fold_out_of_range_is_refused(self, tmp_path, layout, fold):
        with pytest.raises(DataError, match=f"fold {fold} is out of range"):
            read_layout(layout, tmp_path, split="all", fold=fold)

    def test_layout_without_folds_accepts_only_fold_one(self, tmp_path):
        with pytest.raises(DataError, match="no folds"):
            read_layout("folder", tmp_path, split="all", fold=2)

    def test_media_suffixes_cover_video_and_audio(self):
        assert {".mp4", ".avi", ".wav", ".flac"} <= set(MEDIA_SUFFIXES)

    def test_empty_listing_names_root_split_and_fold(self, tmp_path):
        with pytest.raises(DataError, match=rf"no samples under {tmp_path} for split 'all', fold 1"):
            read_layout("folder", tmp_path, split="all")


# ---------------------------------------------------------------------------------------------------------
# folder


class TestFolder:
    def test_lists_videos_recursively_sorted_and_unlabeled(self, tmp_path):
        for relative in ("b/clip2.mkv", "a/clip1.mp4", "c.avi", "notes.txt", "a/sound.wav", ".hidden/x.mp4"):
            touch(tmp_path / relative)
        touch(tmp_path / "a" / "._clip1.mp4")  # macOS resource-fork debris
        listing = read_layout("folder", tmp_path, split="all")
        assert [s.path.relative_to(tmp_path).as_posix() for s in listing.samples] == [
            "a/clip1.mp4",
            "b/clip2.mkv",
            "c.avi",
        ]
        assert listing.classes == [] and not listing.labeled
        assert all(s.path.is_absolute() and s.label is None for s in listing.samples)

    def test_train_means_everything(self, tmp_path):
        touch(tmp_path / "clip.mp4")
        assert read_layout("folder", tmp_path, split="train").samples == [Sample(tmp_path / "clip.mp4")]

    def test_labels_csv_attaches_sorted_class_names(self, tmp_path):
        touch(tmp_path / "x" / "a.mp4")
        touch(tmp_path / "b.mp4")
        write(tmp_path / "labels.csv", "path,label,note\nx/a.mp4,surfing,first\nb.mp4,archery,\n")
        listing = read_layout("folder", tmp_path, split="all")
        assert listing.classes == ["archery", "surfing"] and listing.labeled
        assert labels_by_name(listing) == {"a.mp4": "surfing", "b.mp4": "archery"}

    def test_labels_csv_row_for_missing_file_names_the_line(self, tmp_path):
        touch(tmp_path / "a.mp4")
        write(tmp_path / "labels.csv", "path,label\na.mp4,surfing\ngone.mp4,archery\n")
        with pytest.raises(DataError, match=r"labels\.csv line 3: gone\.mp4 does not exist"):
            read_layout("folder", tmp_path, split="all")

    def test_labels_csv_defines_the_dataset_when_present(self, tmp_path):
        touch(tmp_path / "a.mp4")
        touch(tmp_path / "copies" / "ucf101" / "a.avi")
        write(tmp_path / "labels.csv", "path,label\na.mp4,surfing\n")
        listing = read_layout("folder", tmp_path, split="all")
        assert [s.path.name for s in listing.samples] == ["a.mp4"]

    def test_labels_csv_without_label_column_is_refused(self, tmp_path):
        touch(tmp_path / "a.mp4")
        write(tmp_path / "labels.csv", "path,class\na.mp4,surfing\n")
        with pytest.raises(DataError, match=r"labels\.csv line 1: header lacks column\(s\) label"):
            read_layout("folder", tmp_path, split="all")

    def test_labels_csv_duplicate_row_is_refused(self, tmp_path):
        touch(tmp_path / "a.mp4")
        write(tmp_path / "labels.csv", "path,label\na.mp4,surfing\n./a.mp4,surfing\n")
        with pytest.raises(DataError, match=r"line 3: \./a\.mp4 is listed twice"):
            read_layout("folder", tmp_path, split="all")

    def test_labels_csv_row_naming_a_non_video_is_refused(self, tmp_path):
        touch(tmp_path / "a.mp4")
        touch(tmp_path / "readme.txt")
        write(tmp_path / "labels.csv", "path,label\na.mp4,surfing\nreadme.txt,surfing\n")
        with pytest.raises(DataError, match=r"line 3: readme\.txt is not a video"):
            read_layout("folder", tmp_path, split="all")

    def test_labels_csv_that_is_not_utf8_is_refused(self, tmp_path):
        touch(tmp_path / "a.mp4")
        (tmp_path / "labels.csv").write_bytes(b"path,label\na.mp4,caf\xe9\n")
        with pytest.raises(DataError, match=r"labels\.csv line \d+: unreadable CSV"):
            read_layout("folder", tmp_path, split="all")


# ---------------------------------------------------------------------------------------------------------
# kinetics

KINETICS_TRAIN_CSV = (
    "label,youtube_id,time_start,time_end,split,is_cc\n"
    "abseiling,-3B32lodo2M,59,69,train,0\n"
    '"air drumming",_dbcJuKJQNs,40,50,train,0\n'
    "archery,0S-P4lr_c7s,0,10,train,0\n"
    "archery,zzNotDownloaded,5,15,train,0\n"
)
KINETICS_VAL_CSV = (
    "label,youtube_id,time_start,time_end,split\n"
    '"air drumming",--nQbRBEz2s,104,114,val\n'
    "abseiling,0wR5jVB-WPk,417,427,val\n"
)
KINETICS_TEST_CSV = "youtube_id,time_start,time_end,split\n---QUuC4vJs,84,94,test\n"


@pytest.fixture
def kinetics(tmp_path):
    annotations = tmp_path / "annotations"
    write(annotations / "train.csv", KINETICS_TRAIN_CSV)
    write(annotations / "val.csv", KINETICS_VAL_CSV)
    write(annotations / "test.csv", KINETICS_TEST_CSV)
    touch(tmp_path / "train" / "abseiling" / "-3B32lodo2M_000059_000069.mp4")
    touch(tmp_path / "train" / "air drumming" / "_dbcJuKJQNs_000040_000050.mp4")
    touch(tmp_path / "train" / "archery" / "0S-P4lr_c7s_000000_000010.mp4")
    touch(tmp_path / "train" / "archery" / "notInCsv_000000_000010.mp4")
    touch(tmp_path / "val" / "air drumming" / "--nQbRBEz2s_000104_000114.mp4")
    touch(tmp_path / "val" / "abseiling" / "0wR5jVB-WPk_000417_000427.mp4")
    touch(tmp_path / "test" / "---QUuC4vJs_000084_000094.mp4")  # the CVDF mirror keeps test clips flat
    return tmp_path


class TestKinetics:
    def test_train_joins_csv_rows_to_clip_files(self, kinetics):
        listing = read_layout("kinetics", kinetics, split="train")
        assert listing.classes == ["abseiling", "air drumming", "archery"]
        assert labels_by_name(listing) == {
            "-3B32lodo2M_000059_000069.mp4": "abseiling",
            "_dbcJuKJQNs_000040_000050.mp4": "air drumming",
            "0S-P4lr_c7s_000000_000010.mp4": "archery",
        }
        assert listing.missing == 1 and listing.labeled

    def test_val_uses_training_class_indices(self, kinetics):
        train = read_layout("kinetics", kinetics, split="train")
        val = read_layout("kinetics", kinetics, split="val")
        assert val.classes == train.classes
        assert labels_by_name(val) == {
            "--nQbRBEz2s_000104_000114.mp4": "air drumming",
            "0wR5jVB-WPk_000417_000427.mp4": "abseiling",
        }
        assert {s.path for s in train.samples}.isdisjoint(s.path for s in val.samples)

    def test_unlabeled_test_csv_gives_unlabeled_samples(self, kinetics):
        listing = read_layout("kinetics", kinetics, split="test")
        assert names(listing) == ["---QUuC4vJs_000084_000094.mp4"]
        assert listing.samples[0].label is None and not listing.labeled

    def test_all_concatenates_every_split(self, kinetics):
        listing = read_layout("kinetics", kinetics, split="all")
        assert len(listing.samples) == 6 and listing.missing == 1

    def test_csv_next_to_split_folders_and_validate_naming(self, tmp_path):
        write(tmp_path / "train.csv", KINETICS_TRAIN_CSV, crlf=True)
        write(tmp_path / "validate.csv", KINETICS_VAL_CSV.replace(",val\n", ",validate\n"))
        touch(tmp_path / "train" / "-3B32lodo2M_000059_000069.mp4")
        touch(tmp_path / "validate" / "0wR5jVB-WPk_000417_000427.mp4")
        assert labels_by_name(read_layout("kinetics", tmp_path, split="train")) == {
            "-3B32lodo2M_000059_000069.mp4": "abseiling"
        }
        val = read_layout("kinetics", tmp_path, split="val")
        assert labels_by_name(val) == {"0wR5jVB-WPk_000417_000427.mp4": "abseiling"} and val.missing == 1

    def test_without_csv_class_folders_are_the_labels(self, tmp_path):
        touch(tmp_path / "train" / "bowling" / "a_000000_000010.mp4")
        touch(tmp_path / "train" / "archery" / "b_000000_000010.mp4")
        touch(tmp_path / "val" / "bowling" / "c_000000_000010.mp4")
        listing = read_layout("kinetics", tmp_path, split="val")
        assert listing.classes == ["archery", "bowling"]
        assert labels_by_name(listing) == {"c_000000_000010.mp4": "bowling"}

    def test_without_csv_an_unknown_class_folder_is_refused(self, tmp_path):
        touch(tmp_path / "train" / "archery" / "b_000000_000010.mp4")
        touch(tmp_path / "val" / "juggling" / "c_000000_000010.mp4")
        with pytest.raises(DataError, match=r"class folder .*juggling is not a known class"):
            read_layout("kinetics", tmp_path, split="val")

    def test_label_absent_from_training_classes_names_file_and_line(self, kinetics):
        write(kinetics / "annotations" / "val.csv", KINETICS_VAL_CSV + "yodelling,abc,0,10,val\n")
        with pytest.raises(DataError, match=r"val\.csv line 4: label 'yodelling' is not among the training"):
            read_layout("kinetics", kinetics, split="val")

    def test_non_integer_time_names_file_and_line(self, kinetics):
        write(kinetics / "annotations" / "val.csv", KINETICS_VAL_CSV + "abseiling,abc,zero,10,val\n")
        with pytest.raises(DataError, match=r"val\.csv line 4: time_start 'zero' is not an integer"):
            read_layout("kinetics", kinetics, split="val")

    def test_csv_without_youtube_id_column_is_refused(self, kinetics):
        write(kinetics / "annotations" / "val.csv", "label,id,time_start,time_end\n")
        with pytest.raises(DataError, match=r"val\.csv line 1: header lacks column\(s\) youtube_id"):
            read_layout("kinetics", kinetics, split="val")

    def test_same_clip_in_two_folders_is_refused(self, kinetics):
        touch(kinetics / "train" / "archery" / "-3B32lodo2M_000059_000069.mp4")
        with pytest.raises(DataError, match=r"clip -3B32lodo2M_000059_000069 exists twice"):
            read_layout("kinetics", kinetics, split="train")

    def test_missing_split_folder_is_named(self, kinetics):
        (kinetics / "test" / "---QUuC4vJs_000084_000094.mp4").unlink()
        (kinetics / "test").rmdir()
        with pytest.raises(DataError, match="no 'test' folder"):
            read_layout("kinetics", kinetics, split="test")

    def test_nothing_downloaded_is_an_empty_listing_error(self, tmp_path):
        write(tmp_path / "annotations" / "train.csv", KINETICS_TRAIN_CSV)
        (tmp_path / "train").mkdir()
        with pytest.raises(DataError, match="no samples under .* for split 'train'"):
            read_layout("kinetics", tmp_path, split="train")


# ---------------------------------------------------------------------------------------------------------
# ucf101

UCF_CLASSES = "1 ApplyEyeMakeup\n2 ApplyLipstick\n3 Archery\n"
UCF_TRAIN = {
    1: "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nApplyLipstick/v_ApplyLipstick_g08_c01.avi 2\n"
    "Archery/v_Archery_g08_c01.avi 3\n\n",
    2: "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\nArchery/v_Archery_g01_c01.avi 3\n",
    3: "ApplyLipstick/v_ApplyLipstick_g01_c01.avi 2\n",
}
UCF_TEST = {
    1: "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\nArchery/v_Archery_g01_c01.avi\n\n",
    2: "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi\nApplyLipstick/v_ApplyLipstick_g08_c01.avi\n",
    3: "Archery/v_Archery_g08_c01.avi\n",
}


@pytest.fixture
def ucf101(tmp_path):
    lists = tmp_path / "ucfTrainTestlist"
    write(lists / "classInd.txt", UCF_CLASSES, crlf=True)  # the released files use CRLF line endings
    for fold in (1, 2, 3):
        write(lists / f"trainlist0{fold}.txt", UCF_TRAIN[fold], crlf=True)
        write(lists / f"testlist0{fold}.txt", UCF_TEST[fold], crlf=True)
    for text in (*UCF_TRAIN.values(), *UCF_TEST.values()):
        for line in text.splitlines():
            if line:
                touch(tmp_path / "UCF-101" / line.split()[0])
    return tmp_path


class TestUcf101:
    def test_train_split_one_with_crlf_files(self, ucf101):
        listing = read_layout("ucf101", ucf101, split="train", fold=1)
        assert listing.classes == ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]
        assert labels_by_name(listing) == {
            "v_ApplyEyeMakeup_g08_c01.avi": "ApplyEyeMakeup",
            "v_ApplyLipstick_g08_c01.avi": "ApplyLipstick",
            "v_Archery_g08_c01.avi": "Archery",
        }
        assert listing.samples[0].path == ucf101 / "UCF-101" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi"

    def test_test_labels_come_from_the_class_folder(self, ucf101):
        listing = read_layout("ucf101", ucf101, split="test", fold=1)
        assert labels_by_name(listing) == {
            "v_ApplyEyeMakeup_g01_c01.avi": "ApplyEyeMakeup",
            "v_Archery_g01_c01.avi": "Archery",
        }

    @pytest.mark.parametrize("fold", [1, 2, 3])
    def test_train_and_test_are_disjoint_and_all_is_their_union(self, ucf101, fold):
        train = {s.path for s in read_layout("ucf101", ucf101, split="train", fold=fold).samples}
        test = {s.path for s in read_layout("ucf101", ucf101, split="test", fold=fold).samples}
        union = {s.path for s in read_layout("ucf101", ucf101, split="all", fold=fold).samples}
        assert train.isdisjoint(test) and train | test == union

    def test_fold_selects_the_split_files(self, ucf101):
        assert names(read_layout("ucf101", ucf101, split="test", fold=3)) == ["v_Archery_g08_c01.avi"]

    def test_videos_may_sit_in_UCF101(self, ucf101):
        (ucf101 / "UCF-101").rename(ucf101 / "UCF101")
        listing = read_layout("ucf101", ucf101, split="train", fold=1)
        assert listing.samples[0].path == ucf101 / "UCF101" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi"

    def test_class_folders_may_sit_in_root(self, ucf101):
        for class_dir in list((ucf101 / "UCF-101").iterdir()):
            class_dir.rename(ucf101 / class_dir.name)
        (ucf101 / "UCF-101").rmdir()
        listing = read_layout("ucf101", ucf101, split="train", fold=1)
        assert listing.samples[0].path == ucf101 / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi"

    def test_missing_split_file_is_named(self, ucf101):
        (ucf101 / "ucfTrainTestlist" / "testlist02.txt").unlink()
        with pytest.raises(DataError, match=r"split file .*testlist02\.txt does not exist"):
            read_layout("ucf101", ucf101, split="test", fold=2)

    def test_missing_class_index_is_named(self, ucf101):
        (ucf101 / "ucfTrainTestlist" / "classInd.txt").unlink()
        with pytest.raises(DataError, match=r"classInd\.txt does not exist"):
            read_layout("ucf101", ucf101, split="train")

    def test_class_absent_from_class_index_names_file_and_line(self, ucf101):
        write(ucf101 / "ucfTrainTestlist" / "testlist01.txt", UCF_TEST[1] + "Bowling/v_Bowling_g01_c01.avi\n")
        with pytest.raises(DataError, match=r"testlist01\.txt line 4: class 'Bowling' is not in classInd\.txt"):
            read_layout("ucf101", ucf101, split="test")

    def test_label_disagreeing_with_class_index_is_refused(self, ucf101):
        write(ucf101 / "ucfTrainTestlist" / "trainlist01.txt", "Archery/v_Archery_g08_c01.avi 2\n")
        with pytest.raises(DataError, match=r"trainlist01\.txt line 1: label 2 disagrees .* Archery is 3"):
            read_layout("ucf101", ucf101, split="train")

    @pytest.mark.parametrize(
        "line", ["Archery/v_Archery_g08_c01.avi", "v_Archery_g08_c01.avi 3", "Archery/v_Archery_g08_c01.avi x"]
    )
    def test_malformed_train_line_names_file_and_line(self, ucf101, line):
        first = "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
        write(ucf101 / "ucfTrainTestlist" / "trainlist01.txt", f"{first}\n{line}\n")
        with pytest.raises(DataError, match=r"trainlist01\.txt line 2: "):
            read_layout("ucf101", ucf101, split="train")

    def test_malformed_class_index_line_is_refused(self, ucf101):
        write(ucf101 / "ucfTrainTestlist" / "classInd.txt", "1 ApplyEyeMakeup\nApplyLipstick\n")
        with pytest.raises(DataError, match=r"classInd\.txt line 2: expected '<number> <class>'"):
            read_layout("ucf101", ucf101, split="train")

    def test_gap_in_class_numbers_is_refused(self, ucf101):
        write(ucf101 / "ucfTrainTestlist" / "classInd.txt", "1 ApplyEyeMakeup\n3 Archery\n")
        with pytest.raises(DataError, match=r"class numbers must run 1\.\.2"):
            read_layout("ucf101", ucf101, split="train")

    def test_listed_video_missing_on_disk_is_named(self, ucf101):
        (ucf101 / "UCF-101" / "Archery" / "v_Archery_g08_c01.avi").unlink()
        expected = r"1 listed file\(s\) missing .*Archery/v_Archery_g08_c01\.avi \(trainlist01\.txt line 3\)"
        with pytest.raises(DataError, match=expected):
            read_layout("ucf101", ucf101, split="train")

    def test_video_listed_twice_is_refused(self, ucf101):
        write(ucf101 / "ucfTrainTestlist" / "testlist01.txt", "Archery/v_Archery_g08_c01.avi\n")
        expected = r"listed twice \(trainlist01\.txt line 3 and testlist01\.txt line 1\)"
        with pytest.raises(DataError, match=expected):
            read_layout("ucf101", ucf101, split="all")


# ---------------------------------------------------------------------------------------------------------
# hmdb51

HMDB_VIDEOS = {
    "brush_hair": ["April_09_brush_hair_u_nm_np1_ba_goo_0.avi", "April_09_brush_hair_u_nm_np1_ba_goo_1.avi",
                   "Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0.avi"],
    "cartwheel": ["(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0.avi",
                  "Bodenturnen_2004_cartwheel_f_cm_np1_le_med_0.avi",
                  "Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8.avi"],
}
# tags per fold for the three videos of each class: 1 = train, 2 = test, 0 = unused
HMDB_TAGS = {1: ("1", "2", "0"), 2: ("2", "1", "1"), 3: ("0", "1", "2")}


@pytest.fixture
def hmdb51(tmp_path):
    for name, videos in HMDB_VIDEOS.items():
        for video in videos:
            touch(tmp_path / "hmdb51_org" / name / video)
        for fold, tags in HMDB_TAGS.items():
            # the released split files end every line with a space after the tag
            lines = "".join(f"{video} {tag} \n" for video, tag in zip(videos, tags))
            write(tmp_path / "testTrainMulti_7030_splits" / f"{name}_test_split{fold}.txt", lines)
    return tmp_path


class TestHmdb51:
    def test_train_takes_tag_one(self, hmdb51):
        listing = read_layout("hmdb51", hmdb51, split="train", fold=1)
        assert listing.classes == ["brush_hair", "cartwheel"]
        assert labels_by_name(listing) == {
            "April_09_brush_hair_u_nm_np1_ba_goo_0.avi": "brush_hair",
            "(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0.avi": "cartwheel",
        }

    def test_test_takes_tag_two_and_all_takes_every_listed_video(self, hmdb51):
        assert names(read_layout("hmdb51", hmdb51, split="test", fold=1)) == [
            "April_09_brush_hair_u_nm_np1_ba_goo_1.avi",
            "Bodenturnen_2004_cartwheel_f_cm_np1_le_med_0.avi",
        ]
        assert len(read_layout("hmdb51", hmdb51, split="all", fold=1).samples) == 6

    @pytest.mark.parametrize("fold", [1, 2, 3])
    def test_train_and_test_are_disjoint_per_fold(self, hmdb51, fold):
        train = read_layout("hmdb51", hmdb51, split="train", fold=fold)
        test = read_layout("hmdb51", hmdb51, split="test", fold=fold)
        expected_train = sum(tag == "1" for tag in HMDB_TAGS[fold]) * len(HMDB_VIDEOS)
        assert len(train.samples) == expected_train
        assert {s.path for s in train.samples}.isdisjoint(s.path for s in test.samples)

    def test_videos_directly_in_root_and_splits_folder(self, hmdb51):
        for class_dir in list((hmdb51 / "hmdb51_org").iterdir()):
            class_dir.rename(hmdb51 / class_dir.name)
        (hmdb51 / "hmdb51_org").rmdir()
        (hmdb51 / "testTrainMulti_7030_splits").rename(hmdb51 / "splits")
        listing = read_layout("hmdb51", hmdb51, split="train", fold=2)
        assert names(listing) == [*HMDB_VIDEOS["brush_hair"][1:], *HMDB_VIDEOS["cartwheel"][1:]]
        assert listing.samples[0].path.parent == hmdb51 / "brush_hair"

    def test_crlf_split_files_are_read(self, hmdb51):
        split_file = hmdb51 / "testTrainMulti_7030_splits" / "brush_hair_test_split1.txt"
        write(split_file, split_file.read_text() + "\n", crlf=True)
        assert len(read_layout("hmdb51", hmdb51, split="train", fold=1).samples) == 2

    def test_missing_split_folder_is_refused(self, tmp_path):
        touch(tmp_path / "brush_hair" / "a.avi")
        with pytest.raises(DataError, match="no split folder .*testTrainMulti_7030_splits"):
            read_layout("hmdb51", tmp_path, split="train")

    def test_class_without_split_file_for_the_fold_is_named(self, hmdb51):
        (hmdb51 / "testTrainMulti_7030_splits" / "cartwheel_test_split2.txt").unlink()
        with pytest.raises(DataError, match=r"split file .*cartwheel_test_split2\.txt does not exist"):
            read_layout("hmdb51", hmdb51, split="train", fold=2)

    def test_bad_tag_names_file_and_line(self, hmdb51):
        write(hmdb51 / "testTrainMulti_7030_splits" / "cartwheel_test_split1.txt", "a.avi 1\nb.avi 3\n")
        expected = r"cartwheel_test_split1\.txt line 2: expected '<video>\.avi <0\|1\|2>'"
        with pytest.raises(DataError, match=expected):
            read_layout("hmdb51", hmdb51, split="train")

    def test_listed_video_missing_on_disk_is_named(self, hmdb51):
        (hmdb51 / "hmdb51_org" / "cartwheel" / "Bodenturnen_2004_cartwheel_f_cm_np1_le_med_0.avi").unlink()
        expected = r"missing .*cartwheel/Bodenturnen_2004_.*\.avi \(cartwheel_test_split1\.txt line 2\)"
        with pytest.raises(DataError, match=expected):
            read_layout("hmdb51", hmdb51, split="test", fold=1)


# ---------------------------------------------------------------------------------------------------------
# esc50

ESC50_CSV = (
    "filename,fold,target,category,esc10,src_file,take\n"
    "1-100032-A-0.wav,1,0,dog,True,100032,A\n"
    "1-26806-A-1.wav,1,1,rooster,True,26806,A\n"
    "2-109505-A-2.wav,2,2,pig,False,109505,A\n"
    "3-144028-A-0.wav,3,0,dog,True,144028,A\n"
    "4-181286-A-1.wav,4,1,rooster,True,181286,A\n"
    "5-200334-A-2.wav,5,2,pig,False,200334,A\n"
)


@pytest.fixture
def esc50(tmp_path):
    write(tmp_path / "meta" / "esc50.csv", ESC50_CSV)
    for line in ESC50_CSV.splitlines()[1:]:
        touch(tmp_path / "audio" / line.split(",")[0])
    return tmp_path


class TestEsc50:
    def test_classes_follow_target_order(self, esc50):
        listing = read_layout("esc50", esc50, split="all")
        assert listing.classes == ["dog", "rooster", "pig"] and len(listing.samples) == 6
        assert labels_by_name(listing)["2-109505-A-2.wav"] == "pig"

    @pytest.mark.parametrize("fold", [1, 2, 3, 4, 5])
    def test_test_is_the_fold_and_train_the_rest(self, esc50, fold):
        train = read_layout("esc50", esc50, split="train", fold=fold)
        test = read_layout("esc50", esc50, split="test", fold=fold)
        assert all(name.startswith(f"{fold}-") for name in names(test))
        assert not any(name.startswith(f"{fold}-") for name in names(train))
        assert len(train.samples) + len(test.samples) == 6

    def test_samples_live_in_the_audio_folder(self, esc50):
        listing = read_layout("esc50", esc50, split="test", fold=1)
        assert listing.samples == [Sample(esc50 / "audio" / "1-100032-A-0.wav", 0),
                                   Sample(esc50 / "audio" / "1-26806-A-1.wav", 1)]

    def test_missing_csv_is_named(self, tmp_path):
        touch(tmp_path / "audio" / "1-100032-A-0.wav")
        with pytest.raises(DataError, match=r"metadata file .*meta/esc50\.csv does not exist"):
            read_layout("esc50", tmp_path, split="all")

    def test_missing_wav_is_named(self, esc50):
        (esc50 / "audio" / "4-181286-A-1.wav").unlink()
        with pytest.raises(DataError, match=r"missing .*first: 4-181286-A-1\.wav \(esc50\.csv line 6\)"):
            read_layout("esc50", esc50, split="train", fold=1)

    def test_target_with_two_categories_is_refused(self, esc50):
        write(esc50 / "meta" / "esc50.csv", ESC50_CSV + "5-9032-A-0.wav,5,0,cat,False,9032,A\n")
        with pytest.raises(DataError, match=r"esc50\.csv line 8: target 0 is 'cat' here .*'dog'"):
            read_layout("esc50", esc50, split="all")

    def test_category_with_two_targets_is_refused(self, esc50):
        write(esc50 / "meta" / "esc50.csv", ESC50_CSV + "5-9032-A-3.wav,5,3,dog,False,9032,A\n")
        with pytest.raises(DataError, match=r"esc50\.csv line 8: .*'dog' with target 0"):
            read_layout("esc50", esc50, split="all")

    def test_gap_in_targets_is_refused(self, esc50):
        write(esc50 / "meta" / "esc50.csv", ESC50_CSV.replace(",2,pig,", ",3,pig,"))
        with pytest.raises(DataError, match="missing target 2"):
            read_layout("esc50", esc50, split="all")

    def test_fold_outside_one_to_five_in_csv_is_refused(self, esc50):
        write(esc50 / "meta" / "esc50.csv", ESC50_CSV + "6-1-A-0.wav,6,0,dog,True,1,A\n")
        with pytest.raises(DataError, match=r"esc50\.csv line 8: fold 6 is out of range 1\.\.5"):
            read_layout("esc50", esc50, split="all")


# ---------------------------------------------------------------------------------------------------------
# dcase


@pytest.fixture
def dcase(tmp_path):
    touch(tmp_path / "train" / "airport" / "airport-barcelona-0-0-a.wav")
    touch(tmp_path / "train" / "bus" / "bus-lyon-1001-40001-a.wav")
    touch(tmp_path / "train" / "bus" / "bus-lyon-1001-40002-a.wav")
    touch(tmp_path / "test" / "metro" / "metro-paris-56-1689-a.wav")
    touch(tmp_path / "test" / "bus" / "bus-vienna-1-1-a.wav")
    return tmp_path


class TestDcase:
    def test_classes_are_the_union_over_splits(self, dcase):
        train = read_layout("dcase", dcase, split="train")
        test = read_layout("dcase", dcase, split="test")
        assert train.classes == test.classes == ["airport", "bus", "metro"]
        assert labels_by_name(test) == {"metro-paris-56-1689-a.wav": "metro", "bus-vienna-1-1-a.wav": "bus"}
        assert len(train.samples) == 3
        assert {s.path for s in train.samples}.isdisjoint(s.path for s in test.samples)

    def test_all_reads_both_splits(self, dcase):
        assert len(read_layout("dcase", dcase, split="all").samples) == 5

    def test_flat_scene_folders_support_only_all(self, tmp_path):
        touch(tmp_path / "park" / "park-helsinki-0-0-a.wav")
        touch(tmp_path / "tram" / "tram-prague-0-0-a.wav")
        listing = read_layout("dcase", tmp_path, split="all")
        assert listing.classes == ["park", "tram"] and labels_by_name(listing)["tram-prague-0-0-a.wav"] == "tram"
        with pytest.raises(DataError, match="no train/ or test/ folder, so only split 'all'"):
            read_layout("dcase", tmp_path, split="train")

    def test_missing_test_folder_is_named(self, tmp_path):
        touch(tmp_path / "train" / "park" / "park-helsinki-0-0-a.wav")
        with pytest.raises(DataError, match=r"split folder .*test does not exist"):
            read_layout("dcase", tmp_path, split="test")


class TestWholeDatasets:
    """What a registration reads: every split of every fold, nothing unreadable skipped, nothing outside the root."""

    def test_every_split_of_every_fold_is_read(self, ucf101):
        assert len(read_every_split("ucf101", ucf101).samples) == len(
            read_layout("ucf101", ucf101, split="all", fold=1).samples)
        (ucf101 / "ucfTrainTestlist" / "testlist02.txt").unlink()
        with pytest.raises(DataError, match="testlist02"):
            read_every_split("ucf101", ucf101)

    def test_an_empty_split_file_of_a_later_fold_is_refused(self, ucf101):
        write(ucf101 / "ucfTrainTestlist" / "testlist03.txt", "")
        with pytest.raises(DataError, match="split 'test', fold 3"):
            read_every_split("ucf101", ucf101)

    def test_a_split_line_leaving_the_root_is_refused(self, ucf101, tmp_path):
        touch(tmp_path.parent / "elsewhere" / "v_Archery_g99_c01.avi")
        lists = ucf101 / "ucfTrainTestlist" / "trainlist01.txt"
        lists.write_text(lists.read_text() + "../../elsewhere/v_Archery_g99_c01.avi 3\n")
        with pytest.raises(DataError):
            read_layout("ucf101", ucf101, split="train", fold=1)

    def test_an_unreadable_folder_is_an_error_not_a_gap(self, tmp_path, monkeypatch):
        touch(tmp_path / "a" / "x.mp4")
        touch(tmp_path / "b" / "y.mp4")
        real = os.scandir

        def scandir(path="."):
            if Path(path).name == "b":
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(os, "scandir", scandir)  # root reads everything, so chmod cannot show it here
        with pytest.raises(DataError, match=r"cannot read .*/b: Permission denied"):
            read_layout("folder", tmp_path, split="all")

    def test_an_unreadable_split_file_is_an_error(self, ucf101, monkeypatch):
        real = Path.read_text

        def read_text(self, *args, **kwargs):
            if self.name == "trainlist01.txt":
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Path, "read_text", read_text)
        with pytest.raises(DataError, match="trainlist01.txt: Permission denied"):
            read_layout("ucf101", ucf101, split="train", fold=1)
