"""`resolve`: a retrain pipeline's first step — what this execution works on, decided when it runs, so that an
execution started by new data (an EventBridge rule, a schedule: their parameters are fixed) needs no one's machine.

- the dataset version: the one the execution was given, else the newest ManifestFile under the store's prefix;
- the champion: the model package group's latest Approved model, else the model the endpoint serves, else none
  (the pipeline's NO_MODEL file);
- whether to proceed: not while an execution of the same pipeline that started earlier still runs (one at a time;
  the later one is skipped, and says why).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from imgclf_contract.judging import NEWEST

MANIFEST_SUFFIX = ".manifest"
MISSING = ("ResourceNotFound", "ValidationException")


class ResolveError(Exception):
    """AWS refused or could not answer; the message says what was asked."""


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def newest_manifest(s3: Any, prefix: str) -> str | None:
    """The most recently written ManifestFile under `prefix` (an s3:// URI), or None."""
    bucket, key_prefix = split_s3_uri(prefix)
    newest: tuple[datetime, str] | None = None
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix):
        for item in page.get("Contents", []):
            if item["Key"].endswith(MANIFEST_SUFFIX) and (newest is None or item["LastModified"] > newest[0]):
                newest = (item["LastModified"], item["Key"])
    return f"s3://{bucket}/{newest[1]}" if newest else None


def code(err: Exception) -> str | None:
    return getattr(err, "response", {}).get("Error", {}).get("Code")


def champion_model(sagemaker: Any, group: str, endpoint: str) -> str | None:
    """The group's latest Approved model package's model, else the endpoint's, else None."""
    from botocore.exceptions import ClientError

    try:
        listed = sagemaker.list_model_packages(
            ModelPackageGroupName=group,
            ModelApprovalStatus="Approved",
            SortBy="CreationTime",
            SortOrder="Descending",
            MaxResults=1,
        )["ModelPackageSummaryList"]
    except ClientError as err:
        if code(err) not in MISSING:
            raise
        listed = []
    if listed:
        package = sagemaker.describe_model_package(ModelPackageName=listed[0]["ModelPackageArn"])
        return package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    try:
        config_name = sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
    except ClientError as err:
        if code(err) in MISSING:
            return None
        raise
    config = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
    model = sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    return model["PrimaryContainer"]["ModelDataUrl"]


def earlier_running(sagemaker: Any, execution_arn: str) -> dict[str, Any] | None:
    """An execution of the same pipeline, still running, that started before this one."""
    pipeline = execution_arn.split(":pipeline/", 1)[1].split("/", 1)[0]
    listed = [
        summary
        for page in sagemaker.get_paginator("list_pipeline_executions").paginate(PipelineName=pipeline)
        for summary in page["PipelineExecutionSummaries"]
    ]
    mine = next((s for s in listed if s["PipelineExecutionArn"] == execution_arn), None)
    started = mine["StartTime"] if mine else None
    others = [
        s
        for s in listed
        if s["PipelineExecutionArn"] != execution_arn
        and s["PipelineExecutionStatus"] == "Executing"
        and (started is None or s["StartTime"] <= started)
    ]
    return min(others, key=lambda s: s["StartTime"]) if others else None


def resolve(
    session: Any, execution_arn: str, dataset: str, datasets_prefix: str, group: str, endpoint: str, no_model: str
) -> dict[str, Any]:
    """The execution's dataset version and type, its champion, and whether it proceeds (and why not)."""
    from botocore.exceptions import BotoCoreError, ClientError

    sagemaker, s3 = session.client("sagemaker"), session.client("s3")
    try:
        running = earlier_running(sagemaker, execution_arn)
        version = newest_manifest(s3, datasets_prefix) if dataset in ("", NEWEST) else dataset
        champion = champion_model(sagemaker, group, endpoint)
    except (BotoCoreError, ClientError) as err:
        raise ResolveError(f"AWS did not answer: {err}") from err
    resolved: dict[str, Any] = {
        "dataset_version": version or "",
        "dataset_type": "ManifestFile" if (version or "").endswith(MANIFEST_SUFFIX) else "S3Prefix",
        "champion_model": champion or no_model,
        "proceed": True,
        "reason": "",
    }
    if running:
        resolved["proceed"] = False
        resolved["reason"] = (
            f"skipped: execution {running['PipelineExecutionArn']} started earlier and still runs (one at a time)"
        )
    elif not version:
        resolved["proceed"] = False
        resolved["reason"] = f"skipped: no dataset version under {datasets_prefix}"
    return resolved
