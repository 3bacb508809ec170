"""Team separation beyond the site's pages: what a job may read is its own team's. A dataset is registered only
from the lab's data roots or the team's own (symlinks resolved, never another team's); a job reads registered
datasets of its team only; a checkpoint is a baseline, a succeeded pretraining of the team or a file under the
team's checkpoint roots, never a free path into another team's artifacts."""

from __future__ import annotations

import zipfile

import pytest
from lab_helpers import make_folder_dataset, pretrain_config, submit_pretrain

from webapp.lab import services
from webapp.lab.models import Job

pytestmark = pytest.mark.django_db


def succeeded(user, team, dataset) -> Job:
    job = submit_pretrain(user, team, dataset)
    services.claim_job(job.pk, worker="w", task_id="t")
    services.finish_job(job.pk)
    return Job.objects.get(pk=job.pk)


def evaluation(checkpoint, dataset, **extra):
    return {"checkpoint": checkpoint, "benchmark": "folder", "data": dataset.path, "protocol": "linear", **extra}


class TestRegistration:
    def test_a_folder_outside_every_data_root_is_refused(self, team_a, settings, tmp_path):
        outside = make_folder_dataset(tmp_path / "outside")
        settings.LAB_DATA_ROOTS = [tmp_path / "shared"]
        with pytest.raises(services.LabError) as caught:
            services.register_dataset(team=team_a, name="x", layout="folder", path=str(outside))
        assert "outside the folders team team-a may register" in caught.value.errors["path"][0]

    def test_a_symlink_inside_a_root_that_leads_out_is_refused(self, team_a, settings, tmp_path):
        outside = make_folder_dataset(tmp_path / "private")
        (tmp_path / "shared").mkdir()
        (tmp_path / "shared" / "link").symlink_to(outside)
        settings.LAB_DATA_ROOTS = [tmp_path / "shared"]
        with pytest.raises(services.LabError):
            services.register_dataset(team=team_a, name="x", layout="folder", path=str(tmp_path / "shared/link"))
        with pytest.raises(services.LabError):
            services.register_dataset(team=team_a, name="y", layout="folder",
                                      path=str(tmp_path / "shared" / ".." / "private"))

    def test_another_teams_root_is_theirs_even_under_a_shared_root(self, team_a, team_b, tmp_path):
        team_a.data_roots = str(tmp_path / "a-private")
        team_a.save()
        theirs = make_folder_dataset(tmp_path / "a-private" / "set")
        services.register_dataset(team=team_a, name="mine", layout="folder", path=str(theirs))
        with pytest.raises(services.LabError) as caught:
            services.register_dataset(team=team_b, name="stolen", layout="folder", path=str(theirs))
        assert "another team" in caught.value.errors["path"][0]

    def test_a_team_root_from_the_admin_admits_its_own_folders(self, team_a, settings, tmp_path):
        settings.LAB_DATA_ROOTS = []
        team_a.data_roots = f"relative/is/ignored\n{tmp_path / 'team-a'}\n"
        team_a.save()
        root = make_folder_dataset(tmp_path / "team-a" / "set")
        assert services.register_dataset(team=team_a, name="set", layout="folder", path=str(root)).files == 6

    def test_a_labels_file_pointing_outside_its_root_is_refused(self, team_a, tmp_path):
        make_folder_dataset(tmp_path / "other")
        root = make_folder_dataset(tmp_path / "mine")
        (root / "labels.csv").write_text("path,label\n../other/clip_00.mp4,a\nclip_01.mp4,b\n")
        with pytest.raises(services.LabError) as caught:
            services.register_dataset(team=team_a, name="x", layout="folder", path=str(root))
        assert "outside the dataset root" in caught.value.errors["path"][0]


