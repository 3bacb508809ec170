"""factors.csv: known nuisances per file, encoded per factor, and a malformed file refused with its line."""

import pytest

from xdc.data.factors import MAX_FACTORS, read_factors
from xdc.errors import DataError


def write(root, text):
    (root / "factors.csv").write_text(text)


def test_it_encodes_each_factor_with_unknown_values_as_minus_one(tmp_path):
    write(tmp_path, "path,colour,speaker\na.mp4,red,ann\nsub/b.mp4,blue,\nc.mp4,red,bob\nother.mp4,green,carl\n")
    paths = [str(tmp_path / "a.mp4"), str(tmp_path / "sub" / "b.mp4"), str(tmp_path / "c.mp4"),
             str(tmp_path / "missing.mp4")]
    factors = read_factors(tmp_path, paths)
    # Values come from the listed files only: other.mp4 (another split, say) adds no 'green'.
    assert factors.values == {"colour": ["blue", "red"], "speaker": ["ann", "bob"]}
    assert factors.codes["colour"].tolist() == [1, 0, 1, -1]  # the file absent from factors.csv is unknown
    assert factors.codes["speaker"].tolist() == [0, -1, 1, -1]


def test_a_dataset_without_the_file_has_no_factors(tmp_path):
    assert not read_factors(tmp_path, [str(tmp_path / "a.mp4")])


@pytest.mark.parametrize("text,message", [
    ("path,Colour\na.mp4,red\n", "factor name 'Colour'"),
    ("path,video\na.mp4,red\n", "factor name 'video'"),
    ("path," + ",".join(f"f{i}" for i in range(MAX_FACTORS + 1)) + "\na.mp4" + ",x" * (MAX_FACTORS + 1) + "\n",
     "at most 16"),
    ("path,colour\na.mp4,red\n./a.mp4,blue\n", "line 3: ./a.mp4 is listed twice"),
    ("path,colour\n,red\n", "line 2: path must be set"),
    ("colour\nred\n", "lacks column"),
])
def test_a_malformed_file_is_refused_with_its_line(tmp_path, text, message):
    write(tmp_path, text)
    with pytest.raises(DataError, match=message):
        read_factors(tmp_path, [str(tmp_path / "a.mp4")])
