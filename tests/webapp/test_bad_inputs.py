"""The bad-input corpus: every input here must get a clear refusal (400, 401 or 404, a form error or a redirect),
never a 500 or a traceback, and must create nothing: no job, no dataset, no output folder. It runs on SQLite and,
in `make test`, again on PostgreSQL, whose refusals (NUL characters, bigint overflow, column lengths) differ.

Django's test client re-raises a view's exception, so any crash fails its case with the traceback.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lab_helpers import make_folder_dataset, pretrain_config, submit_pretrain

from webapp.lab import services
from webapp.lab.api import SUBMIT_FIELDS
from webapp.lab.models import ApiToken, Dataset, Job, hash_key

pytestmark = pytest.mark.django_db

BIG = 10**30
NUL, LONE = "\x00", "\ud800"


@pytest.fixture
def world(alice, bob, team_a, team_b, dataset_a, tmp_path):
    """Team A with a dataset, a queued job and a succeeded one; team B with a job; counts before the request."""
    queued = submit_pretrain(alice, team_a, dataset_a)
    done = submit_pretrain(alice, team_a, dataset_a, seed=1)
    services.claim_job(done.pk, worker="w", task_id="t")
    services.finish_job(done.pk)
    theirs_root = make_folder_dataset(tmp_path / "b-data")
    theirs = services.register_dataset(team=team_b, name="b-data", layout="folder", path=str(theirs_root))
    their_job = submit_pretrain(bob, team_b, theirs)
    return {"queued": queued, "done": Job.objects.get(pk=done.pk), "their_job": their_job, "theirs": theirs,
            "dataset": dataset_a, "jobs": Job.objects.count(), "datasets": Dataset.objects.count(), "tmp": tmp_path}


def unchanged(world) -> None:
    assert Job.objects.count() == world["jobs"], "a refused input created a job"
    assert Dataset.objects.count() == world["datasets"], "a refused input created a dataset"


def post_json(client, url, token, text: str):
    return client.post(url, data=text, content_type="application/json", HTTP_AUTHORIZATION=f"Token {token}")


def raw(body) -> str:
    return json.dumps(body, allow_nan=True)  # NaN and Infinity as a careless client sends them


# -- POST /api/jobs ------------------------------------------------------------------------------------------------
# Each case: (id, function of the world -> the body as JSON text, the error key expected).

def tiny(world, **changes) -> dict:
    return pretrain_config(world["dataset"], **changes)


def evaluation(world, **changes) -> dict:
    return {"checkpoint": "random", "benchmark": "folder", "data": world["dataset"].path, "protocol": "linear",
            **changes}


SUBMISSIONS = [
    # the body's own shape
    ("no-config", lambda w: raw({"dataset": "synth"}), "config"),
    ("misspelt-config", lambda w: raw({"confg": tiny(w), "dataset": "synth"}), "confg"),
    ("unknown-field", lambda w: raw({"config": tiny(w), "gpu_count": 2}), "gpu_count"),
    ("config-and-configs", lambda w: raw({"config": tiny(w), "configs": [tiny(w)]}), "config"),
    ("config-a-list", lambda w: raw({"config": [1, 2]}), "config"),
    ("config-a-string", lambda w: raw({"config": "rounds=2"}), "config"),
    ("config-null", lambda w: raw({"config": None}), "config"),
    ("configs-not-a-list", lambda w: raw({"configs": {"a": 1}}), "configs"),
    ("configs-of-numbers", lambda w: raw({"configs": [1, 2]}), "configs"),
    ("configs-empty", lambda w: raw({"configs": []}), "config"),
    ("body-a-list", lambda w: "[1, 2, 3]", "__all__"),
    ("body-a-string", lambda w: '"config"', "__all__"),
    ("body-a-number", lambda w: "42", "__all__"),
    ("body-not-json", lambda w: "{config: 1}", "__all__"),
    ("body-truncated", lambda w: '{"config": {"rounds": ', "__all__"),
    ("body-nested-deeply", lambda w: '{"config": ' + "[" * 100_000 + "]" * 100_000 + "}", "__all__"),
    ("config-nested-deeply", lambda w: raw({"config": {"data": {"path": {"a": {"b": {"c": {}}}}}}}),
     "config.data.path"),
    ("body-not-utf8", lambda w: b'{"config": {"run_name": "\xff\xfe"}}'.decode("latin-1"), None),
    # numbers that are not numbers, and values past the declared bounds and limits
    ("momentum-nan", lambda w: raw({"config": tiny(w, optim__momentum=float("nan"))}), "config.optim.momentum"),
    ("lr-infinity", lambda w: raw({"config": tiny(w, optim__lr=float("inf"))}), "config.optim.lr"),
    ("lr-minus-infinity", lambda w: raw({"config": tiny(w, optim__lr=float("-inf"))}), "config.optim.lr"),
    ("fps-nan-text", lambda w: raw({"config": tiny(w, data__fps="nan")}), "config.data.fps"),
    ("weight-decay-nan", lambda w: raw({"config": tiny(w, optim__weight_decay=float("nan"))}),
     "config.optim.weight_decay"),
    ("momentum-one", lambda w: raw({"config": tiny(w, optim__momentum=1.0)}), "config.optim.momentum"),
    ("gamma-zero", lambda w: raw({"config": tiny(w, optim__gamma=0)}), "config.optim.gamma"),
    ("rounds-1e30", lambda w: raw({"config": tiny(w, rounds=1e30)}), "config.rounds"),
    ("rounds-zero", lambda w: raw({"config": tiny(w, rounds=0)}), "config.rounds"),
    ("rounds-negative", lambda w: raw({"config": tiny(w, rounds=-3)}), "config.rounds"),
    ("rounds-fraction", lambda w: raw({"config": tiny(w, rounds=2.5)}), "config.rounds"),
    ("rounds-bool", lambda w: raw({"config": tiny(w, rounds=True)}), "config.rounds"),
    ("rounds-superscript", lambda w: raw({"config": tiny(w, rounds="²")}), "config.rounds"),
    ("rounds-arabic-digits", lambda w: raw({"config": tiny(w, rounds="٣")}), "config.rounds"),
    ("epochs-1e9", lambda w: raw({"config": tiny(w, epochs_per_round=10**9)}), "config.epochs_per_round"),
    ("batch-1e9", lambda w: raw({"config": tiny(w, batch_size=10**9)}), "config.batch_size"),
    ("video-width-1e6", lambda w: raw({"config": tiny(w, model__video_width=10**6)}), "config.model.video_width"),
    ("audio-width-zero", lambda w: raw({"config": tiny(w, model__audio_width=0)}), "config.model.audio_width"),
    ("workers-1e5", lambda w: raw({"config": tiny(w, data__num_workers=10**5)}), "config.data.num_workers"),
    ("k-1e9", lambda w: raw({"config": tiny(w, cluster__k_video=10**9)}), "config.cluster.k_video"),
    ("k-one", lambda w: raw({"config": tiny(w, cluster__k_audio=1)}), "config.cluster.k_audio"),
    ("k-huge-int", lambda w: raw({"config": tiny(w, cluster__k_joint=BIG)}), "config.cluster.k_joint"),
    ("crop-1e6", lambda w: raw({"config": tiny(w, data__crop_size=10**6, data__resize_short=10**6)}),
     "config.data.resize_short"),
    ("crop-above-short-side", lambda w: raw({"config": tiny(w, data__crop_size=64)}), "config.data.crop_size"),
    ("clip-frames-1e6", lambda w: raw({"config": tiny(w, data__clip_frames=10**6)}), "config.data.clip_frames"),
    ("fps-zero", lambda w: raw({"config": tiny(w, data__fps=0)}), "config.data.fps"),
    ("sample-rate-tiny", lambda w: raw({"config": tiny(w, data__sample_rate=8)}), "config.data.sample_rate"),
    ("hop-over-window", lambda w: raw({"config": tiny(w, data__hop_ms=50)}), "config.data.hop_ms"),
    ("pca-negative", lambda w: raw({"config": tiny(w, cluster__pca_dim=-1)}), "config.cluster.pca_dim"),
    ("iterations-1e9", lambda w: raw({"config": tiny(w, cluster__iterations=10**9)}), "config.cluster.iterations"),
    ("max-videos-negative", lambda w: raw({"config": tiny(w, data__max_videos=-1)}), "config.data.max_videos"),
    ("seed-negative", lambda w: raw({"config": tiny(w, seed=-1)}), "config.seed"),
    ("seed-2-32", lambda w: raw({"config": tiny(w, seed=2**32)}), "config.seed"),
    ("seed-2-70", lambda w: raw({"config": tiny(w, seed=2**70)}), "config.seed"),
    ("log-every-zero", lambda w: raw({"config": tiny(w, log_every=0)}), "config.log_every"),
    ("grad-clip-negative", lambda w: raw({"config": tiny(w, optim__grad_clip=-1)}), "config.optim.grad_clip"),
    # choices and text
    ("variant-unknown", lambda w: raw({"config": tiny(w, variant="zdc")}), "config.variant"),
    ("device-tpu", lambda w: raw({"config": tiny(w, device="tpu")}), "config.device"),
    ("precision-fp8", lambda w: raw({"config": tiny(w, precision="fp8")}), "config.precision"),
    ("optimizer-lion", lambda w: raw({"config": tiny(w, optim__name="lion")}), "config.optim.name"),
    ("schedule-unknown", lambda w: raw({"config": tiny(w, optim__schedule="poly")}), "config.optim.schedule"),
    ("video-input-unknown", lambda w: raw({"config": tiny(w, model__video_input="hsv")}),
     "config.model.video_input"),
    ("whiten-maybe", lambda w: raw({"config": tiny(w, cluster__whiten="maybe")}), "config.cluster.whiten"),
    ("run-name-1mb", lambda w: raw({"config": tiny(w, run_name="x" * 1_000_000)}), "config.run_name"),
    ("run-name-nul", lambda w: raw({"config": tiny(w, run_name=f"a{NUL}b")}), "config.run_name"),
    ("run-name-surrogate", lambda w: raw({"config": tiny(w, run_name=f"a{LONE}b")}), "config.run_name"),
    ("experiment-nul", lambda w: raw({"config": tiny(w, experiment=NUL)}), "config.experiment"),
    ("experiment-of-another-team", lambda w: raw({"config": tiny(w, experiment="lab-team-b")}), "config.experiment"),
    ("path-surrogate", lambda w: raw({"config": tiny(w, data__path=LONE)}), "config.data.path"),
    ("path-not-text", lambda w: raw({"config": tiny(w, data__path=["a", "b"])}), "config.data.path"),
    ("unknown-key", lambda w: raw({"config": tiny(w, cluster__k=4)}), "config.cluster.k"),
    ("unknown-section", lambda w: raw({"config": {**tiny(w), "train": {}}}), "config.train"),
    # data the job would read
    ("layout-unknown", lambda w: raw({"config": tiny(w, data__layout="kinetic")}), "config.data.layout"),
    ("layout-other-than-the-dataset", lambda w: raw({"config": tiny(w, data__layout="ucf101"), "dataset": "synth"}),
     "config.data.layout"),
    ("split-unknown", lambda w: raw({"config": tiny(w, data__split="val")}), "config.data.split"),
    ("fold-out-of-range", lambda w: raw({"config": tiny(w, data__fold=3)}), "config.data.fold"),
    ("fold-huge", lambda w: raw({"config": tiny(w, data__fold=BIG)}), "config.data.fold"),
    ("path-not-a-dataset", lambda w: raw({"config": tiny(w, data__path=str(w["tmp"]))}), "config.data.path"),
    ("path-missing", lambda w: raw({"config": tiny(w, data__path="/no/such/folder")}), "config.data.path"),
    ("path-empty", lambda w: raw({"config": tiny(w, data__path="")}), "config.data.path"),
    ("path-of-another-team", lambda w: raw({"config": tiny(w, data__path=w["theirs"].path)}), "config.data.path"),
    ("path-differs-from-dataset", lambda w: raw({"config": tiny(w, data__path=w["theirs"].path),
                                                 "dataset": "synth"}), "config.data.path"),
    ("path-dotdot", lambda w: raw({"config": tiny(w, data__path=w["dataset"].path + "/../b-data")}),
     "config.data.path"),
    # shapes that collide with what the lab injects
    ("data-a-string", lambda w: raw({"config": {"data": "x"}, "dataset": "synth"}), "config.data"),
    ("data-a-list", lambda w: raw({"config": {"data": [1]}, "dataset": "synth"}), "config.data"),
    ("cluster-a-number", lambda w: raw({"config": {**tiny(w), "cluster": 3}}), "config.cluster"),
    ("grid-on-a-section", lambda w: raw({"config": tiny(w), "grid": {"data": [1]}}), "grid"),
    ("grid-unknown-axis", lambda w: raw({"config": tiny(w), "grid": {"x.y": [1]}}), "grid"),
    ("grid-very-deep-axis", lambda w: raw({"config": tiny(w), "grid": {"a" + ".a" * 20_000: [1]}}), "grid"),
    ("grid-not-lists", lambda w: raw({"config": tiny(w), "grid": {"seed": 3}}), "grid"),
    ("grid-a-list", lambda w: raw({"config": tiny(w), "grid": [["seed", [1]]]}), "grid"),
    ("grid-too-large", lambda w: raw({"config": tiny(w), "grid": {"seed": list(range(65))}}), "grid"),
    ("grid-bad-value", lambda w: raw({"config": tiny(w), "grid": {"seed": [1, -1]}}), "config.seed"),
    # fields around the config
    ("kind-unknown", lambda w: raw({"config": tiny(w), "kind": "train"}), "kind"),
    ("kind-a-list", lambda w: raw({"config": tiny(w), "kind": ["pretrain"]}), "kind"),
    ("priority-ten", lambda w: raw({"config": tiny(w), "priority": 10}), "priority"),
    ("priority-negative", lambda w: raw({"config": tiny(w), "priority": -1}), "priority"),
    ("priority-text", lambda w: raw({"config": tiny(w), "priority": "5"}), "priority"),
    ("priority-bool", lambda w: raw({"config": tiny(w), "priority": True}), "priority"),
    ("priority-huge", lambda w: raw({"config": tiny(w), "priority": BIG}), "priority"),
    ("resource-tpu", lambda w: raw({"config": tiny(w), "resource": "tpu"}), "resource"),
    ("gpus-negative", lambda w: raw({"config": tiny(w), "gpus": -1}), "gpus"),
    ("gpus-65", lambda w: raw({"config": tiny(w), "gpus": 65}), "gpus"),
    ("gpus-text", lambda w: raw({"config": tiny(w), "gpus": "two"}), "gpus"),
    ("gpu-job-without-gpus", lambda w: raw({"config": tiny(w), "resource": "gpu", "gpus": 0}), "gpus"),
    ("nodes-nan", lambda w: raw({"config": tiny(w), "nodes": float("nan")}), "nodes"),
    ("nodes-huge", lambda w: raw({"config": tiny(w), "nodes": 10**30}), "nodes"),
    ("two-nodes-local", lambda w: raw({"config": tiny(w), "nodes": 2}), "nodes"),
    ("cpu-ranks-text", lambda w: raw({"config": tiny(w), "resource": "cpu", "cpu_ranks": "two"}), "cpu_ranks"),
    ("launcher-unknown", lambda w: raw({"config": tiny(w), "launcher": "kubernetes"}), "launcher"),
    ("launcher-list", lambda w: raw({"config": tiny(w), "launcher": ["slurm"]}), "launcher"),
    ("partition-nul", lambda w: raw({"config": tiny(w), "launcher": "slurm", "partition": "gpu\x00"}), "partition"),
    ("partition-unicode", lambda w: raw({"config": tiny(w), "launcher": "slurm", "partition": "gpü"}), "partition"),
    ("partition-sbatch-line", lambda w: raw({"config": tiny(w), "launcher": "slurm",
                                             "partition": "gpu\n#SBATCH --uid=0"}), "partition"),
    ("evaluation-on-two-ranks", lambda w: raw({"kind": "evaluate", "config": {}, "resource": "cpu",
                                               "cpu_ranks": 2}), "cpu_ranks"),
    ("name-too-long", lambda w: raw({"config": tiny(w), "name": "n" * 201}), "name"),
    ("name-nul", lambda w: raw({"config": tiny(w), "name": f"a{NUL}b"}), "name"),
    ("name-surrogate", lambda w: raw({"config": tiny(w), "name": f"a{LONE}"}), "name"),
    ("name-not-text", lambda w: raw({"config": tiny(w), "name": {"a": 1}}), "name"),
    ("team-unknown", lambda w: raw({"config": tiny(w), "team": "nobody"}), "team"),
    ("team-of-another", lambda w: raw({"config": tiny(w), "team": "team-b"}), "team"),
    ("team-a-number", lambda w: raw({"config": tiny(w), "team": 5}), "team"),
    ("team-a-list", lambda w: raw({"config": tiny(w), "team": ["team-a"]}), "team"),
    ("team-nul", lambda w: raw({"config": tiny(w), "team": NUL}), "team"),
    ("dataset-unknown-name", lambda w: raw({"config": tiny(w), "dataset": "abc"}), "dataset"),
    ("dataset-superscript", lambda w: raw({"config": tiny(w), "dataset": "²"}), "dataset"),
    ("dataset-huge-id", lambda w: raw({"config": tiny(w), "dataset": BIG}), "dataset"),
    ("dataset-huge-id-text", lambda w: raw({"config": tiny(w), "dataset": str(BIG)}), "dataset"),
    ("dataset-negative", lambda w: raw({"config": tiny(w), "dataset": -1}), "dataset"),
    ("dataset-a-list", lambda w: raw({"config": tiny(w), "dataset": [1]}), "dataset"),
    ("dataset-nul", lambda w: raw({"config": tiny(w), "dataset": NUL}), "dataset"),
    ("dataset-of-another-team", lambda w: raw({"config": tiny(w), "dataset": w["theirs"].pk}), "dataset"),
    ("evaluations-not-a-list", lambda w: raw({"config": tiny(w), "evaluations": {"dataset": 1}}), "evaluations"),
    ("evaluations-of-numbers", lambda w: raw({"config": tiny(w), "evaluations": [1]}), "evaluations"),
    ("evaluations-dataset-abc", lambda w: raw({"config": tiny(w), "evaluations": [
        {"dataset": "abc", "protocol": "linear"}]}), "evaluations"),
    ("evaluations-dataset-huge", lambda w: raw({"config": tiny(w), "evaluations": [
        {"dataset": BIG, "protocol": "linear"}]}), "evaluations"),
    ("evaluations-unknown-field", lambda w: raw({"config": tiny(w), "evaluations": [
        {"dataset": w["dataset"].pk, "protocol": "linear", "benchmark": "ucf101"}]}), "evaluations"),
    ("evaluations-protocol-unknown", lambda w: raw({"config": tiny(w), "evaluations": [
        {"dataset": w["dataset"].pk, "protocol": "knn"}]}), "evaluations"),
    ("evaluations-split-huge", lambda w: raw({"config": tiny(w), "evaluations": [
        {"dataset": w["dataset"].pk, "protocol": "linear", "split": BIG}]}), "evaluations"),
    ("evaluations-of-another-team", lambda w: raw({"config": tiny(w), "evaluations": [
        {"dataset": w["theirs"].pk, "protocol": "linear"}]}), "evaluations"),
    ("parent-abc", lambda w: raw({"kind": "evaluate", "config": evaluation(w), "parent": "abc"}), "parent"),
    ("parent-huge", lambda w: raw({"kind": "evaluate", "config": evaluation(w), "parent": BIG}), "parent"),
    ("parent-queued", lambda w: raw({"kind": "evaluate", "config": evaluation(w), "parent": w["queued"].pk}),
     "parent"),
    ("parent-of-another-team", lambda w: raw({"kind": "evaluate", "config": evaluation(w),
                                              "parent": w["their_job"].pk}), "parent"),
    ("parent-on-a-pretraining", lambda w: raw({"config": tiny(w), "parent": w["done"].pk}), "parent"),
    # evaluations
    ("evaluate-with-evaluations", lambda w: raw({"kind": "evaluate", "config": evaluation(w), "evaluations": [
        {"dataset": w["dataset"].pk, "protocol": "linear"}]}), "evaluations"),
    ("evaluate-benchmark-unknown", lambda w: raw({"kind": "evaluate", "config": evaluation(w, benchmark="kitti")}),
     "config.benchmark"),
    ("evaluate-benchmark-mismatch", lambda w: raw({"kind": "evaluate",
                                                   "config": evaluation(w, benchmark="esc50", protocol="svm")}),
     "config.benchmark"),
    ("evaluate-protocol-unknown", lambda w: raw({"kind": "evaluate", "config": evaluation(w, protocol="knn")}),
     "config.protocol"),
    ("evaluate-svm-on-video", lambda w: raw({"kind": "evaluate", "config": evaluation(w, protocol="svm")}),
     "config.protocol"),
    ("evaluate-version-unknown", lambda w: raw({"kind": "evaluate", "config": evaluation(w, version=99)}),
     "config.protocol"),
    ("evaluate-version-negative", lambda w: raw({"kind": "evaluate", "config": evaluation(w, version=-1)}),
     "config.version"),
    ("evaluate-preset-unknown", lambda w: raw({"kind": "evaluate", "config": evaluation(w, preset="huge")}),
     "config.preset"),
    ("evaluate-width-1e6", lambda w: raw({"kind": "evaluate", "config": evaluation(w, width=10**6)}),
     "config.width"),
    ("evaluate-workers-1e6", lambda w: raw({"kind": "evaluate", "config": evaluation(w, workers=10**6)}),
     "config.workers"),
    ("evaluate-seed-huge", lambda w: raw({"kind": "evaluate", "config": evaluation(w, seed=BIG)}), "config.seed"),
    ("evaluate-split-nan", lambda w: raw({"kind": "evaluate", "config": evaluation(w, split=float("nan"))}),
     "config.split"),
    ("evaluate-checkpoint-empty", lambda w: raw({"kind": "evaluate", "config": evaluation(w, checkpoint="")}),
     "config.checkpoint"),
    ("evaluate-checkpoint-free-path", lambda w: raw({"kind": "evaluate",
                                                     "config": evaluation(w, checkpoint="/etc/passwd")}),
     "config.checkpoint"),
    ("evaluate-checkpoint-another-team", lambda w: raw({"kind": "evaluate", "config": evaluation(
        w, checkpoint=w["their_job"].final_checkpoint)}), "config.checkpoint"),
    ("evaluate-checkpoint-a-queued-job", lambda w: raw({"kind": "evaluate", "config": evaluation(
        w, checkpoint=w["queued"].final_checkpoint)}), "config.checkpoint"),
    ("evaluate-data-another-team", lambda w: raw({"kind": "evaluate", "config": evaluation(
        w, data=w["theirs"].path)}), "config.data"),
    ("evaluate-data-missing", lambda w: raw({"kind": "evaluate", "config": evaluation(w, data="")}), "config.data"),
    ("evaluate-supervised-data-another-team", lambda w: raw({"kind": "evaluate", "config": evaluation(
        w, checkpoint="supervised", supervised_data=w["theirs"].path)}), "config.supervised_data"),
    ("evaluate-shuffle-maybe", lambda w: raw({"kind": "evaluate", "config": evaluation(
        w, shuffle_train_labels="maybe")}), "config.shuffle_train_labels"),
]


@pytest.mark.parametrize("case, body, key", SUBMISSIONS, ids=[case[0] for case in SUBMISSIONS])
def test_a_bad_submission_is_400_naming_the_field_and_creates_nothing(client, token_a, world, case, body, key):
    response = post_json(client, "/api/jobs", token_a, body(world))
    assert response.status_code == 400, response.content[:500]
    errors = response.json()["errors"]
    assert key is None or key in errors, errors
    assert all(isinstance(m, str) and m for messages in errors.values() for m in messages)
    unchanged(world)
    assert not any((world["tmp"] / "runs").glob("*/job-*")), "a refused job got an output folder"


# -- POST /api/datasets --------------------------------------------------------------------------------------------

def ucf_tree(root, *, empty_test: bool = False):
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("1 A\n2 B\n")
    for fold in (1, 2, 3):
        (lists / f"trainlist0{fold}.txt").write_text("A/v_A_g01_c01.avi 1\nB/v_B_g01_c01.avi 2\n")
        (lists / f"testlist0{fold}.txt").write_text("" if empty_test and fold == 1 else "A/v_A_g02_c01.avi\n")
    for name in ("A/v_A_g01_c01.avi", "B/v_B_g01_c01.avi", "A/v_A_g02_c01.avi"):
        (root / "UCF-101" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "UCF-101" / name).write_bytes(b"")
    return root


def hmdb_without_split_2(root):
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for fold in (1, 3):
        (splits / f"brush_hair_test_split{fold}.txt").write_text("a.avi 1\nb.avi 2\n")
    (root / "hmdb51" / "brush_hair").mkdir(parents=True)
    for name in ("a.avi", "b.avi"):
        (root / "hmdb51" / "brush_hair" / name).write_bytes(b"")
    return root


def labels_outside(root):
    make_folder_dataset(root.parent / "neighbour")
    make_folder_dataset(root)
    (root / "labels.csv").write_text("path,label\n../neighbour/clip_00.mp4,a\nclip_00.mp4,b\n")
    return root


REGISTRATIONS = [
    ("name-empty", lambda w: {"name": "", "layout": "folder", "path": str(make_folder_dataset(w["tmp"] / "d"))},
     "name"),
    ("name-blank", lambda w: {"name": "   ", "layout": "folder", "path": str(make_folder_dataset(w["tmp"] / "d"))},
     "name"),
    ("name-too-long", lambda w: {"name": "n" * 101, "layout": "folder",
                                 "path": str(make_folder_dataset(w["tmp"] / "d"))}, "name"),
    ("name-nul", lambda w: {"name": f"a{NUL}", "layout": "folder", "path": str(make_folder_dataset(w["tmp"] / "d"))},
     "name"),
    ("name-surrogate", lambda w: {"name": LONE, "layout": "folder",
                                  "path": str(make_folder_dataset(w["tmp"] / "d"))}, "name"),
    ("name-taken", lambda w: {"name": "synth", "layout": "folder", "path": str(make_folder_dataset(w["tmp"] / "d"))},
     "name"),
    ("layout-unknown", lambda w: {"name": "x", "layout": "kinetic", "path": str(w["tmp"])}, "layout"),
    ("path-empty", lambda w: {"name": "x", "layout": "folder", "path": ""}, "path"),
    ("path-relative", lambda w: {"name": "x", "layout": "folder", "path": "synth"}, "path"),
    ("path-home", lambda w: {"name": "x", "layout": "folder", "path": "~"}, "path"),
    ("path-root", lambda w: {"name": "x", "layout": "folder", "path": "/"}, "path"),
    ("path-etc", lambda w: {"name": "x", "layout": "folder", "path": "/etc"}, "path"),
    ("path-dotdot-out-of-the-root", lambda w: {"name": "x", "layout": "folder", "path": str(w["tmp"] / "..")},
     "path"),
    ("path-nul", lambda w: {"name": "x", "layout": "folder", "path": f"{w['tmp']}{NUL}"}, "path"),
    ("path-too-long", lambda w: {"name": "x", "layout": "folder", "path": "/" + "a" * 5000}, "path"),
    ("path-missing", lambda w: {"name": "x", "layout": "folder", "path": str(w["tmp"] / "nope")}, "path"),
    ("path-a-file", lambda w: {"name": "x", "layout": "folder",
                               "path": str(make_folder_dataset(w["tmp"] / "d") / "labels.csv")}, "path"),
    ("path-no-media", lambda w: {"name": "x", "layout": "folder", "path": str((w["tmp"] / "empty").resolve())
                                 if (w["tmp"] / "empty").mkdir() is None else ""}, "path"),
    ("labels-outside-the-root", lambda w: {"name": "x", "layout": "folder",
                                           "path": str(labels_outside(w["tmp"] / "lab"))}, "path"),
    ("ucf-empty-testlist01", lambda w: {"name": "x", "layout": "ucf101",
                                        "path": str(ucf_tree(w["tmp"] / "ucf", empty_test=True))}, "path"),
    ("hmdb-missing-split-2", lambda w: {"name": "x", "layout": "hmdb51",
                                        "path": str(hmdb_without_split_2(w["tmp"] / "hmdb"))}, "path"),
    ("folder-as-ucf101", lambda w: {"name": "x", "layout": "ucf101",
                                    "path": str(make_folder_dataset(w["tmp"] / "d"))}, "path"),
    ("another-teams-folder", lambda w: {"name": "x", "layout": "folder", "path": w["theirs"].path}, None),
    ("team-of-another", lambda w: {"team": "team-b", "name": "x", "layout": "folder",
                                   "path": str(make_folder_dataset(w["tmp"] / "d"))}, "team"),
    ("path-not-text", lambda w: {"name": "x", "layout": "folder", "path": ["/tmp"]}, "path"),
]


@pytest.mark.parametrize("case, body, key", REGISTRATIONS, ids=[case[0] for case in REGISTRATIONS])
def test_a_bad_registration_is_400_and_registers_nothing(client, token_a, world, case, body, key):
    if case == "another-teams-folder":
        world["theirs"].team.data_roots = str(world["tmp"] / "b-data")  # B's own root, under the shared one
        world["theirs"].team.save()
    response = post_json(client, "/api/datasets", token_a, raw(body(world)))
    assert response.status_code == 400, response.content[:500]
    assert key is None or key in response.json()["errors"], response.json()
    unchanged(world)


# -- query strings, URLs and headers -------------------------------------------------------------------------------

QUERIES = [
    ("/api/jobs?ids=%C2%B2", 200), (f"/api/jobs?ids={BIG}", 200), ("/api/jobs?ids=-1,abc,,", 200),
    ("/api/jobs?status=%00", 200), ("/api/jobs?variant=%00", 200), ("/api/jobs?user=%00", 200),
    ("/api/jobs?kind=%00", 200), ("/api/jobs?status=%ED%A0%80", 200), ("/api/jobs?user=" + "u" * 5000, 200),
    ("/api/leaderboard?dataset=%C2%B2", 200), (f"/api/leaderboard?dataset={BIG}", 200),
    ("/api/leaderboard?team=%00", 404), ("/api/leaderboard?team=nobody", 404), ("/api/leaderboard?team=team-b", 404),
    (f"/api/jobs/{BIG}", 404), (f"/jobs/{BIG}/", 404), (f"/datasets/{BIG}/", 404), (f"/jobs/{BIG}/clone/", 404),
    ("/jobs/?status=%00&variant=%00&user=%00&kind=%00", 200), (f"/compare/?ids={BIG}&ids=%C2%B2", 200),
    (f"/compare/?id_list={BIG},abc,%00", 200), ("/leaderboard/?dataset=%C2%B2", 200),
    (f"/leaderboard/?dataset={BIG}", 200), ("/leaderboard/?variant=%00", 200),
    ("/jobs/new/pretrain/?clone=abc", 404), ("/jobs/new/pretrain/?clone=%C2%B2", 404),
    (f"/jobs/new/pretrain/?clone={BIG}", 404), (f"/jobs/new/evaluate/?clone={BIG}", 404),
]


@pytest.mark.parametrize("url, status", QUERIES, ids=[q[0][:60] for q in QUERIES])
def test_a_bad_query_is_answered_without_a_crash(client_a, world, url, status):
    response = client_a.get(url)
    assert response.status_code == status, response.content[:300]
    unchanged(world)


AUTHORIZATIONS = [f"Token {NUL}", f"Token abc{NUL}def", "Token " + "a" * 10_000, "Token ²", "Token", "Bearer x",
                  "Token " + "0" * 40, f"Token {'a' * 39}{NUL}", "Token \ud800".encode("utf-8", "surrogatepass")
                  .decode("latin-1")]


@pytest.mark.parametrize("header", AUTHORIZATIONS, ids=[f"auth-{i}" for i in range(len(AUTHORIZATIONS))])
def test_a_bad_authorization_header_is_401(client, world, header):
    for method in (client.get, client.post):
        response = method("/api/jobs", HTTP_AUTHORIZATION=header)
        assert response.status_code == 401
    unchanged(world)


@pytest.mark.parametrize("team", ["abc", str(BIG), "²", "", NUL, "-1"])
def test_a_bad_team_switch_redirects_and_changes_nothing(client_a, world, team):
    response = client_a.post("/team/", {"team": team, "next": "/jobs/"})
    assert response.status_code == 302
    assert "team_id" not in client_a.session


# -- the submission forms ------------------------------------------------------------------------------------------

def pretrain_form(world, **changes):
    changes = {_eval_field(world, key): value for key, value in changes.items()}
    return {"team": world["dataset"].team.pk, "dataset": world["dataset"].pk, "preset": "tiny", "variant": ["xdc"],
            "k": "", "seed": "0", "priority": 5, "resource": "cpu", "gpus": 0, **changes}


def _eval_field(world, name):
    """'eval_DATASET' is the form's protocol boxes of the world's dataset ('eval_<its id>')."""
    return f"eval_{world['dataset'].pk}" if name == "eval_DATASET" else name


PRETRAIN_FORMS = [
    ("k-one", {"k": "1"}, "k"), ("k-superscript", {"k": "²"}, "k"), ("k-huge", {"k": "1000000000"}, "k"),
    ("k-text", {"k": "many"}, "k"), ("seed-negative", {"seed": "-1"}, "seed"), ("seed-text", {"seed": "abc"}, "seed"),
    ("seed-range-too-long", {"seed": "1-100000"}, "seed"), ("seed-huge", {"seed": str(2**32)}, "seed"),
    ("seed-empty", {"seed": ""}, "seed"), ("rounds-zero", {"rounds": "0"}, "rounds"),
    ("rounds-over-the-limit", {"rounds": "100000"}, "rounds"), ("rounds-text", {"rounds": "ten"}, "rounds"),
    ("lr-nan", {"lr": "nan"}, "lr"), ("lr-inf", {"lr": "inf"}, "lr"), ("lr-zero", {"lr": "0"}, "lr"),
    ("fps-nan", {"fps": "nan"}, "fps"), ("crop-huge", {"crop_size": "1000000"}, "crop_size"),
    ("clip-frames-zero", {"clip_frames": "0"}, "clip_frames"),
    ("batch-over-the-limit", {"batch_size": "1000000"}, "batch_size"),
    ("overrides-section-a-value", {"overrides": "data=x"}, None),
    ("overrides-momentum-nan", {"overrides": "optim.momentum=nan"}, "overrides"),
    ("overrides-no-equals", {"overrides": "optim.lr"}, "overrides"),
    ("overrides-unknown-key", {"overrides": "optim.beta=0.9"}, "overrides"),
    ("overrides-other-data", {"overrides": "data.path=/etc"}, "dataset"),
    ("overrides-nul", {"overrides": f"run_name=a{NUL}b"}, None),
    ("base-config-a-list", {"base_config": "[]", "preset": "clone"}, "base_config"),
    ("base-config-not-json", {"base_config": "{", "preset": "clone"}, "base_config"),
    ("base-config-momentum-nan", {"base_config": '{"optim": {"momentum": NaN}}', "preset": "clone"}, None),
    ("preset-unknown", {"preset": "huge"}, "preset"), ("variant-unknown", {"variant": ["zdc"]}, "variant"),
    ("team-text", {"team": "abc"}, "team"), ("team-huge", {"team": str(BIG)}, "team"),
    ("dataset-text", {"dataset": "abc"}, "dataset"), ("dataset-huge", {"dataset": str(BIG)}, "dataset"),
    ("name-nul", {"name": f"a{NUL}b"}, "name"), ("name-too-long", {"name": "n" * 300}, "name"),
    ("priority-ten", {"priority": "10"}, "priority"), ("gpus-text", {"gpus": "two"}, "gpus"),
    ("eval-splits-text", {"eval_splits": "x", "eval_DATASET": ["linear"]}, "eval_splits"),
    ("eval-protocol-not-offered", {"eval_DATASET": ["svm"]}, "eval_DATASET"),
    ("eval-preset-unknown", {"eval_DATASET": ["linear"], "eval_preset": "huge"}, "eval_preset"),
]


@pytest.mark.parametrize("case, changes, field", PRETRAIN_FORMS, ids=[case[0] for case in PRETRAIN_FORMS])
def test_a_bad_pretraining_form_is_shown_again_with_the_error(client_a, world, case, changes, field):
    response = client_a.post("/jobs/new/pretrain/", pretrain_form(world, **changes))
    assert response.status_code == 400, response.content[:300]
    errors = response.context["form"].errors
    assert errors and (field is None or _eval_field(world, field) in errors), errors
    unchanged(world)


EVALUATE_FORMS = [
    ("checkpoint-free-choice", {"checkpoint": "/etc/passwd"}, "checkpoint"),
    ("checkpoint-job-abc", {"checkpoint": "job:abc"}, "checkpoint"),
    ("split-text", {"split": "x"}, "split"), ("split-huge", {"split": str(BIG)}, "split"),
    ("split-out-of-range", {"split": "7"}, "split"), ("seed-superscript", {"seed": "²"}, "seed"),
    ("seed-huge", {"seed": str(BIG)}, "seed"), ("protocol-unknown", {"protocol": ["knn"]}, "protocol"),
    ("protocol-svm-on-video", {"protocol": ["svm"]}, "protocol"), ("preset-unknown", {"preset": "huge"}, "preset"),
    ("supervised-without-data", {"checkpoint": "supervised"}, "supervised_data"),
    ("dataset-text", {"dataset": "abc"}, "dataset"),
]


@pytest.mark.parametrize("case, changes, field", EVALUATE_FORMS, ids=[case[0] for case in EVALUATE_FORMS])
def test_a_bad_evaluation_form_is_shown_again_with_the_error(client_a, world, case, changes, field):
    post = {"team": world["dataset"].team.pk, "checkpoint": "random", "dataset": world["dataset"].pk, "split": "1",
            "protocol": ["linear"], "seed": "0", "priority": 5, "resource": "cpu", "gpus": 0, **changes}
    response = client_a.post("/jobs/new/evaluate/", post)
    assert response.status_code == 400, response.content[:300]
    errors = response.context["form"].errors
    assert errors and (field is None or field in errors), errors
    unchanged(world)


def test_a_valid_token_still_gets_in(client, token_a, world):
    """The header checks refuse junk, not keys: the corpus above would pass trivially if every request were 401."""
    assert ApiToken.objects.filter(key_hash=hash_key(token_a)).exists()
    assert client.get("/api/jobs", HTTP_AUTHORIZATION=f"Token {token_a}").status_code == 200


# -- fuzzing the submission API ------------------------------------------------------------------------------------

_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats()
            | st.text(max_size=12) | st.sampled_from(["synth", "team-a", "pretrain", "evaluate", "gpu", NUL, "²"]))
_trees = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(["data", "path", "seed", "rounds", "cluster", "k_video",
                                                         "dataset", "protocol"]) | st.text(max_size=6),
                                        inner, max_size=4), max_leaves=20)
_bodies = st.dictionaries(st.sampled_from(sorted(SUBMIT_FIELDS)) | st.text(max_size=6), _trees, max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies)
def test_any_json_body_is_201_or_400_and_only_201_creates(client, token_a, dataset_a, body):
    before = Job.objects.count()
    response = post_json(client, "/api/jobs", token_a, raw(body))
    assert response.status_code in (201, 400), response.content[:300]
    created = Job.objects.count() - before
    assert (created > 0) == (response.status_code == 201)
