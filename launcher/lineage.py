"""Lineage: what produced a model, recorded at each step and printed as a chain by `launcher lineage`.

A training job's record gets a `lineage` entry: the dataset manifest (every input file with its size and
SHA-256, kept content-addressed under `<workdir>/manifests/`), the code revision, the image's identity, the
tuning run whose best hyperparameters it used, and the SHA-256 of its model.tar.gz. An endpoint's record
names the job and the hash of the model it serves, so any prediction leads back to the data and the
configuration that made its model.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from launcher.contract import MANIFEST_SUFFIX, S3_SCHEME
from launcher.errors import LauncherError
from launcher.file_hashes import file_sha256, folder_files
from launcher.progress import text_table
from launcher.records import (
    Endpoint,
    Evaluation,
    LoopRun,
    Promotion,
    Record,
    RecordStore,
    TrainingJob,
    TransformJob,
    TuningRun,
)

REPOSITORY = Path(__file__).resolve().parent.parent  # the checkout the launcher and container_src come from


def channel_manifest(source: str) -> dict[str, Any]:
    """One channel's files (relative path, bytes, SHA-256; unchanged files are not read again, see
    `launcher.file_hashes`); an s3:// channel is named, not listed."""
    if source.startswith(S3_SCHEME):
        return {"source": source, "files": None}
    root = Path(source)
    if root.is_file():
        return {
            "source": str(root),
            "files": [{"path": root.name, "bytes": root.stat().st_size, "sha256": file_sha256(root)}],
        }
    return {"source": str(root), "files": folder_files(root)}


def dataset_manifest(channels: dict[str, str], store: Path) -> dict[str, Any]:
    """Hash every input file and keep the manifest at `<store>/<digest>.json`; return its summary.

    The digest covers channel names, relative paths and file hashes (not the folders' absolute locations),
    so the same data copied elsewhere has the same digest.
    """
    manifest = {name: channel_manifest(source) for name, source in sorted(channels.items())}
    content = {name: channel["files"] or channel["source"] for name, channel in manifest.items()}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    store.mkdir(parents=True, exist_ok=True)
    path = store / f"{digest}.json"
    if not path.is_file():
        path.write_text(json.dumps({"digest": digest, "channels": manifest}, indent=1))
    listed = [channel["files"] for channel in manifest.values() if channel["files"] is not None]
    return {
        "digest": digest,
        "manifest": str(path),
        "files": sum(len(files) for files in listed),
        "bytes": sum(f["bytes"] for files in listed for f in files),
        "channels": {name: channel["source"] for name, channel in manifest.items()},
    }


def code_revision() -> str:
    """The git commit of this checkout, marked when it has uncommitted changes; else 'unknown'."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPOSITORY), *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"{commit} (with uncommitted changes)" if dirty else commit


def model_hash(model_data: str | None) -> str | None:
    """SHA-256 of a model.tar.gz on this machine; None for one in S3 (SageMaker keeps it there)."""
    if not model_data or model_data.startswith(S3_SCHEME) or not Path(model_data).is_file():
        return None
    return file_sha256(Path(model_data))


def training_lineage(
    dataset: dict[str, Any], image: dict[str, Any], tuning: TuningRun | None, model_data: str | None
) -> dict[str, Any]:
    """The `lineage` entry of a training job's record; `image` is the backend's identity of the image."""
    return {
        "dataset": dataset,
        "code_revision": code_revision(),
        "image": image,
        "tuning": tuning_facts(tuning) if tuning else None,
        "model_sha256": model_hash(model_data),
    }


# -- the chain, for `launcher lineage` ------------------------------------------------------------------------
TRACED = (Endpoint, TrainingJob, TuningRun, LoopRun, Evaluation, TransformJob, Promotion)  # in this order
USES_OF_A_MODEL = (Endpoint, Evaluation, TransformJob)  # records of what a trained model was used for


def find_record(records: RecordStore, name: str) -> Record:
    """The endpoint, job, tuning run, run, evaluation, transform or promotion of that name (that order)."""
    for kind in TRACED:
        if records.exists(kind, name):
            return records.load(kind, name)
    raise LauncherError(
        f"no endpoint, training job, tuning run, run, evaluation, transform or promotion named {name!r} in "
        f"{records.root}"
    )


def chain(records: RecordStore, name: str) -> list[tuple[str, dict[str, Any]]]:
    """(step, facts) from what serves predictions back to the data: endpoint, training job, tuning, dataset."""
    record = find_record(records, name)
    steps: list[tuple[str, dict[str, Any]]] = []
    if isinstance(record, LoopRun):
        promoted = records.load(Promotion, record.promotion) if record.promotion else None
        last = record.endpoint or (promoted.endpoint if promoted else None) or record.training_job or record.tuning_run
        if last is None:
            raise LauncherError(f"run {name} ended ({record.status}) before any step finished")
        record = find_record(records, last)
    if isinstance(record, Promotion):
        steps.append(("promotion", promotion_facts(record)))
        record = records.load(Endpoint, record.endpoint)
    if isinstance(record, USES_OF_A_MODEL):
        steps.append((record.noun, _use_facts(record)))
        if isinstance(record, Endpoint):
            decided = [promotion_facts(p) for p in records.find(Promotion, endpoint=record.name)]
            steps[-1][1].update(served=_served(record) or None, promotions=decided or None)
        if not record.job_name or not records.exists(TrainingJob, record.job_name):
            return steps  # a model.tar.gz that no recorded job produced
        record = records.load(TrainingJob, record.job_name)
    if isinstance(record, TrainingJob):
        lineage = record.lineage or {}
        facts = _job_facts(record, lineage)
        evaluations = [e.name for e in records.find(Evaluation, job_name=record.name)]
        steps.append(("training job", {**facts, "evaluations": evaluations or None}))
        tuning = lineage.get("tuning")
        if tuning and records.exists(TuningRun, tuning["name"]):
            steps.append(("tuning", tuning_facts(records.load(TuningRun, tuning["name"]))))
        dataset = lineage.get("dataset")
    else:  # a tuning run
        steps.append(("tuning", tuning_facts(record)))
        dataset = (record.lineage or {}).get("dataset")
    if dataset:
        steps.append(("dataset", dataset))
    return steps


FACTS = {
    Endpoint: ("name", "backend", "status", "url", "image", "model_data", "job_name"),
    Evaluation: ("name", "backend", "status", "data", "metrics", "page", "model_data", "job_name", "mlflow_run"),
    TransformJob: (
        "name",
        "backend",
        "status",
        "input",
        "output",
        "classified",
        "failed",
        "model_data",
        "job_name",
        "mlflow_run",
    ),
}


def _use_facts(record: Endpoint | Evaluation | TransformJob) -> dict[str, Any]:
    """An endpoint's, evaluation's or transform's facts, and the hash of the model it used."""
    facts = {k: getattr(record, k) for k in FACTS[type(record)]}
    origin = record.lineage or {}
    dataset = origin.get("dataset") if not isinstance(record, Endpoint) else None
    return {**facts, "model_sha256": origin.get("model_sha256"), "data_digest": dataset["digest"] if dataset else None}


