"""What an attempt tells the job's log from what its run tracks (the whole attempt runs under real workers in
tests/workers/test_tasks.py)."""

from __future__ import annotations

import logging

from xdc.attempt import Narrator, data_line, fit_line, round_line
from xdc.tracking import NullTracker


def test_a_rounds_line_says_how_the_clusters_are_used_and_what_they_follow():
    metrics = {"cluster/nonempty_video": 15.0, "cluster/largest_share_video": 0.094, "cluster/nmi_labels_video": 0.1,
               "cluster/stability_video": 0.62, "cluster/nonempty_audio": 16.0, "cluster/largest_share_audio": 0.08,
               "cluster/nmi_video_audio": 0.41, "cluster/extract_failed": 2.0}

    line = round_line(metrics, 1, 4, {"k_video": 16, "k_audio": 16})

    assert line == ("round 2/4 clusters: video 15/16 used (largest 9%, NMI with labels 0.10, with last round 0.62), "
                    "audio 16/16 used (largest 8%); NMI video-audio 0.41; 2 videos gave no features")


def test_a_rounds_fit_line_says_how_well_each_encoder_followed_its_targets(caplog):
    metrics = {"cluster/fit_video_from_audio": 0.312, "cluster/fit_audio_from_video": 0.58}
    assert fit_line(metrics, 1, 4) == ("round 2/4 fit of the targets (top-1, last epoch): audio←video 0.58, "
                                       "video←audio 0.31")
    with caplog.at_level(logging.INFO, logger="xdc.attempt"):
        Narrator(NullTracker(), {"rounds": 4}).log_metrics(metrics, step=1)
    assert [record.getMessage() for record in caplog.records] == [fit_line(metrics, 1, 4)]  # no clusters line
    # On labelled data, beside each fit, what a perfect class recogniser would fit on the same targets.
    metrics |= {"cluster/ceiling_video_from_audio": 0.301, "cluster/ceiling_audio_from_video": 0.17}
    assert fit_line(metrics, 1, 4) == ("round 2/4 fit of the targets (top-1, last epoch; of what a class "
                                       "recogniser would fit): audio←video 0.58 of 0.17, video←audio 0.31 of 0.30")


def test_the_data_line_counts_the_skipped_files_by_reason():
    assert data_line({"data/usable": 478, "data/skipped_undecodable": 1, "data/skipped_no_audio": 1}) == (
        "data: 478 usable videos; skipped 2 (1 no_audio, 1 undecodable), listed in skipped_files.tsv")
    assert data_line({"data/usable": 8, "data/skipped_too_short": 0}) == "data: 8 usable videos"


def test_the_narrator_passes_everything_on_and_logs_an_epochs_end_with_its_eta(caplog):
    inner = NullTracker()
    narrator = Narrator(inner, {"rounds": 2, "cluster": {"k_video": 4}})
    reported = []
    progress = narrator.progress(lambda *args: reported.append(args))

    progress(0.5, 150.0, "round 1, epoch 2, step 40, loss 2.731")
    with caplog.at_level(logging.INFO, logger="xdc.attempt"):
        narrator.log_metrics({"train/epoch_clips_per_s": 52.34}, step=40)
        narrator.finish("FINISHED")

    assert reported == [(0.5, 150.0, "round 1, epoch 2, step 40, loss 2.731")]
    assert inner.metrics == {"train/epoch_clips_per_s": [(40, 52.34)]} and inner.status == "FINISHED"
    assert caplog.messages == ["round 1, epoch 2, step 40, loss 2.731: epoch done, 52.3 clips/s, about 2 min left",
                               "finished"]
