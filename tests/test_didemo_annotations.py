"""DiDeMo annotations: paragraphs and statistics on the official val file (against brute-force oracles), every
validation error, ``bench data stats`` and ``bench data fetch`` (network monkeypatched, never touched)."""

from __future__ import annotations

import hashlib
import io
import json
import urllib.error
from pathlib import Path

import pytest

from tests.test_didemo_fixtures import VAL_JSON, needs_val_json, val_entries
from tvr_convbench.bench import data_cmd
from tvr_convbench.bench.data_cmd import main
from tvr_convbench.datasets.didemo import (
    AnnotationError,
    build_paragraphs,
    load_split,
    read_annotations,
    read_split_list,
)

GOOD = {
    "video": "1@N0_2_ab.mov",
    "description": "a man walks in.",
    "times": [[0, 0], [0, 1]],
    "annotation_id": 7,
    "num_segments": 6,
    "dl_link": "https://www.flickr.com/video_download.gne?id=2",
}


def write_entries(path: Path, entries: list) -> Path:
    path.write_text(json.dumps(entries))
    return path


def stderr_line(capsys: pytest.CaptureFixture) -> str:
    """The whole stderr, which must be exactly one ``error: ...`` line."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


# --- the official val file --------------------------------------------------------------------------------------
@needs_val_json
def test_paragraphs_join_descriptions_in_file_order() -> None:
    paragraphs = build_paragraphs(read_annotations(VAL_JSON))
    oracle: dict[str, list[str]] = {}
    for entry in val_entries():
        oracle.setdefault(entry["video"], []).append(entry["description"])
    assert [p.video for p in paragraphs] == list(oracle)
    assert all(p.paragraph == " ".join(oracle[p.video]) for p in paragraphs)
    assert sum(len(p.moments) for p in paragraphs) == 4180
    first = val_entries()[0]
    moment = next(p for p in paragraphs if p.video == first["video"]).moments[0]
    assert [list(t) for t in moment.times] == first["times"] and moment.annotation_id == first["annotation_id"]


@needs_val_json
def test_stats_command_on_official_val(capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "stats", "--dataset", "didemo", "--annotations", str(VAL_JSON)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["videos"] == 1094 and stats["descriptions"] == 4180
    words: dict[str, int] = {}
    for entry in val_entries():
        words[entry["video"]] = words.get(entry["video"], 0) + len(entry["description"].split())
    assert stats["paragraph_words_mean"] == round(sum(words.values()) / 1094, 3)
    assert stats["paragraph_words_max"] == max(words.values())
    assert stats["descriptions_per_video_mean"] == round(4180 / 1094, 3)
    assert stats["truncated_at_64_words"] == sum(w > 64 for w in words.values())
    assert set(stats) == {
        "videos",
        "descriptions",
        "paragraph_words_mean",
        "paragraph_words_max",
        "descriptions_per_video_mean",
        "truncated_at_64_words",
    }


@needs_val_json
def test_stats_with_a_split_list(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    videos = list(dict.fromkeys(e["video"] for e in val_entries()))[:10]
    listed = tmp_path / "val_list.txt"
    listed.write_text("\n".join(["not-annotated.mov", *videos]) + "\n\n")
    assert main(["data", "stats", "--annotations", str(VAL_JSON), "--split-list", str(listed)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["videos"] == 10
    assert stats["descriptions"] == sum(e["video"] in set(videos) for e in val_entries())


@needs_val_json
def test_load_split_counts_list_and_json_mismatch(tmp_path: Path) -> None:
    (tmp_path / "val_data.json").write_text(VAL_JSON.read_text())
    videos = list(dict.fromkeys(e["video"] for e in val_entries()))
    (tmp_path / "val_list.txt").write_text("\n".join([*videos[:1000], "ghost.mov"]))
    split = load_split(tmp_path, "val")
    assert split.counts() == {
        "listed": 1001,
        "annotated": 1000,
        "descriptions": sum(e["video"] in set(videos[:1000]) for e in val_entries()),
        "listed_without_annotation": 1,
        "annotated_not_listed": 94,
    }
    assert split.listed_without_annotation == ["ghost.mov"]


# --- validation -------------------------------------------------------------------------------------------------
def _without(field: str) -> dict:
    return {k: v for k, v in GOOD.items() if k != field}


BAD_ENTRIES = [
    pytest.param([GOOD, "text"], "entry 1: expected an object, got str", id="not-an-object"),
    *[
        pytest.param([GOOD, _without(f)], f"entry 1: field '{f}': missing", id=f"missing-{f}")
        for f in ("video", "description", "times", "annotation_id", "num_segments", "dl_link")
    ],
    pytest.param([{**GOOD, "annotation_id": "7"}], "entry 0: field 'annotation_id': expected int, got str", id="id"),
    pytest.param([{**GOOD, "num_segments": True}], "entry 0: field 'num_segments': expected int, got bool", id="bool"),
    pytest.param([{**GOOD, "video": 3}], "entry 0: field 'video': expected str, got int", id="video-type"),
    pytest.param([{**GOOD, "times": "0-1"}], "entry 0: field 'times': expected list, got str", id="times-type"),
    pytest.param([{**GOOD, "times": [[0, 1, 2]]}], "entry 0: field 'times': expected [start, end]", id="times-pair"),
    pytest.param([{**GOOD, "times": [[0, -1]]}], "entry 0: field 'times': expected [start, end]", id="times-sign"),
    pytest.param([GOOD, {**GOOD, "description": "  "}], "entry 1: field 'description': empty", id="empty-desc"),
    pytest.param([GOOD, {**GOOD, "video": ""}], "entry 1: field 'video': empty", id="empty-video"),
    pytest.param(
        [GOOD, {**GOOD, "video": "other.avi"}, {**GOOD, "num_segments": 5}],
        "entry 2: field 'num_segments': video '1@N0_2_ab.mov' listed with num_segments 6 earlier and 5 here",
        id="segments",
    ),
    pytest.param({"video": "x"}, "expected a JSON list of moments, got dict", id="not-a-list"),
]


@pytest.mark.parametrize(("entries", "expected"), BAD_ENTRIES)
def test_each_bad_entry_names_file_entry_and_field(tmp_path: Path, entries, expected: str) -> None:
    path = write_entries(tmp_path / "val_data.json", entries)
    with pytest.raises(AnnotationError) as info:
        read_annotations(path)
    assert isinstance(info.value, ValueError)
    assert str(info.value) == f"{path}: {expected}" or str(info.value).startswith(f"{path}: {expected}")
    assert "\n" not in str(info.value)


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match=r"absent\.json: file not found$"):
        read_annotations(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"video": "x",')
    with pytest.raises(AnnotationError, match=r"broken\.json: invalid JSON: .*line 1 column"):
        read_annotations(broken)


def test_split_list_errors(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match=r"val_list\.txt: file not found"):
        read_split_list(tmp_path / "val_list.txt")
    duplicate = tmp_path / "dup.txt"
    duplicate.write_text("a.mov\nb.avi\n a.mov \n")
    with pytest.raises(AnnotationError, match=r"dup\.txt: entry 3: field 'video': 'a.mov' also on line 1"):
        read_split_list(duplicate)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(AnnotationError, match="the split list is empty"):
        read_split_list(empty)
    assert read_split_list(_write(tmp_path / "ok.txt", "a.\nb.mov\n")) == ["a.", "b.mov"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_stats_command_exit_2_on_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_entries(tmp_path / "val_data.json", [GOOD, _without("times")])
    assert main(["data", "stats", "--annotations", str(path)]) == 2
    assert stderr_line(capsys) == f"error: {path}: entry 1: field 'times': missing"
    assert capsys.readouterr().out == ""
    listed = _write(tmp_path / "list.txt", "nobody.mov\n")
    good = write_entries(tmp_path / "good.json", [GOOD])
    assert main(["data", "stats", "--annotations", str(good), "--split-list", str(listed)]) == 2
    assert "no listed video has an annotation" in stderr_line(capsys)


# --- fetch (no network: urlopen is replaced) --------------------------------------------------------------------
class FakeWeb:
    """Serves fixed bytes per file name; records the URLs asked for."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.asked = files, []

    def __call__(self, url: str, timeout: float):
        self.asked.append((url, timeout))
        return io.BytesIO(self.files[url.rsplit("/", 1)[-1]])


