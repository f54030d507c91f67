"""The CLI explains itself: every option of every subcommand has help text."""

import argparse

import pytest

from launcher.cli import get_args_parser, main
from launcher.contract import decode_value


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = get_args_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_has_help():
    parsers = {"launcher": get_args_parser(), **subparsers()}
    for name, parser in parsers.items():
        assert parser.description, f"{name} has no description"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help.strip(), f"{name}: {action.option_strings or action.dest} has no help"


@pytest.mark.parametrize("command", ["sample-data", "train", "deploy", "predict", "stop", "report"])
def test_subcommand_help_exits_cleanly(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: launcher {command}")


def test_values_are_typed_like_json():
    assert [decode_value(v) for v in ["0.01", "64", "true", "resnet50", '"128"']] == [0.01, 64, True, "resnet50", "128"]


def test_train_without_data_is_explained(tmp_path, capsys):
    assert main(["--workdir", str(tmp_path), "train"]) == 1
    assert "no data: give --data DIR" in capsys.readouterr().err


def test_sagemaker_debugger_needs_the_sagemaker_backend(tmp_path, capsys):
    assert main(["--workdir", str(tmp_path), "train", "--data", str(tmp_path), "--sagemaker-debugger"]) == 1
    assert (
        "--sagemaker-debugger is an option of --backend sagemaker, not of the process backend"
        in capsys.readouterr().err
    )


@pytest.mark.slow
def test_process_backend_refuses_an_s3_output(tmp_path, shapes_dataset, capsys):
    work = ["--workdir", str(tmp_path / "work")]
    assert main([*work, "train", "--data", str(shapes_dataset), "--output", "s3://bucket/prefix"]) == 1
    assert "give --output a folder, not s3://bucket/prefix" in capsys.readouterr().err
