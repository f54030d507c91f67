"""The launcher's side of the SageMaker layout: encoded hyperparameters, packing, safe unpacking."""

import io
import json
import tarfile
from pathlib import Path

import pytest

from launcher.contract import encode_hyperparameters, pack, unpack, write_job_config
from launcher.errors import LauncherError


def test_hyperparameters_are_json_encoded_strings():
    encoded = encode_hyperparameters({"batch_size": "128", "learning_rate": 0.03, "epochs": 2, "pretrained": True})
    assert encoded == {"batch_size": '"128"', "learning_rate": "0.03", "epochs": "2", "pretrained": "true"}
    assert all(isinstance(v, str) for v in encoded.values())


def test_job_config_layout(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    write_job_config(tmp_path / "job", {"epochs": 1}, {"training": data})
    config = tmp_path / "job" / "input" / "config"
    assert json.loads((config / "hyperparameters.json").read_text()) == {"epochs": "1"}
    assert json.loads((config / "resourceconfig.json").read_text())["hosts"] == ["algo-1"]
    assert list(json.loads((config / "inputdataconfig.json").read_text())) == ["training"]
    assert (tmp_path / "job" / "input" / "data" / "training").resolve() == data.resolve()


def test_missing_channel_folder_is_named(tmp_path: Path):
    with pytest.raises(LauncherError, match=r"channel 'train': .*missing does not exist"):
        write_job_config(tmp_path / "job", {}, {"train": tmp_path / "missing"})


def test_pack_and_unpack_round_trip(tmp_path: Path):
    (tmp_path / "model" / "code").mkdir(parents=True)
    (tmp_path / "model" / "model.pth").write_bytes(b"weights")
    (tmp_path / "model" / "code" / "inference.py").write_text("# code")
    archive = pack(tmp_path / "model", tmp_path / "out" / "model.tar.gz")
    unpack(archive, tmp_path / "restored")
    assert (tmp_path / "restored" / "model.pth").read_bytes() == b"weights"
    assert (tmp_path / "restored" / "code" / "inference.py").read_text() == "# code"


def tarball_with(path: Path, member: str) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    return path


def test_unpack_refuses_paths_out_of_the_target(tmp_path: Path):
    with pytest.raises(LauncherError, match="cannot unpack"):
        unpack(tarball_with(tmp_path / "evil.tar.gz", "../escape.txt"), tmp_path / "target")
    assert not (tmp_path / "escape.txt").exists()


def test_unpack_keeps_absolute_members_inside_the_target(tmp_path: Path):
    unpack(tarball_with(tmp_path / "evil.tar.gz", f"{tmp_path}/outside.txt"), tmp_path / "target")
    assert not (tmp_path / "outside.txt").exists()
    assert (tmp_path / "target" / str(tmp_path).lstrip("/") / "outside.txt").read_bytes() == b"evil"


def test_unpack_refuses_links_out_of_the_target(tmp_path: Path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("passwd")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(LauncherError, match="cannot unpack"):
        unpack(archive, tmp_path / "target")