def _served(endpoint: Endpoint) -> list[str]:
    """Each model the endpoint served, oldest first: generation, job (or model), since when, and why."""
    return [
        f"{entry.get('generation')}: {entry.get('job_name') or entry.get('model_data')} since "
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(entry['since']))} UTC ({entry.get('reason')})"
        for entry in endpoint.history
    ]


def promotion_facts(record: Promotion) -> dict[str, Any]:
    """A decision in brief: who against whom, on what, the rule, the outcome and its figures."""
    return {
        "name": record.name,
        "status": record.status,
        "decision": record.decision,
        "reason": record.reason,
        "rule": record.rule,
        "data": record.data,
        "champion": {k: record.champion.get(k) for k in ("job_name", "metrics", "evaluation", "model_version")},
        "challenger": {k: record.challenger.get(k) for k in ("job_name", "metrics", "evaluation", "model_version")},
        "serving": (record.extra.get("serving") or {}).get("job_name"),
        "mlflow_run": record.mlflow_run,
    }


def _job_facts(record: TrainingJob, lineage: dict[str, Any]) -> dict[str, Any]:
    keys = ("name", "backend", "status", "hyperparameters", "model_data", "test_metrics", "mlflow_run", "model_version")
    facts = {k: getattr(record, k) for k in keys}
    versions = {name: uri for name, uri in (record.channels or {}).items() if uri.endswith(MANIFEST_SUFFIX)}
    if versions:  # the dataset version in S3 that the job read (a ManifestFile of its objects)
        facts["dataset_in_s3"] = versions
    facts.update({k: lineage.get(k) for k in ("model_sha256", "code_revision", "image")})
    return facts


def tuning_facts(run: TuningRun) -> dict[str, Any]:
    best = run.best or {}
    return {
        "name": run.name,
        "backend": run.backend,
        "best_job": best.get("job_name"),
        "best_objective": best.get("objective"),
        "best_hyperparameters": best.get("tuned_hyperparameters"),
        "mlflow_run": run.mlflow_run,
    }


def format_chain(steps: list[tuple[str, dict[str, Any]]]) -> str:
    """The chain as indented text, one fact a line; the models an endpoint served one a line, its promotions as a
    table (`launcher lineage --json` has every fact)."""
    lines = []
    for depth, (step, facts) in enumerate(steps):
        indent = "  " * depth
        lines.append(f"{indent}{step}:")
        for key, value in facts.items():
            if value is None:
                continue
            if key == "promotions":
                table = promotions_table(value)
                lines += [f"{indent}  promotions:", *(f"{indent}    {row}" for row in table.splitlines())]
            elif key == "served":
                lines += [f"{indent}  served:", *(f"{indent}    {entry}" for entry in value)]
            else:
                text = value if isinstance(value, str) else json.dumps(value, default=str)
                lines.append(f"{indent}  {key}: {text}")
    return "\n".join(lines)


def promotions_table(promotions: list[dict[str, Any]]) -> str:
    """Each decision on a line: champion and challenger with their test loss and accuracy, and what served after."""

    def figure(contender: dict[str, Any], key: str) -> str:
        value = (contender.get("metrics") or {}).get(key)
        return "" if value is None else f"{value:.4g}"

    header = ["promotion", "decision", "champion", "loss", "accuracy", "challenger", "loss", "accuracy", "serving"]
    rows = [
        [
            p["name"],
            p.get("decision") or p.get("status") or "",
            *(
                cell
                for role in ("champion", "challenger")
                for cell in (p[role].get("job_name") or "", figure(p[role], "loss"), figure(p[role], "accuracy"))
            ),
            p.get("serving") or "",
        ]
        for p in promotions
    ]
    return text_table([header, *rows])
