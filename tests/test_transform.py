"""`launcher transform` and `launcher evaluate` on the process backend: a real model server on this machine, real
JPEGs and PNGs, the trained model of a real job; the evaluation page opened in headless Chromium."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import chromium, default_sigint, draw_shape, write_split
from PIL import Image

from imgclf_contract.judging import NO_MODEL
from launcher import contract
from launcher.cli import main
from launcher.records import Evaluation, RecordStore, TransformJob

pytestmark = pytest.mark.slow  # real model servers for batch transform

LINES_BEFORE_SIGINT = 3
WAIT_SECONDS = 120


@pytest.fixture(scope="module")
def model(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model.tar.gz of a real training run on the shapes (its job folder is beside trained_model_dir)."""
    return contract.pack(trained_model_dir, tmp_path_factory.mktemp("model") / "model.tar.gz")


def labelled_with_mistakes(data: Path, circles_as_squares: int) -> Path:
    """Three shapes' images, 3 per class, plus circles filed under `square` and a hexagon no model knows."""
    write_split(data, per_class=3)
    for i in range(circles_as_squares):
        draw_shape("circle", seed=i).save(data / "square" / f"really_a_circle_{i}.jpg")
    (data / "hexagon").mkdir()
    Image.new("RGB", (40, 40), "orange").save(data / "hexagon" / "h.jpg")
    return data


def job_test_metrics(trained_model_dir: Path) -> dict:
    return json.loads((trained_model_dir.parent / "output" / "data" / "metrics.json").read_text())["test"]


