"""research/subset_data_bin.py: a data-bin whose training split is a random fraction of another's."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fairseq.data import indexed_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "research" / "subset_data_bin.py"
sys.path.insert(0, str(SCRIPT.parent))
from subset_data_bin import chosen, main  # noqa: E402


def _pairs(databin: Path, split: str = "train"):
    pair = next(databin.glob(f"{split}.*.idx")).name.split(".")[1]
    src, tgt = pair.split("-")
    return [
        indexed_dataset.MMapIndexedDataset(str(databin / f"{split}.{pair}.{lang}"))
        for lang in (src, tgt)
    ]


def _run(*args):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_subset_keeps_whole_pairs_in_order_and_links_the_rest(
    tiny_databin, tmp_path
):
    out = tmp_path / "quarter"
    done = _run(tiny_databin, out, "--fraction", "0.25", "--seed", "3")
    assert done.returncode == 0, done.stderr
    src, tgt = _pairs(tiny_databin)
    sub_src, sub_tgt = _pairs(out)
    keep = chosen(len(src), 0.25, 3)
    assert len(sub_src) == len(sub_tgt) == len(keep) == round(0.25 * len(src))
    for j, i in enumerate(
        keep.tolist()
    ):  # both sides of the same pairs, in their order
        assert sub_src[j].tolist() == src[i].tolist()
        assert sub_tgt[j].tolist() == tgt[i].tolist()
    assert f"{len(keep)} sentence pairs of 'train'" in done.stdout
    for name in (
        "dict.src.txt",
        "dict.tgt.txt",
        "valid.src-tgt.src.bin",
        "test.src-tgt.tgt.idx",
    ):
        assert (out / name).is_symlink(), name
        assert (out / name).read_bytes() == (tiny_databin / name).read_bytes()
    for name in ("train.src-tgt.src.bin", "train.src-tgt.tgt.idx"):
        assert (out / name).is_file() and not (out / name).is_symlink(), name
    record = json.loads((out / "subset.json").read_text())
    assert (record["pairs"], record["of"], record["seed"]) == (len(keep), len(src), 3)
    assert not list(tmp_path.glob(".*partial"))


def test_a_rerun_replaces_its_own_folder_and_never_writes_through_its_links(
    tiny_databin, tmp_path
):
    before = {p.name: p.read_bytes() for p in tiny_databin.iterdir()}
    out = tmp_path / "cut"
    # the valid split cut first links train.* into OUT; cutting train there then must not
    # write through those links into DATA_BIN
    assert (
        main([str(tiny_databin), str(out), "--fraction", "0.5", "--split", "valid"])
        == 0
    )
    assert (out / "train.src-tgt.src.bin").is_symlink()
    assert main([str(tiny_databin), str(out), "--fraction", "0.5"]) == 0
    assert {p.name: p.read_bytes() for p in tiny_databin.iterdir()} == before
    assert (out / "valid.src-tgt.src.bin").is_symlink()  # the folder was replaced whole
    assert not (out / "train.src-tgt.src.bin").is_symlink()


def test_a_folder_it_did_not_write_is_refused(tiny_databin, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="was not written by subset_data_bin.py"):
        main([str(tiny_databin), str(out), "--fraction", "0.5"])
    assert (out / "notes.txt").read_text() == "keep me"
    with pytest.raises(SystemExit, match="outside DATA_BIN"):
        main([str(tiny_databin), str(tiny_databin / "sub"), "--fraction", "0.5"])


def test_a_smaller_fraction_is_a_subset_of_a_larger_one():
    small, large = set(chosen(1000, 0.125, 1)), set(chosen(1000, 0.5, 1))
    assert len(small) == 125 and len(large) == 500 and small < large
    assert set(chosen(1000, 0.5, 2)) != large


@pytest.mark.parametrize("fraction", ["0", "1.5", "half"])
def test_a_fraction_outside_zero_to_one_is_refused(
    tiny_databin, tmp_path, fraction, capsys
):
    with pytest.raises(SystemExit):
        main([str(tiny_databin), str(tmp_path / "out"), "--fraction", fraction])
    assert "expected a number in (0, 1]" in capsys.readouterr().err


def test_a_missing_split_says_what_to_give(tiny_databin, tmp_path):
    with pytest.raises(
        SystemExit, match="no binarized 'nosuch' split .* fairseq-preprocess"
    ):
        main(
            [
                str(tiny_databin),
                str(tmp_path / "o"),
                "--fraction",
                "0.5",
                "--split",
                "nosuch",
            ]
        )