class TestJobsReadTheirTeamsData:
    def test_a_pretraining_on_another_teams_folder_is_refused(self, alice, bob, team_b, dataset_a):
        with pytest.raises(services.LabError) as caught:
            services.submit_jobs(bob, team_b, "pretrain", [pretrain_config(dataset_a)])
        assert "no dataset of team team-b" in caught.value.errors["config.data.path"][0]
        assert Job.objects.count() == 0

    def test_data_path_follows_the_chosen_dataset(self, alice, team_a, dataset_a, tmp_path):
        other = make_folder_dataset(tmp_path / "unregistered")
        with pytest.raises(services.LabError) as caught:
            services.submit_jobs(alice, team_a, "pretrain", [pretrain_config(dataset_a, data__path=str(other))],
                                 dataset=dataset_a)
        assert "follows the chosen dataset" in caught.value.errors["config.data.path"][0]
        [job] = services.submit_jobs(alice, team_a, "pretrain", [pretrain_config(dataset_a, data__path="")],
                                     dataset=dataset_a)
        assert job.config["data"]["path"] == dataset_a.path and job.dataset == dataset_a

    def test_a_path_to_a_registered_dataset_names_it(self, alice, team_a, dataset_a):
        [job] = services.submit_jobs(alice, team_a, "pretrain", [pretrain_config(dataset_a)])
        assert job.dataset == dataset_a

    def test_an_evaluation_of_another_teams_data_is_refused(self, bob, team_b, dataset_a):
        with pytest.raises(services.LabError) as caught:
            services.submit_jobs(bob, team_b, "evaluate", [evaluation("random", dataset_a)])
        assert "config.data" in caught.value.errors

    def test_an_audio_set_under_a_video_benchmark_is_refused(self, alice, team_a, dataset_a):
        with pytest.raises(services.LabError) as caught:
            services.submit_jobs(alice, team_a, "evaluate", [evaluation("random", dataset_a, benchmark="ucf101")])
        assert "folder benchmark's layout, not ucf101's" in caught.value.errors["config.benchmark"][0]

    def test_supervised_data_of_another_team_is_refused(self, alice, bob, team_a, team_b, dataset_a, tmp_path):
        own = services.register_dataset(team=team_b, name="own", layout="folder",
                                        path=str(make_folder_dataset(tmp_path / "b")))
        cfg = evaluation("supervised", own, supervised_data=dataset_a.path)
        with pytest.raises(services.LabError) as caught:
            services.submit_jobs(bob, team_b, "evaluate", [cfg])
        assert "config.supervised_data" in caught.value.errors


class TestCheckpoints:
    def test_another_teams_artifact_path_is_refused(self, alice, bob, team_a, team_b, tmp_path):
        """The MLflow copy of A's model (a file artifact store anyone's worker can read) is no checkpoint for B."""
        artifact = tmp_path / "mlartifacts" / "1" / "abc" / "artifacts" / "checkpoints" / "final.pt"
        artifact.parent.mkdir(parents=True)
        with zipfile.ZipFile(artifact, "w") as handle:
            handle.writestr("final/data.pkl", b"")
        own = services.register_dataset(team=team_b, name="own", layout="folder",
                                        path=str(make_folder_dataset(tmp_path / "b")))
        with pytest.raises(services.LabError) as caught:
            services.submit_jobs(bob, team_b, "evaluate", [evaluation(str(artifact), own)])
        assert "neither a baseline" in caught.value.errors["config.checkpoint"][0]
        assert Job.objects.count() == 0

    def test_another_teams_job_is_refused_and_ones_own_becomes_the_parent(self, alice, bob, team_a, team_b,
                                                                           dataset_a, tmp_path):
        theirs = succeeded(alice, team_a, dataset_a)
        own = services.register_dataset(team=team_b, name="own", layout="folder",
                                        path=str(make_folder_dataset(tmp_path / "b")))
        with pytest.raises(services.LabError):
            services.submit_jobs(bob, team_b, "evaluate", [evaluation(theirs.final_checkpoint, own)])
        [child] = services.submit_jobs(alice, team_a, "evaluate", [evaluation(theirs.final_checkpoint, dataset_a)])
        assert child.parent == theirs

    def test_a_checkpoint_root_admits_xdc_files_only(self, alice, team_a, dataset_a, tmp_path):
        roots = tmp_path / "models"
        roots.mkdir()
        team_a.checkpoint_roots = str(roots)
        team_a.save()
        good, bad = roots / "external.pt", roots / "notes.pt"
        with zipfile.ZipFile(good, "w") as handle:
            handle.writestr("external/data.pkl", b"")
        bad.write_text("not a checkpoint")
        [job] = services.submit_jobs(alice, team_a, "evaluate", [evaluation(str(good), dataset_a)])
        assert job.parent is None and job.config["checkpoint"] == str(good)
        with pytest.raises(services.LabError) as caught:
            services.submit_jobs(alice, team_a, "evaluate", [evaluation(str(bad), dataset_a)])
        assert "not an xdc checkpoint" in caught.value.errors["config.checkpoint"][0]
