import subprocess
import sys

from typer.testing import CliRunner

import resnets
from resnets.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"resnets {resnets.__version__}"


def test_info_table_lists_every_model_with_computed_numbers():
    result = runner.invoke(app, ["info"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    for name in resnets.list_models():
        assert name in result.output
    assert "25,557,032" in result.output and "4.089" in result.output
    assert "269,722" in result.output and "3x3 (v1.5)" in result.output
    assert "22.85" in result.output  # ResNet-50, He et al. 2016 Table 3


def test_info_paper_stride_gives_table1_flops():
    result = runner.invoke(app, ["info", "--paper-stride"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    assert "3.858" in result.output and "1x1 (paper)" in result.output


def test_info_name_prints_stages_with_shapes():
    result = runner.invoke(app, ["info", "resnet50"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    assert "[1, 2048, 7, 7]" in result.output and "3 x Bottleneck" in result.output
    assert "stride on 3x3 (v1.5)" in result.output


def test_unknown_model_is_one_line_error_exit_1():
    result = runner.invoke(app, ["info", "resnet5"])
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown model 'resnet5'")
    assert "Traceback" not in result.output


def test_debug_shows_the_exception():
    result = runner.invoke(app, ["--debug", "info", "resnet5"])
    assert result.exit_code == 1
    assert isinstance(result.exception, ValueError)


def test_console_script_end_to_end():
    out = subprocess.run([sys.executable, "-m", "resnets", "info", "resnet20"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "269,722" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "resnets", "info", "nope"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
