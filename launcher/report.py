"""A job's rule and profiler report: fetched from its output.tar.gz, extracted safely, summed up as a table.

The container writes `output/data/report/`: one `<RuleName>.json` per rule and a self-contained `report.html`.
SageMaker and the process backend pack output/data's contents at the top of output.tar.gz (`report/...`);
SageMaker local mode packs output/ itself (`data/report/...`).
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from launcher.backends.sagemaker import download
from launcher.contract import S3_SCHEME
from launcher.errors import LauncherError
from launcher.records import TrainingJob

REPORT_DIRS = (PurePosixPath("report"), PurePosixPath("data/report"))
HTML_REPORT = "report.html"
METRICS_FILE = "metrics.json"  # at the top of output.tar.gz: every epoch's and the test's metrics
# Table order: what needs attention first.
STATUSES = ("IssuesFound", "Error", "NoIssuesFound", "NotApplicable")
KINDS = ("training", "profiler")
NO_REPORT = "this job was trained by an image without the report; rebuild the image"


@dataclass(frozen=True)
class RuleResult:
    rule: str
    kind: str  # training or profiler
    status: str  # one of STATUSES
    steps: list[int]  # steps where the rule fired
    explanation: str
    recommendation: str | None

    @classmethod
    def read(cls, path: Path) -> RuleResult:
        """One `<RuleName>.json`; a file that breaks the format is named in the error."""
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            result = cls(
                rule=str(data["rule"]),
                kind=str(data["kind"]),
                status=str(data["status"]),
                steps=[int(step) for step in data["steps"]],
                explanation=str(data["explanation"]),
                recommendation=data.get("recommendation"),
            )
        except (ValueError, KeyError, TypeError) as err:
            raise LauncherError(f"{path} is not a rule result ({type(err).__name__}: {err})") from err
        if result.status not in STATUSES or result.kind not in KINDS:
            raise LauncherError(
                f"{path}: status {result.status!r} / kind {result.kind!r} not among {STATUSES} / {KINDS}"
            )
        return result


def archive_on_host(job: TrainingJob, scratch: Path) -> Path:
    """The job's output.tar.gz on this machine, downloaded into `scratch` if it is in S3."""
    location = job.output_data
    if not location:
        raise LauncherError(f"job {job.name} has no output yet (status {job.status})")
    if location.startswith(S3_SCHEME):
        return download(location, scratch / f"{job.name}-output.tar.gz", job.region)
    if not Path(location).is_file():
        raise LauncherError(f"job {job.name}'s output {location} is missing")
    return Path(location)


def _relative(member: tarfile.TarInfo, folder: PurePosixPath) -> PurePosixPath | None:
    """A member's name inside `folder`, or None if it is not a file or folder below it."""
    name = PurePosixPath(member.name)  # "./report/x" and "report/x" alike; ".." stays, for the filter to refuse
    if not (member.isfile() or member.isdir()) or not name.is_relative_to(folder) or name == folder:
        return None
    return name.relative_to(folder)


def report_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """The files and folders under the archive's report folder, renamed relative to it; links are left out."""
    for folder in REPORT_DIRS:
        inside = [(member, _relative(member, folder)) for member in tar.getmembers()]
        members = [member.replace(name=str(name), deep=False) for member, name in inside if name]
        if members:
            return members
    return []


def extract_report(archive: Path, target: Path) -> bool:
    """Extract the report folder of an output.tar.gz into `target`, replacing an earlier extraction.

    Returns False if the archive has no report. Members pass tarfile's "data" filter: one that would land
    outside `target` fails the whole extraction, and `target` is left as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar, tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            members = report_members(tar)
            if not members:
                return False
            extracted = Path(scratch) / "report"
            tar.extractall(extracted, members=members, filter="data")
            if target.exists():
                shutil.rmtree(target)
            extracted.rename(target)
    except (tarfile.TarError, OSError) as err:
        raise LauncherError(f"cannot extract the report from {archive}: {err}") from err
    return True


def job_report_files(job: TrainingJob, target: Path) -> list[Path]:
    """The job's report page and metrics.json, extracted from its output into `target` (what a tracking run keeps);
    those the output lacks are left out."""
    with tempfile.TemporaryDirectory() as scratch:
        archive = archive_on_host(job, Path(scratch))
        has_report = extract_report(archive, target)
        with tarfile.open(archive, "r:*") as tar:
            found = [m for m in tar.getmembers() if PurePosixPath(m.name) == PurePosixPath(METRICS_FILE) and m.isfile()]
            if found:
                tar.extract(found[0].replace(name=METRICS_FILE, deep=False), target, filter="data")
    files = [target / HTML_REPORT] if has_report else []
    return [path for path in (*files, target / METRICS_FILE) if path.is_file()]


def read_results(folder: Path) -> list[RuleResult]:
    """Every rule's result, those that found issues first, then by name."""
    results = [RuleResult.read(path) for path in folder.glob("*.json")]
    return sorted(results, key=lambda r: (STATUSES.index(r.status), r.rule))


def format_table(results: list[RuleResult]) -> str:
    """Rule, kind, status, how many steps it fired at, and its explanation; one line a rule."""
    rows = [("RULE", "KIND", "STATUS", "FIRED", "EXPLANATION")]
    rows += [(r.rule, r.kind, r.status, str(len(r.steps)), r.explanation) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)), row[4]]) for row in rows
    )


def show_report(job: TrainingJob, target: Path, table: bool = True) -> None:
    """Extract a job's report into `target`; print its table (unless the job's log just showed it),
    recommendations and the HTML report's path."""
    with tempfile.TemporaryDirectory() as scratch:
        if not extract_report(archive_on_host(job, Path(scratch)), target):
            raise LauncherError(f"the output of job {job.name} has no report: {NO_REPORT}")
    results = read_results(target)
    if not results:
        raise LauncherError(f"the report of job {job.name} holds no rule results: {NO_REPORT}")
    if table:
        print(format_table(results))
    advice = [r for r in results if r.status == "IssuesFound" and r.recommendation]
    if advice:
        print("\nRecommendations:")
        print("\n".join(f"  {r.rule}: {r.recommendation}" for r in advice))
    html = target / HTML_REPORT
    print(f"\nHTML report: {html}" if html.is_file() else f"\n(no {HTML_REPORT} in the report)")
