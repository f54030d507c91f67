"""launcher.backends.sagemaker.tuning against AWS clients answered by botocore's Stubber (see
test_launcher_sagemaker.py).

Covered: the CreateHyperParameterTuningJob request launcher.backends.sagemaker.api builds from a TuningSpec
(strategy, objective, limits, ranges, early stopping, static hyperparameters, metric definitions, image, warm
start, Hyperband's resource), validated against SageMaker's service model; the values the container will decode;
following the job through DescribeHyperParameterTuningJob; and the record of its best training job.
Not covered: whether SageMaker accepts the job and how it picks trials.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import re
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from test_launcher_sagemaker import BUCKET, IMAGE, REGION, ROLE, StubbedAWS, stub_aws

from imgclf_contract import metrics
from launcher import contract, tracking
from launcher.backends import TrainingSpec
from launcher.backends.sagemaker import SageMakerOptions
from launcher.backends.sagemaker.tuning import tune_on_sagemaker
from launcher.errors import LauncherError
from launcher.records import RecordStore, TrainingJob, TuningRun
from launcher.tracking import Tracker
from launcher.tuning import TuningSpec

TUNING = "imgclf-hpo-1"
DATA = f"s3://{BUCKET}/shapes"
ARN = f"arn:aws:sagemaker:{REGION}:111122223333"
BEST = f"{TUNING}-004-1a2b3c4d"
# botocore answers timestamps as aware datetimes.
STARTED = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)
ENDED = datetime.datetime(2026, 3, 1, 12, 40, tzinfo=datetime.UTC)
STATIC = {"epochs": 3, "model_name": "resnet50", "pretrained": False}
# The original project's ranges, plus one integer and one string-valued range.
RANGES = {
    "learning_rate": {"type": "continuous", "min": 0.001, "max": 0.1, "scaling": "Logarithmic"},
    "batch_size": "CategoricalParameter([32, 64, 128, 256, 512])",
    "optimizer": {"type": "categorical", "values": ["sgd", "adam"]},
    "image_size": "IntegerParameter(64, 224)",
}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> StubbedAWS:
    return stub_aws(monkeypatch, tmp_path)


def tuning_spec(**fields: Any) -> TuningSpec:
    training = TrainingSpec(
        job_name=TUNING,
        channels={"training": DATA},
        hyperparameters=fields.pop("hyperparameters", STATIC),
        image=IMAGE,
        instance_type="ml.g4dn.xlarge",
        options=SageMakerOptions(role=ROLE, bucket=BUCKET, region=REGION),
    )
    return TuningSpec(**{"name": TUNING, "training": training, "ranges": RANGES, "max_jobs": 6, "max_parallel_jobs": 2,
                         **fields})  # fmt: skip


def tuning_description(status: str, counters: dict[str, int], **fields: Any) -> dict[str, Any]:
    """A DescribeHyperParameterTuningJob answer."""
    return {
        "HyperParameterTuningJobName": TUNING,
        "HyperParameterTuningJobArn": f"{ARN}:hyper-parameter-tuning-job/{TUNING}",
        "HyperParameterTuningJobConfig": {"Strategy": "Bayesian", "ResourceLimits": {"MaxParallelTrainingJobs": 2}},
        "HyperParameterTuningJobStatus": status,
        "CreationTime": 1_700_000_000,
        "TrainingJobStatusCounters": counters,
        "ObjectiveStatusCounters": {"Succeeded": counters.get("Completed", 0), "Pending": 0, "Failed": 0},
        **fields,
    }


BEST_SUMMARY = {
    "TrainingJobName": BEST,
    "TrainingJobArn": f"{ARN}:training-job/{BEST}",
    "CreationTime": STARTED,
    "TrainingJobStatus": "Completed",
    # As SageMaker reports them: what it passed to the trial, JSON-encoded by us for categorical values.
    "TunedHyperParameters": {
        "learning_rate": "0.03087708635920261",
        "batch_size": "128",
        "optimizer": '"adam"',
        "image_size": "160",
    },
    "FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "valid loss", "Value": 0.41},
}


def trial_summary(number: int, status: str, learning_rate: float, objective: float | None) -> dict[str, Any]:
    """One ListTrainingJobsForHyperParameterTuningJob entry."""
    name = f"{TUNING}-{number:03d}-1a2b3c4d"
    summary = {
        "TrainingJobName": name,
        "TrainingJobArn": f"{ARN}:training-job/{name}",
        "CreationTime": STARTED + datetime.timedelta(minutes=number),
        "TrainingStartTime": STARTED + datetime.timedelta(minutes=number, seconds=30),
        "TrainingEndTime": STARTED + datetime.timedelta(minutes=number + 5),
        "TrainingJobStatus": status,
        "TunedHyperParameters": {**BEST_SUMMARY["TunedHyperParameters"], "learning_rate": str(learning_rate)},
    }
    if objective is not None:
        summary["FinalHyperParameterTuningJobObjectiveMetric"] = {"MetricName": "valid loss", "Value": objective}
    return summary


# Six trials, listed out of their creation order; the fourth is the best, the sixth failed before any metric.
TRIALS = [
    trial_summary(2, "Completed", 0.01, 0.62),
    trial_summary(1, "Completed", 0.002, 0.93),
    trial_summary(4, "Completed", 0.03087708635920261, 0.41),
    trial_summary(3, "Completed", 0.05, 0.55),
    trial_summary(6, "Failed", 0.09, None),
    trial_summary(5, "Completed", 0.07, 0.71),
]


def best_training_job() -> dict[str, Any]:
    """DescribeTrainingJob of the best trial: SageMaker's own keys among the hyperparameters."""
    hyperparameters = {
        **contract.encode_hyperparameters(STATIC),
        **BEST_SUMMARY["TunedHyperParameters"],
        "_tuning_objective_metric": '"valid loss"',
        "sagemaker_job_name": json.dumps(BEST),
    }
    artifacts = f"s3://{BUCKET}/imgclf/{BEST}/output"
    return {
        "TrainingJobName": BEST,
        "TrainingJobArn": f"{ARN}:training-job/{BEST}",
        "TuningJobArn": f"{ARN}:hyper-parameter-tuning-job/{TUNING}",
        "ModelArtifacts": {"S3ModelArtifacts": f"{artifacts}/model.tar.gz"},
        "TrainingJobStatus": "Completed",
        "SecondaryStatus": "Completed",
        "HyperParameters": hyperparameters,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "InputDataConfig": [{"ChannelName": "training", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": DATA, "S3DataDistributionType": "FullyReplicated"}}}],
        "ResourceConfig": {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
        "CreationTime": STARTED,
        "TrainingEndTime": ENDED,
        "FinalMetricDataList": [{"MetricName": "average test loss", "Value": 0.41},
                                {"MetricName": "test accuracy", "Value": 0.87}],
    }  # fmt: skip


def expect_tuning_job(aws: StubbedAWS) -> None:
    sagemaker = aws.stub("sagemaker")
    sagemaker.add_response(
        "create_hyper_parameter_tuning_job",
        {"HyperParameterTuningJobArn": f"{ARN}:hyper-parameter-tuning-job/{TUNING}"},
    )
    sagemaker.add_response("describe_hyper_parameter_tuning_job", tuning_description("InProgress", {"InProgress": 2}))
    sagemaker.add_response("describe_hyper_parameter_tuning_job", tuning_description("InProgress", {"InProgress": 2}))
    sagemaker.add_response(
        "describe_hyper_parameter_tuning_job",
        tuning_description("InProgress", {"Completed": 2, "InProgress": 2, "NonRetryableError": 1}),
    )
    sagemaker.add_response(
        "describe_hyper_parameter_tuning_job",
        tuning_description("Completed", {"Completed": 5, "NonRetryableError": 1}, BestTrainingJob=BEST_SUMMARY),
    )
    first_page, second_page = TRIALS[:4], TRIALS[4:]  # SageMaker pages its answers: every page is read
    sagemaker.add_response(
        "list_training_jobs_for_hyper_parameter_tuning_job",
        {"TrainingJobSummaries": first_page, "NextToken": "page-2"},
        {"HyperParameterTuningJobName": TUNING},
    )
    sagemaker.add_response("list_training_jobs_for_hyper_parameter_tuning_job", {"TrainingJobSummaries": second_page},
                           {"HyperParameterTuningJobName": TUNING, "NextToken": "page-2"})  # fmt: skip
    sagemaker.add_response("describe_training_job", best_training_job(), {"TrainingJobName": BEST})


def test_tuning_job_request_and_best_job_record(aws: StubbedAWS, tmp_path: Path, capsys: pytest.CaptureFixture):
    expect_tuning_job(aws)
    records = RecordStore(tmp_path / "records")
    record = tune_on_sagemaker(tuning_spec(), records, tmp_path / "tuning").to_json()
    aws.assert_all_answered()

    (request,) = aws.sent("CreateHyperParameterTuningJob")
    assert request["HyperParameterTuningJobName"] == TUNING
    config = request["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian" and "StrategyConfig" not in config
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Minimize", "MetricName": "valid loss"}
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 6, "MaxParallelTrainingJobs": 2}
    assert config["TrainingJobEarlyStoppingType"] == "Off"
    ranges = config["ParameterRanges"]
    assert ranges["ContinuousParameterRanges"] == [
        {"Name": "learning_rate", "MinValue": "0.001", "MaxValue": "0.1", "ScalingType": "Logarithmic"}
    ]
    assert ranges["IntegerParameterRanges"] == [
        {"Name": "image_size", "MinValue": "64", "MaxValue": "224", "ScalingType": "Auto"}
    ]
    categorical = {r["Name"]: r["Values"] for r in ranges["CategoricalParameterRanges"]}
    assert categorical == {"batch_size": ["32", "64", "128", "256", "512"], "optimizer": ['"sgd"', '"adam"']}
    # What the container reads back: each value JSON-decoded to its own type.
    assert {name: [json.loads(v) for v in values] for name, values in categorical.items()} == {
        "batch_size": [32, 64, 128, 256, 512], "optimizer": ["sgd", "adam"]
    }  # fmt: skip
    assert "WarmStartConfig" not in request

    definition = request["TrainingJobDefinition"]
    # JSON-encoded, the tuned ones left out, and nothing else.
    assert definition["StaticHyperParameters"] == {"epochs": "3", "model_name": '"resnet50"', "pretrained": "false"}
    algorithm = definition["AlgorithmSpecification"]
    assert (algorithm["TrainingImage"], algorithm["TrainingInputMode"]) == (IMAGE, "File")
    definitions = {d["Name"]: d["Regex"] for d in algorithm["MetricDefinitions"]}
    assert definitions == {d["Name"]: d["Regex"] for d in metrics.METRIC_DEFINITIONS}  # the objective's among ours
    assert re.search(definitions["average test loss"], "average test loss: 0.41").group(1) == "0.41"
    # The objective, the validation loss, is read from every epoch's line: Auto early stopping has it per epoch.
    objective = config["HyperParameterTuningJobObjective"]["MetricName"]
    epoch_line = "epoch: 2 train loss: 0.5 valid loss: 0.41 valid accuracy: 0.9"
    assert re.search(definitions[objective], epoch_line).group(1) == "0.41"
    assert definition["RoleArn"] == ROLE
    assert definition["HyperParameterTuningResourceConfig"] == {
        "InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30
    }  # fmt: skip
    assert definition["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == DATA
    assert definition["OutputDataConfig"] == {"S3OutputPath": f"s3://{BUCKET}/imgclf"}
    assert definition["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}

    err = capsys.readouterr().err
    progress = [line for line in err.splitlines() if f"tuning job {TUNING}: " in line]
    assert progress == [  # said when it changes, not at every poll
        f"[launcher] tuning job {TUNING}: InProgress; training jobs: 0 completed, 2 in progress, 0 failed, 0 stopped",
        f"[launcher] tuning job {TUNING}: InProgress; training jobs: 2 completed, 2 in progress, 1 failed, 0 stopped",
        f"[launcher] tuning job {TUNING}: Completed; training jobs: 5 completed, 0 in progress, 1 failed, 0 stopped",
    ]

    assert (record["status"], record["trials"]) == ("Completed", 6)
    tuned = {"learning_rate": 0.03087708635920261, "batch_size": 128, "optimizer": "adam", "image_size": 160}
    assert record["best"] == {
        "trial": 4,  # the order SageMaker created the trials in, as the local tuner numbers them
        "job_name": BEST,
        "objective": 0.41,
        "tuned_hyperparameters": tuned,
        "hyperparameters": {**STATIC, **tuned},
        "model_data": f"s3://{BUCKET}/imgclf/{BEST}/output/model.tar.gz",
    }
    assert records.load(TuningRun, TUNING).to_json() == json.loads(json.dumps(record))
    job = records.load(TrainingJob, BEST).to_json()  # deployable: `launcher deploy <best job> --backend sagemaker`
    assert (job["status"], job["backend"], job["region"], job["tuning_job"]) == (
        "Completed",
        "sagemaker",
        REGION,
        TUNING,
    )
    assert job["model_data"] == record["best"]["model_data"]
    assert job["output_data"] == f"s3://{BUCKET}/imgclf/{BEST}/output/output.tar.gz"
    assert job["test_metrics"] == {"accuracy": 0.87, "loss": 0.41}
    assert (job["created"], job["ended"]) == (STARTED.timestamp(), ENDED.timestamp())


def test_a_finished_tuning_job_writes_the_results_the_local_tuner_writes(aws: StubbedAWS, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture):  # fmt: skip
    expect_tuning_job(aws)
    tracker = Tracker(tracking.default_uri(tmp_path), "sm-tuning")
    parent = tracker.start(TUNING, "tuning")
    records = RecordStore(tmp_path / "records")
    record = tune_on_sagemaker(
        tuning_spec(), records, tmp_path / "tuning", tracker=tracker, parent_run=parent
    ).to_json()
    aws.assert_all_answered()
    # Each trial SageMaker listed is a child run: its hyperparameters, objective and end, as a local trial's.
    client = MlflowClient(tracker.uri)
    children = client.search_runs([client.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    trials = sorted(children, key=lambda r: r.info.run_name)
    assert [t.info.run_name for t in trials] == [f"{TUNING}-{number:03d}-1a2b3c4d" for number in range(1, 7)]
    assert [t.info.status for t in trials] == ["FINISHED"] * 5 + ["FAILED"]
    assert [t.data.metrics.get("valid loss") for t in trials] == [0.93, 0.62, 0.55, 0.41, 0.71, None]
    assert float(trials[3].data.params["learning_rate"]) == 0.03087708635920261
    assert (record["results"], record["plot"]) == (str(tmp_path / "tuning" / "results.csv"),
                                                   str(tmp_path / "tuning" / "results.html"))  # fmt: skip
    with open(record["results"], newline="") as results:
        rows = list(csv.DictReader(results))
    assert [row["trial"] for row in rows] == ["1", "2", "3", "4", "5", "6"]  # in the order SageMaker created them
    assert [row["status"] for row in rows] == ["Completed"] * 5 + ["Failed"]
    assert [row["objective"] for row in rows] == ["0.93", "0.62", "0.55", "0.41", "0.71", ""]
    assert rows[3]["job_name"] == BEST and float(rows[3]["learning_rate"]) == 0.03087708635920261
    assert {row["optimizer"] for row in rows} == {"adam"} and {row["seconds"] for row in rows} == {"270.0"}
    assert [trial["job_name"] for trial in json.loads((tmp_path / "tuning" / "results.json").read_text())] == [
        f"{TUNING}-{number:03d}-1a2b3c4d" for number in range(1, 7)
    ]
    best = json.loads((tmp_path / "tuning" / "best.json").read_text())
    assert (best["job_name"], best["objective"]) == (BEST, 0.41) and best["hyperparameters"] == record["best"][
        "hyperparameters"
    ]
    assert "valid loss by learning_rate" in (tmp_path / "tuning" / "results.html").read_text()
    table = capsys.readouterr().out
    assert "0.41" in table and "Failed" in table


def test_hyperband_and_warm_start(aws: StubbedAWS, tmp_path: Path):
    aws.stub("sagemaker").add_response(
        "create_hyper_parameter_tuning_job",
        {"HyperParameterTuningJobArn": f"{ARN}:hyper-parameter-tuning-job/{TUNING}"},
    )
    spec = tuning_spec(
        strategy="Hyperband",
        objective={"metric": "valid accuracy", "regex": r"valid accuracy: ([0-9.eE+-]+)", "direction": "Maximize"},
        warm_start_from=["imgclf-hpo-0", "imgclf-hpo-00"],
    )
    record = tune_on_sagemaker(spec, RecordStore(tmp_path / "records"), tmp_path / "tuning", wait=False).to_json()
    aws.assert_all_answered()
    assert record["status"] == "InProgress" and record["best"] is None

    (request,) = aws.sent("CreateHyperParameterTuningJob")
    config = request["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Hyperband"
    assert config["StrategyConfig"] == {"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 3}}  # epochs
    assert config["TrainingJobEarlyStoppingType"] == "Off"
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "valid accuracy"}
    warm_start = request["WarmStartConfig"]
    assert warm_start["WarmStartType"] == "IdenticalDataAndAlgorithm"
    parents = {parent["HyperParameterTuningJobName"] for parent in warm_start["ParentHyperParameterTuningJobs"]}
    assert parents == {"imgclf-hpo-0", "imgclf-hpo-00"}
    definitions = request["TrainingJobDefinition"]["AlgorithmSpecification"]["MetricDefinitions"]
    assert {"Name": "valid accuracy", "Regex": r"valid accuracy: ([0-9.eE+-]+)"} in definitions


def test_spot_trials_share_the_tuning_jobs_checkpoint_prefix(aws: StubbedAWS, tmp_path: Path):
    aws.stub("sagemaker").add_client_error("create_hyper_parameter_tuning_job", "ResourceLimitExceeded", "limit", 400)
    spec = tuning_spec()
    spec = spec.model_copy(
        update={
            "training": dataclasses.replace(
                spec.training, options=SageMakerOptions(role=ROLE, bucket=BUCKET, region=REGION, spot=True)
            )
        }
    )
    with pytest.raises(LauncherError, match=f"SageMaker did not start tuning job {TUNING}"):
        tune_on_sagemaker(spec, RecordStore(tmp_path / "records"), tmp_path / "tuning")
    (request,) = aws.sent("CreateHyperParameterTuningJob")
    definition = request["TrainingJobDefinition"]
    assert definition["EnableManagedSpotTraining"] is True
    assert definition["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400, "MaxWaitTimeInSeconds": 172800}
    assert definition["CheckpointConfig"] == {
        "S3Uri": f"s3://{BUCKET}/imgclf/{TUNING}/checkpoints", "LocalPath": "/opt/ml/checkpoints"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "imgclf-hpo-2026-01-01-00-00-00-000"}, "SageMaker allows 1 to 32 letters, digits and hyphens"),
        ({"strategy": "Hyperband", "early_stopping": "Auto"}, "Hyperband strategy stops trials itself"),
        ({"strategy": "Hyperband", "hyperparameters": {"model_name": "resnet50"}}, "fix epochs as a whole number"),
        ({"warm_start_from": [f"p{i}" for i in range(6)]}, "at most 5 parent tuning jobs"),
    ],
)
def test_what_sagemaker_would_refuse_is_refused_before_any_call(
    aws: StubbedAWS, tmp_path: Path, fields: dict[str, Any], message: str
):
    with pytest.raises(LauncherError, match=message):
        tune_on_sagemaker(tuning_spec(**fields), RecordStore(tmp_path / "records"), tmp_path / "tuning")
    assert aws.calls == []