def synthetic_files() -> dict[str, bytes]:
    """Valid stand-ins with the documented sizes; val_data.json is the official file (its sha256 is known)."""

    def annotations(count: int) -> bytes:
        return json.dumps([{**GOOD, "video": f"v{i // 4}.mov", "annotation_id": i} for i in range(count)]).encode()

    def split_list(count: int) -> bytes:
        return "".join(f"v{i}.mov\n" for i in range(count)).encode()

    return {
        "train_data.json": annotations(40),
        "val_data.json": VAL_JSON.read_bytes(),
        "test_data.json": annotations(4021),
        "train_list.txt": split_list(8392),
        "val_list.txt": split_list(1065),
        "test_list.txt": split_list(1004),
    }


@needs_val_json
def test_fetch_verifies_known_and_records_new_checksums(tmp_path, monkeypatch, capsys) -> None:
    web = FakeWeb(synthetic_files())
    monkeypatch.setattr(data_cmd.urllib.request, "urlopen", web)
    dest = tmp_path / "didemo"
    assert main(["data", "fetch", "didemo", "--dest", str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == sorted([*web.files, "checksums.json"])
    assert all((dest / name).read_bytes() == data for name, data in web.files.items())
    assert {url for url, _ in web.asked} == set(data_cmd.fetch_sources().values())
    assert all(timeout == data_cmd.FETCH_TIMEOUT_S for _, timeout in web.asked)
    out = capsys.readouterr().out
    assert "val_data.json: sha256 b0364cc2" in out and "(verified against the known sha256)" in out
    assert out.count("(recorded, not verified)") == 5
    record = json.loads((dest / "checksums.json").read_text())
    assert record["train_list.txt"]["sha256"] == hashlib.sha256(web.files["train_list.txt"]).hexdigest()
    assert record["val_data.json"]["verified"] and not record["test_data.json"]["verified"]
    offline = FakeWeb({})
    monkeypatch.setattr(data_cmd.urllib.request, "urlopen", offline)
    assert main(["data", "fetch", "didemo", "--dest", str(dest)]) == 0  # present files: checked, not downloaded
    assert offline.asked == [] and capsys.readouterr().out.count("(matches the recorded sha256)") == 5
    (dest / "test_list.txt").write_bytes(b"v0.mov\n")
    assert main(["data", "fetch", "didemo", "--dest", str(dest)]) == 2
    assert "test_list.txt: field 'sha256': sha256" in stderr_line(capsys)


def test_fetch_offline_fails_at_once_with_instructions(tmp_path, monkeypatch, capsys) -> None:
    asked = []

    def offline(url: str, timeout: float):
        asked.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(data_cmd.urllib.request, "urlopen", offline)
    dest = tmp_path / "didemo"
    assert main(["data", "fetch", "didemo", "--dest", str(dest)]) == 2
    line = stderr_line(capsys)
    assert len(asked) == 1 and "cannot download train_data.json" in line and "name resolution" in line
    assert f"in {dest}, then rerun" in line and "LocalizingMoments" in line and "collaborative-experts" in line
    assert not dest.exists() or not any(dest.iterdir())


@needs_val_json
@pytest.mark.parametrize(
    ("name", "damage", "fragment"),
    [
        ("val_data.json", lambda b: b.replace(b"the man", b"THE man", 1), "val_data.json: field 'sha256'"),
        ("val_list.txt", lambda b: b + b"extra.mov\n", "val_list.txt: field 'entries': downloaded 1066 entries"),
        ("test_data.json", lambda b: b[:-5], "test_data.json (downloaded): invalid JSON"),
    ],
)
def test_fetch_rejects_bad_downloads(tmp_path, monkeypatch, capsys, name, damage, fragment) -> None:
    files = synthetic_files()
    files[name] = damage(files[name])
    monkeypatch.setattr(data_cmd.urllib.request, "urlopen", FakeWeb(files))
    dest = tmp_path / "didemo"
    assert main(["data", "fetch", "didemo", "--dest", str(dest)]) == 2
    assert fragment in stderr_line(capsys)
    assert not (dest / name).exists()
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]
