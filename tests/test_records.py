"""Typed records and the work folders earlier launchers wrote.

`fixtures/workdir-v0` is a work folder in the layout written before records carried a schema version (a pipeline
run on the process backend with its tuning run, trials, job and endpoints; a SageMaker tuning run; an endpoint on
SageMaker); its `lineage-*.txt` files are what that launcher's `launcher lineage` printed for it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from launcher.cli import main
from launcher.errors import LauncherError
from launcher.records import SCHEMA_VERSION, Endpoint, LoopRun, RecordStore, TrainingJob, TuningRun

FIXTURE = Path(__file__).parent / "fixtures" / "workdir-v0"
KINDS = {kind.kind: kind for kind in (TrainingJob, Endpoint, TuningRun, LoopRun)}


@pytest.fixture
def old_workdir(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURE, tmp_path / "work"))


def fixture_records() -> list[tuple[type, Path]]:
    return [(KINDS[path.parent.name], path) for path in sorted((FIXTURE / "records").glob("*/*.json"))]


@pytest.mark.parametrize(("kind", "path"), fixture_records(), ids=lambda value: getattr(value, "stem", ""))
def test_an_old_record_loads_and_keeps_every_field(kind: type, path: Path, old_workdir: Path):
    records = RecordStore(old_workdir / "records")
    old = json.loads(path.read_text())
    record = records.load(kind, path.stem)
    assert isinstance(record, kind) and record.name == old["name"]
    for key, value in old.items():
        assert getattr(record, key, record.extra.get(key)) == value, key

    records.save(record)  # written back in today's layout, nothing lost
    saved = json.loads(records.path(kind, path.stem).read_text())
    assert saved["schema"] == SCHEMA_VERSION
    assert {key: saved[key] for key in old} == old


def test_an_old_tuning_run_without_a_status_gets_one(old_workdir: Path):
    records = RecordStore(old_workdir / "records")
    assert "status" not in json.loads((FIXTURE / "records" / "tuning" / "r1-tune.json").read_text())
    assert records.load(TuningRun, "r1-tune").status == "Completed"  # it has a best trial


@pytest.mark.parametrize("name", ["r1", "sm-endpoint-1", "imgclf-hpo-1"])
def test_lineage_of_an_old_work_folder_prints_what_it_printed(
    name: str, old_workdir: Path, capsys: pytest.CaptureFixture
):
    assert main(["--workdir", str(old_workdir), "lineage", name]) == 0
    assert capsys.readouterr().out == (FIXTURE / f"lineage-{name}.txt").read_text()


def test_a_record_from_a_newer_launcher_is_refused_by_name(tmp_path: Path):
    records = RecordStore(tmp_path / "records")
    records.save(TrainingJob(name="j1", backend="process"))
    path = records.path(TrainingJob, "j1")
    path.write_text(json.dumps({**json.loads(path.read_text()), "schema": SCHEMA_VERSION + 1}))
    with pytest.raises(LauncherError, match=rf"j1.*layout {SCHEMA_VERSION + 1}.*update the launcher"):
        records.load(TrainingJob, "j1")


def test_a_record_that_is_not_json_is_named(tmp_path: Path):
    records = RecordStore(tmp_path / "records")
    records.path(Endpoint, "e1").parent.mkdir(parents=True)
    records.path(Endpoint, "e1").write_text("{not json")
    with pytest.raises(LauncherError, match=r"e1\.json is not JSON"):
        records.load(Endpoint, "e1")


def test_find_and_names_in_the_order_records_were_written(tmp_path: Path):
    records = RecordStore(tmp_path / "records")
    for age, (name, status) in enumerate((("c", "InService"), ("b", "Deleted"), ("a", "InService"))):
        path = records.save(Endpoint(name=name, backend="process", status=status))
        os.utime(path, (1_000_000 + age, 1_000_000 + age))  # written a second apart
    assert records.names(Endpoint) == ["c", "b", "a"]
    assert [e.name for e in records.find(Endpoint, status="InService")] == ["c", "a"]
    with pytest.raises(LauncherError, match=r"no endpoint named 'd'.*most recent: c, b, a"):
        records.load(Endpoint, "d")