def images_folder(root: Path) -> Path:
    """Nested JPEGs and PNGs, a broken JPEG and a file that is not an image."""
    write_split(root / "a", per_class=2)
    write_split(root / "b" / "deeper", per_class=1, fmt="PNG")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (root / "notes.txt").write_text("not an image")
    return root


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_transform_classifies_every_image_once_and_lists_the_broken_one(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    data = images_folder(tmp_path / "images")
    work = tmp_path / "work"
    code = main(["--workdir", str(work), "transform", str(model), "--input", str(data), "--name", "t1", "--top-k", "2"])
    assert code == 0, capsys.readouterr().err
    output = work / "transforms" / "t1" / "output"
    lines = lines_of(output / "predictions.jsonl")
    expected = {p.relative_to(data).as_posix() for p in data.rglob("*") if p.suffix in (".jpg", ".png")}
    assert Counter(line["file"] for line in lines) == Counter(expected)  # each once; notes.txt not at all
    by_file = {line["file"]: line for line in lines}
    assert by_file["broken.jpg"]["status"] == 400 and "not a decodable image" in by_file["broken.jpg"]["error"]
    for file, line in by_file.items():
        if file != "broken.jpg":
            assert len(line["predictions"]) == 2 and "logits" not in line
            assert line["predictions"][0]["label"] in {"circle", "square", "triangle"}
    summary = json.loads((output / "summary.json").read_text())
    assert (summary["files"], summary["classified"], summary["failed"]) == (len(expected), len(expected) - 1, 1)
    assert summary["failures"] == [{"file": "broken.jpg", "status": 400, "error": by_file["broken.jpg"]["error"]}]
    record = RecordStore(work / "records").load(TransformJob, "t1")
    assert (record.status, record.classified, record.failed) == ("Completed", len(expected) - 1, 1)
    assert record.lineage["model_sha256"] and record.lineage["dataset"]["files"] == len(expected) + 1
    err = capsys.readouterr().err
    assert f"transform t1: {len(expected)}/{len(expected)} files" in err  # progress, at the end at least
    assert not (work / "transforms" / "t1" / "server" / "model").exists()  # the server's copy is gone, its log not


def test_a_second_run_goes_on_where_the_first_stopped(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    data = images_folder(tmp_path / "images")
    output = tmp_path / "out"
    output.mkdir()
    earlier = [
        {"file": "a/circle/circle_0.jpg", "predictions": [{"label": "from the earlier run"}]},
        {"file": "a/square/square_0.jpg", "error": "no answer from the model server", "status": 503},
    ]
    (output / "model.json").write_text(json.dumps({"model_data": str(model)}))
    text = "".join(json.dumps(line) + "\n" for line in earlier) + '{"file": "a/tri'  # torn by a kill
    (output / "predictions.jsonl").write_text(text)

    args = ["--workdir", str(tmp_path / "work"), "transform", str(model), "--input", str(data), "--output", str(output)]
    assert main(args) == 0
    assert "(1 finished by an earlier run)" in capsys.readouterr().err
    lines = [json.loads(t) for t in (output / "predictions.jsonl").read_text().splitlines()[3:]]  # after the torn one
    sent = Counter(line["file"] for line in lines)
    assert "a/circle/circle_0.jpg" not in sent  # finished: not sent again
    assert sent["a/square/square_0.jpg"] == 1  # the server did not answer it: tried again
    assert all(count == 1 for count in sent.values())

    other = tmp_path / "other.tar.gz"
    shutil.copy(model, other)
    assert main([*args[:3], str(other), *args[4:]]) == 1
    assert "holds the predictions of another model" in capsys.readouterr().err


def server_processes(folder: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cwd"]):
        if process.info["cwd"] and Path(process.info["cwd"]).is_relative_to(folder):
            found.append(process)
    return found


def test_ctrl_c_keeps_the_lines_written_and_a_rerun_finishes_without_repeats(model: Path, tmp_path: Path):
    data = tmp_path / "images"
    write_split(data, per_class=15)
    work = tmp_path / "work"
    command = [sys.executable, "-m", "launcher.cli", "--workdir", str(work), "transform", str(model),
               "--input", str(data), "--name", "t2", "--concurrency", "1"]  # fmt: skip
    predictions = work / "transforms" / "t2" / "output" / "predictions.jsonl"
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=default_sigint)
    deadline = time.monotonic() + WAIT_SECONDS
    while not (predictions.is_file() and len(predictions.read_text().splitlines()) >= LINES_BEFORE_SIGINT):
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, "no lines written"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out = process.communicate(timeout=WAIT_SECONDS)[0].decode()
    assert process.returncode == 130, out
    assert server_processes(work / "transforms" / "t2") == []  # the model server went with it
    assert RecordStore(work / "records").load(TransformJob, "t2").status == "Stopped"
    first = lines_of(predictions)
    assert all("predictions" in line for line in first)  # no file blamed for the interruption
    assert LINES_BEFORE_SIGINT <= len(first) < 45

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=WAIT_SECONDS * 3, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert f"({len(first)} finished by an earlier run)" in rerun.stderr
    files = Counter(line["file"] for line in lines_of(predictions))
    assert len(files) == 45 and set(files.values()) == {1}  # every file once: none classified twice


def test_bad_inputs_are_named(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    work = ["--workdir", str(tmp_path / "work")]
    (tmp_path / "empty").mkdir()
    assert main([*work, "transform", str(model), "--input", str(tmp_path / "empty")]) == 1
    assert f"no JPEG or PNG files (.jpg, .jpeg, .png) under {tmp_path / 'empty'}" in capsys.readouterr().err
    assert main([*work, "transform", str(model), "--input", str(tmp_path / "nowhere")]) == 1
    assert "no folder at" in capsys.readouterr().err
    assert main([*work, "transform", "no-such-job", "--input", str(tmp_path)]) == 1
    assert "no training job named 'no-such-job'" in capsys.readouterr().err
    assert main([*work, "transform", str(model), "--input", "s3://bucket/photos/"]) == 1
    assert "the process backend reads images on this machine, not s3://bucket/photos/" in capsys.readouterr().err

    unnamed = tmp_path / "unnamed"
    contract.unpack(model, unnamed)
    config = json.loads((unnamed / "model_config.json").read_text())
    (unnamed / "model_config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "classes"}))
    bare = contract.pack(unnamed, tmp_path / "bare.tar.gz")
    labelled = write_split(tmp_path / "labelled" / "test", per_class=1).parent
    assert main([*work, "evaluate", str(bare), "--data", str(labelled)]) == 1
    assert "has no class names" in capsys.readouterr().err

    loose = tmp_path / "loose"
    loose.mkdir()
    draw_shape("circle").save(loose / "x.jpg")
    assert main([*work, "evaluate", str(model), "--data", str(loose)]) == 1
    assert "outside any class folder (e.g. x.jpg)" in capsys.readouterr().err


def test_evaluate_reproduces_the_jobs_test_metrics(model: Path, trained_model_dir: Path, tmp_path: Path):
    data = trained_model_dir.parent.parent / "shapes"  # the job's own data: its test/ split is evaluated
    work = tmp_path / "work"
    assert main(["--workdir", str(work), "evaluate", str(model), "--data", str(data), "--name", "e1"]) == 0
    result = json.loads((work / "evaluations" / "e1" / "evaluation.json").read_text())
    job = job_test_metrics(trained_model_dir)
    assert result["images"] == job["images"]
    assert abs(result["accuracy"] - job["accuracy"]) < 1e-4
    assert abs(result["loss"] - job["loss"]) < 1e-4
    assert sum(map(sum, result["confusion_matrix"])) == job["images"]
    assert result["data"] == str(data / "test")
    record = RecordStore(work / "records").load(Evaluation, "e1")
    assert record.metrics["accuracy"] == result["accuracy"] and record.lineage["model_sha256"]


def test_the_images_evaluate_gives_launcher_evaluates_figures_and_the_rules_decision(
    model: Path, trained_model_dir: Path, tmp_path: Path
):
    """The image's `evaluate` (a retrain loop's evaluation step) and `launcher evaluate` (the model served, its logits
    scored on this machine) agree on the same files: mistakes, a class the model does not know, a broken file."""
    data = labelled_with_mistakes(tmp_path / "labelled", circles_as_squares=2)
    (data / "circle" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    work = tmp_path / "work"
    assert main(["--workdir", str(work), "evaluate", str(model), "--data", str(data), "--name", "e4"]) == 0
    launcher = json.loads((work / "evaluations" / "e4" / "evaluation.json").read_text())

    out = tmp_path / "out" / "evaluation.json"
    done = subprocess.run([str(Path(sys.executable).parent / "evaluate"), "--data", str(data), "--model",
                           f"challenger={model}", "--model", f"champion={trained_model_dir}", "--output", str(out)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    image = json.loads(out.read_text())
    assert image["files"] == 13 and set(image["models"]) == {"champion", "challenger"}
    for figures in image["models"].values():  # the same model twice: a .tar.gz and its folder
        assert figures["images"] == launcher["images"] == 11
        assert figures["unknown_classes"] == launcher["unknown_classes"] == {"hexagon": 1}
        failed = [f["file"] for f in figures["failed"]]
        assert failed == [f["file"] for f in launcher["failed"]] == ["circle/broken.jpg"]
        for key in ("accuracy", "top_k_accuracy", "loss"):
            assert abs(figures[key] - launcher[key]) < 1e-4, key
    assert image["decision"] == {"promote": False, "min_improvement": 0.0,
                                 "reason": image["decision"]["reason"]}  # fmt: skip
    assert "not lower by at least 0" in image["decision"]["reason"]  # a model does not beat itself

    # A Pipeline's first cycle, laid out as its Processing job's inputs are: the dataset version's files under
    # test/<class>/<sha256:16>/, the challenger's model.tar.gz alone in a folder, the champion's folder saying none.
    pipeline = tmp_path / "processing"
    for file in data.rglob("*.jpg"):
        copied = pipeline / "data" / "test" / file.parent.name / "0123456789abcdef" / file.name
        copied.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(file, copied)
    (pipeline / "challenger").mkdir()
    shutil.copy(model, pipeline / "challenger" / "model.tar.gz")
    (pipeline / "champion").mkdir()
    (pipeline / "champion" / NO_MODEL).write_text("none yet")
    first = subprocess.run([str(Path(sys.executable).parent / "evaluate"), "--data", str(pipeline / "data"),
                            "--model", f"challenger={pipeline / 'challenger'}", "--model",
                            f"champion={pipeline / 'champion'}", "--output", str(out)],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    result = json.loads(out.read_text())
    assert set(result["models"]) == {"challenger"} and result["decision"]["promote"] is True  # no champion yet
    assert result["models"]["challenger"]["loss"] == pytest.approx(image["models"]["challenger"]["loss"], abs=1e-6)

    # A champion of other classes (one renamed) is not judged against: the challenger is kept out, and says why.
    renamed = shutil.copytree(trained_model_dir, tmp_path / "renamed")
    config = json.loads((renamed / "model_config.json").read_text())
    config["classes"] = ["hexagon" if name == "circle" else name for name in config["classes"]]
    (renamed / "model_config.json").write_text(json.dumps(config))
    other = subprocess.run([str(Path(sys.executable).parent / "evaluate"), "--data", str(data), "--model",
                            f"challenger={model}", "--model", f"champion={renamed}", "--output", str(out)],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert other.returncode == 0, other.stdout + other.stderr
    decision = json.loads(out.read_text())["decision"]
    assert decision["promote"] is False
    assert decision["reason"].startswith("the champion classifies other classes (hexagon, square, triangle)")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "winner=m.tar.gz"], "give ROLE=PATH with ROLE one of champion, challenger"),
        (["--model", "challenger={tmp}/missing.tar.gz"], "no model at"),
        (["--model", "challenger={tmp}/labelled/circle/circle_0.jpg"], "cannot read"),
        (["--model", "challenger={tmp}/none"], "nothing to judge"),
    ],
)
def test_the_images_evaluate_refuses_what_it_cannot_use(tmp_path: Path, args: list[str], message: str):
    write_split(tmp_path / "labelled", per_class=1)
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / NO_MODEL).touch()
    done = subprocess.run([str(Path(sys.executable).parent / "evaluate"), "--data", str(tmp_path / "labelled"),
                           "--output", str(tmp_path / "e.json"), *[a.format(tmp=tmp_path) for a in args]],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1 and message in done.stdout + done.stderr
    assert not (tmp_path / "e.json").exists()


def test_the_evaluation_page_shows_its_matrix_and_mistakes(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    """Circles filed under `square` are mistakes the model makes with confidence; hexagons it does not know."""
    data = labelled_with_mistakes(tmp_path / "labelled", circles_as_squares=3)
    work = tmp_path / "work"
    assert main(["--workdir", str(work), "evaluate", str(model), "--data", str(data), "--name", "e2"]) == 0
    assert "classes the model does not know: {'hexagon': 1}" in capsys.readouterr().err
    result = json.loads((work / "evaluations" / "e2" / "evaluation.json").read_text())
    assert result["unknown_classes"] == {"hexagon": 1} and result["images"] == 12
    assert sum(map(sum, result["confusion_matrix"])) == 12
    answers = {line["file"]: line["predictions"][0] for line in
               lines_of(work / "evaluations" / "e2" / "transform" / "predictions.jsonl")}  # fmt: skip
    wrong = {f: a for f, a in answers.items() if f.split("/")[0] != a["label"] and not f.startswith("hexagon")}
    assert {f"square/really_a_circle_{i}.jpg" for i in range(3)} <= wrong.keys()  # the model never saw them as squares
    assert [m["file"] for m in result["worst_mistakes"]] == sorted(wrong, key=lambda f: (-wrong[f]["probability"], f))[
        :12
    ]  # most confident first
    pairs = Counter((f.split("/")[0], a["label"]) for f, a in wrong.items())
    assert {(p["true"], p["predicted"]): p["count"] for p in result["most_confused"]} == pairs
    square = next(c for c in result["per_class"] if c["class"] == "square")
    assert square["support"] == 6 and square["recall"] <= 0.5

    page = work / "evaluations" / "e2" / "evaluation.html"
    dom = chromium(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="confusion-matrix"' in dom.stdout and dom.stdout.count("<figure>") == len(result["worst_mistakes"])
    assert "https://" not in page.read_text() and "<script" not in page.read_text()  # nothing fetched, no code
    shot = tmp_path / "evaluation.png"
    rendered = chromium(page, tmp_path, "--window-size=1100,2200", f"--screenshot={shot}")
    assert rendered.returncode == 0 and shot.is_file(), rendered.stderr[-2000:]
    r, g, b = np.moveaxis(np.asarray(Image.open(shot).convert("RGB"), dtype=int), -1, 0)
    navy = int(((r < 40) & (g > 30) & (g < 80) & (b > 90) & (b < 140)).sum())  # the matrix's fullest cells
    reds = int(((r > 150) & (r - g > 80) & (r - b > 80)).sum())  # circles in the gallery
    assert navy > 300, f"{navy} navy pixels: the confusion matrix did not render"
    assert reds > 200, f"{reds} red pixels: the gallery's thumbnails did not render"


def test_lineage_leads_from_an_evaluation_to_its_job(tmp_path: Path, shapes_dataset: Path, capsys):
    work = ["--workdir", str(tmp_path / "work")]
    hps = ["-H", "epochs=1", "-H", "batch_size=6", "-H", "image_size=32", "-H", "num_workers=0",
           "-H", "pretrained=false", "-H", "profiler_interval_ms=0", "-H", "debug_hook=false"]  # fmt: skip
    assert main([*work, "train", "--data", str(shapes_dataset), "--job-name", "j1", *hps]) == 0
    assert main([*work, "evaluate", "j1", "--data", str(shapes_dataset), "--name", "e3"]) == 0
    capsys.readouterr()
    assert main([*work, "lineage", "e3", "--json"]) == 0
    chain = json.loads(capsys.readouterr().out)
    assert [link["step"] for link in chain] == ["evaluation", "training job", "dataset"]
    assert chain[0]["job_name"] == "j1" and chain[0]["model_sha256"] == chain[1]["model_sha256"]
    assert chain[1]["evaluations"] == ["e3"]
    assert abs(chain[0]["metrics"]["accuracy"] - chain[1]["test_metrics"]["accuracy"]) < 1e-4
