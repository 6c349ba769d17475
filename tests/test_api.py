"""The Python API: the ten-line example of surrogate_nas/__init__.py's docstring runs as
written, on the fixture project (only its paths and sizes swapped), and gives what the
CLI gives."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import EXACT_INDEX, read_csv


def docstring_example() -> str:
    import surrogate_nas

    doc = surrogate_nas.__doc__
    block = doc.split("::\n", 1)[1].lstrip("\n")
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


def test_import_is_light():
    """`import surrogate_nas` does not import TensorFlow (the CLI's --help stays fast)."""
    import subprocess
    import sys

    code = "import sys, surrogate_nas; assert 'tensorflow' not in sys.modules; print(surrogate_nas.__version__)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_docstring_example_runs(project, tmp_path, capsys, monkeypatch):
    code = docstring_example()
    assert 8 <= len([line for line in code.splitlines() if line.strip()]) <= 12, code
    swaps = {'"models/alexnet_cifar10.keras"': repr(str(project.model)),
             '"../shared/datasets/cifar10-jpeg.tar.gz"': repr(str(project.data)),
             '"multipliers/evoapprox8b"': repr(str(project.catalog)), '"cache"': repr(str(tmp_path / "cache")),
             "search_images=500": "search_images=20, test_images=20", '"mul8u_1JFF"': '"trunc"',
             "budget=100": "budget=12, pop_size=4", '"experiments/runs"': repr(str(tmp_path / "runs"))}
    for old, new in swaps.items():
        assert old in code, old
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "surrogate_nas docstring", "exec"), namespace)
    out = capsys.readouterr().out.splitlines()
    ctx, result = namespace["ctx"], namespace["result"]
    assert out[0] == str(["conv1", "conv2", "conv3", "conv4", "conv5"])
    assert out[1].startswith("Score(genome=(0, 0, 0, 0, 0), accuracy=")
    assert result.front and len(result.evaluations) == 12
    # the same objects the CLI uses: the run folder is a normal run folder
    front = read_csv(result.run_dir / "front.csv")
    assert [r["genome_indices"] for r in front] == [",".join(map(str, e.genome)) for e in result.front]
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["fingerprint"] == ctx.evaluator.fingerprint and config["search"]["search_images"] == 20
    assert (EXACT_INDEX,) * 5 in result.rescored
    printed = [line for line in out if line[:1].isdigit()]
    assert len(printed) == len(result.front)


def test_context_create_checks_its_arguments(project):
    import surrogate_nas as sn

    with pytest.raises(sn.UserError, match="compensation: expected one of"):
        sn.Context.create(model=project.model, compensation="bogus")
    with pytest.raises(sn.UserError, match="approximate: expected one of conv, conv\\+dense, got 'all'"):
        sn.Context.create(model=project.model, approximate="all")
