"""A pretraining's cluster gallery page and its media: what the trainer wrote, shown to its team only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lab_helpers import submit_pretrain

pytestmark = pytest.mark.django_db


def write_gallery(out_dir: str, round_index: int, *, k: int = 3) -> None:
    """A round's gallery in the trainer's format (xdc-gallery/1), two members per cluster."""
    folder = Path(out_dir) / "gallery" / f"round_{round_index:03d}"
    (folder / "media").mkdir(parents=True)
    clusters, members = [], {}
    for c in range(k):
        shown = [2 * c, 2 * c + 1]
        clusters.append({"id": c, "size": 10 - c, "purity": [0.5, 0.9, None][c % 3], "majority": f"class{c}",
                         "random": shown, "nearest": shown[::-1]})
        for index in shown:
            name = f"v{index:06d}"
            (folder / "media" / f"{name}.jpg").write_bytes(b"\xff\xd8jpeg")
            (folder / "media" / f"{name}.wav").write_bytes(b"RIFFwave")
            members[str(index)] = {"path": f"clip_{index:02d}.mp4", "label": f"class{c}", "start": 0.5,
                                   "frames": f"media/{name}.jpg", "audio": f"media/{name}.wav"}
    points = [[i * 0.1, -i * 0.2, i, i % k, i % 2] for i in range(12)]
    gallery = {"schema": "xdc-gallery/1", "round": round_index, "classes": ["class0", "class1"],
               "clip": {"seconds": 0.5, "fps": 8, "sample_rate": 16000, "frames": 4},
               "spaces": {"video": {"k": k, "clusters": clusters, "map": {"method": "pca", "explained": [0.4, 0.2],
                                                                            "points": points}},
                          "audio": {"k": k, "clusters": clusters, "map": {"method": "pca", "explained": [0.3, 0.1],
                                                                            "points": points}}},
               "members": members}
    (folder / "gallery.json").write_text(json.dumps(gallery))


@pytest.fixture
def job(alice, team_a, dataset_a):
    job = submit_pretrain(alice, team_a, dataset_a)
    write_gallery(job.out_dir, 0)
    write_gallery(job.out_dir, 1, k=4)
    return job


def test_the_last_round_is_shown_with_every_cluster_and_its_members(client_a, job):
    page = client_a.get(f"/jobs/{job.pk}/gallery/")
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('data-testid="cluster-row"') == 4 and 'data-round="1"' in html
    assert html.count('data-testid="member"') == 8 and 'data-testid="cluster-map"' in html
    assert f"/jobs/{job.pk}/gallery/1/v000000.jpg" in html and "<audio controls" in html
    assert "cluster gallery (2 rounds)" in client_a.get(f"/jobs/{job.pk}/").content.decode()


def test_two_rounds_side_by_side_sorted_by_purity(client_a, job):
    page = client_a.get(f"/jobs/{job.pk}/gallery/", {"round": "0", "beside": "1", "sort": "purity",
                                                      "space": "audio", "view": "nearest", "colour": "label"})
    shown = page.context["shown"]
    assert [part["round"] for part in shown] == [0, 1] and {part["space"] for part in shown} == {"audio"}
    assert [c["purity"] for c in shown[0]["clusters"]] == [0.9, 0.5, None]
    assert [m.index for m in shown[0]["clusters"][0]["shown"]] == ["3", "2"]  # nearest first


def test_media_are_served_to_the_team_and_to_no_one_else(client_a, client, bob, job):
    image = client_a.get(f"/jobs/{job.pk}/gallery/0/v000001.jpg")
    assert image.status_code == 200 and image["Content-Type"] == "image/jpeg"
    assert b"".join(image.streaming_content) == b"\xff\xd8jpeg"
    assert client_a.get(f"/jobs/{job.pk}/gallery/0/v000001.wav")["Content-Type"] == "audio/wav"
    for name in ("gallery.json", "..%2F..%2Fconfig.json", "v000001.png", "v0000001.jpg", "v000099.jpg"):
        assert client_a.get(f"/jobs/{job.pk}/gallery/0/{name}").status_code == 404, name
    assert client_a.get(f"/jobs/{job.pk}/gallery/7/v000001.jpg").status_code == 404
    client.force_login(bob)
    assert client.get(f"/jobs/{job.pk}/gallery/0/v000001.jpg").status_code == 404
    assert client.get(f"/jobs/{job.pk}/gallery/").status_code == 404


def test_a_job_without_a_gallery_or_with_a_damaged_one_says_so(client_a, alice, team_a, dataset_a):
    job = submit_pretrain(alice, team_a, dataset_a, seed=4)
    assert 'data-testid="no-gallery"' in client_a.get(f"/jobs/{job.pk}/gallery/").content.decode()
    folder = Path(job.out_dir) / "gallery" / "round_000"
    folder.mkdir(parents=True)
    (folder / "gallery.json").write_text("{not json")
    page = client_a.get(f"/jobs/{job.pk}/gallery/", {"round": "0", "sort": "<script>", "space": "x" * 500})
    assert page.status_code == 200 and page.context["shown"] == []


def test_a_damaged_entry_or_a_linked_round_shows_nothing_rather_than_failing(client_a, alice, team_a, dataset_a,
                                                                             tmp_path):
    job = submit_pretrain(alice, team_a, dataset_a, seed=5)
    write_gallery(job.out_dir, 0)
    path = Path(job.out_dir) / "gallery" / "round_000" / "gallery.json"
    gallery = json.loads(path.read_text())
    gallery["spaces"]["video"]["map"]["points"][0] = [None, "x", 1, 0, 0]
    gallery["members"]["0"]["start"] = "abc"
    path.write_text(json.dumps(gallery))
    page = client_a.get(f"/jobs/{job.pk}/gallery/")
    assert page.status_code == 200 and page.context["shown"] == []
    outside = tmp_path / "elsewhere"
    write_gallery(str(outside), 0)
    linked = submit_pretrain(alice, team_a, dataset_a, seed=6)
    (Path(linked.out_dir) / "gallery").mkdir(parents=True)
    (Path(linked.out_dir) / "gallery" / "round_000").symlink_to(outside / "gallery" / "round_000")
    assert client_a.get(f"/jobs/{linked.pk}/gallery/0/v000001.jpg").status_code == 404
