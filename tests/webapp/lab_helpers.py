"""Helpers shared by the web site's tests (importable as `lab_helpers`: tests/webapp is on sys.path)."""

from __future__ import annotations

from pathlib import Path

from webapp.lab import services


def make_folder_dataset(root: Path, *, files: int = 6, classes: int = 2) -> Path:
    """A `folder` layout: empty .mp4 files (the layout reader never decodes) and a labels.csv."""
    root.mkdir(parents=True, exist_ok=True)
    rows = ["path,label"]
    for index in range(files):
        (root / f"clip_{index:02d}.mp4").write_bytes(b"")
        rows.append(f"clip_{index:02d}.mp4,class{index % classes}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def pretrain_config(dataset, **changes):
    """A tiny valid pretraining config on `dataset`, as a form or the API would send it."""
    from xdc.config import PRESETS, deep_merge

    cfg = deep_merge(PRESETS["tiny"], {"data": {"path": dataset.path, "layout": dataset.layout}})
    for key, value in changes.items():
        cfg = services.set_dotted(cfg, key.replace("__", "."), value)
    return cfg


def submit_pretrain(user, team, dataset, **kwargs):
    evaluations = kwargs.pop("evaluations", None)
    [job] = services.submit_jobs(user, team, "pretrain", [pretrain_config(dataset, **kwargs)], dataset=dataset,
                                 evaluations=evaluations)
    return job


def eval_record(*, benchmark="folder", protocol="linear", split=1, seed=0, top1=0.5, version=1, **extra):
    metrics = {"recall@1": top1} if protocol == "retrieval" else {"top1": top1, "top5": 1.0}
    return {"schema": "xdc-eval-result/1", "benchmark": benchmark, "split": split, "seed": seed,
            "protocol": {"name": protocol, "version": version, "params": {}}, "checkpoint": {"kind": "pretrained"},
            "metrics": metrics, **extra}


def run_to_success(job, record=None):
    assert services.claim_job(job.pk, worker="w1", task_id=f"t{job.pk}") is not None
    return services.finish_job(job.pk, record=record)
