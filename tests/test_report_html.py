"""report.html: a tiny real run writes it (valid HTML, embedded PNG figures, every front
circuit named), `summarize` rewrites it, a `--no-test` run writes what exists, and
committed run folders of older code render too (in a copy: the records stay read-only).
The page is read back with the standard library's html.parser, and the numbers it shows
are checked against the run folder's CSV files, not against the module that wrote it."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import isolated_cwd, read_csv, write_dataset

from surrogate_nas.errors import UserError
from surrogate_nas.results.report_html import write_run_report

REPO = Path(__file__).resolve().parents[1]
REAL_RUN = REPO / "experiments" / "input-range" / "surrogate-b300-p99.9-s0"  # per-image records
OLD_RUN = REPO / "experiments" / "headline" / "surrogate-b300-auto"  # made before per-image records
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["run", "--pop-size", "4", "--offspring-factor", "3", "--budget", "12", "--search-images", "200"]


class Page(HTMLParser):
    """Tags must nest and close (void elements excepted); collects images, table rows, text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []
        self.rows: list[list[str]] = []
        self.headings: list[str] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed: {self.stack}")

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("h1", "h2", "h3"):
            self._heading = []

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append(" ".join("".join(self._heading).split()))
            self._heading = None

    def handle_data(self, data):
        self.text.append(data)
        for part in (self._cell, self._heading):
            if part is not None:
                part.append(data)


def check_page(path: Path) -> Page:
    """Well-formed, with html/head/body/table elements, and at least one data: PNG."""
    page = Page(path.read_text(encoding="utf-8"))
    assert page.errors == []
    source = path.read_text(encoding="utf-8")
    for tag in ("html", "head", "body", "table", "h1", "h2"):
        assert f"<{tag}" in source and f"</{tag}>" in source, tag
    assert not re.search(r"<script|<link|src=\"(?!data:)", source)  # self-contained
    pngs = [src for src in page.images if src.startswith("data:image/png;base64,")]
    assert pngs and len(pngs) == len(page.images)
    for src in pngs:
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG_MAGIC)
    return page


def assert_front_named(page: Page, run_dir: Path) -> None:
    """Every front.csv row appears as a table row whose cells hold its circuits in layer order."""
    front = read_csv(run_dir / "front.csv")
    assert front
    for r in front:
        circuits = r["genome"].split(";")
        n = len(circuits)
        assert any([c.split(" ")[0] for c in row[k:k + n]] == circuits
                   for row in page.rows for k in range(len(row) - n + 1)), circuits


def paired_interval(exact: np.ndarray, point: np.ndarray) -> tuple[float, float]:
    """README's paired interval, written out again: (b - c) / n +- 1.96 sqrt(b + c - (b - c)^2 / n) / n, in pp."""
    n = len(exact)
    b, c = int(np.sum(exact & ~point)), int(np.sum(~exact & point))
    half = 1.959964 * math.sqrt(b + c - (b - c) ** 2 / n) / n
    return 100 * ((b - c) / n - half), 100 * ((b - c) / n + half)


def bits_of(run_dir: Path) -> dict:
    out = {}
    for r in read_csv(run_dir / "rescored_bits.csv"):
        raw = np.frombuffer(bytes.fromhex(r["bits"]), np.uint8)
        out[r["genome_indices"], r["split"]] = np.unpackbits(raw, count=int(r["n_images"]), bitorder="little").astype(bool)
    return out


# --------------------------------------------------------------------------- a tiny real run


@pytest.fixture(scope="module")
def tiny(project, tmp_path_factory):
    """A run as the issue states it (budget 12, 200 search images) on a dataset with 200
    validation images (the session's has 30), and a `--no-test` run on the same cache."""
    from surrogate_nas import cli

    base = tmp_path_factory.mktemp("report")
    data = write_dataset(base / "cifar", seed=1, train_per_class=200)
    flags = project.flags(cache=base / "cache", data=data)
    out = base / "runs"
    printed = io.StringIO()
    with isolated_cwd(base), contextlib.redirect_stdout(printed):
        rc = cli.main(TINY + ["--out", str(out), "--run-id", "r"] + flags)
        rc_no_test = cli.main(TINY + ["--out", str(out), "--run-id", "n", "--no-test"] + flags)
    return {"rc": (rc, rc_no_test), "run": out / "r", "no_test": out / "n", "printed": printed.getvalue().splitlines()}


def test_tiny_run_writes_a_report(tiny):
    assert tiny["rc"] == (0, 0)
    run = tiny["run"]
    assert f"report: {run / 'report.html'}" in tiny["printed"]
    page = check_page(run / "report.html")
    assert_front_named(page, run)
    assert len(page.images) == 2  # the front, hypervolume
    for heading in ("Chosen designs at 0.5 / 1 / 2 pp", "Front", "Hypervolume against evaluations", "Cost", "Settings"):
        assert heading in page.headings
    assert "Rule: point estimate" in page.headings and "Rule: upper bound" in page.headings
    cells = {row[0]: row[1:] for row in page.rows if row}
    evaluations = read_csv(run / "evaluations.csv")
    cached = sum(r["from_cache"] == "1" for r in evaluations)
    assert cells["true evaluations (budget)"] == ["12 (12)"]
    assert cells["computed / from the cache"] == [f"{12 - cached} / {cached}"]
    assert cells["search_images"] == ["200"] and cells["budget"] == ["12"]
    config = json.loads((run / "config.json").read_text())
    assert cells["mutation_eta"] == [f"{config['search']['mutation_eta']:g}"]
    summary = json.loads((run / "summary.json").read_text())
    for key, tolerance in (("0.5pp", "0.5 pp"), ("1pp", "1 pp"), ("2pp", "2 pp")):
        chosen = summary["chosen"][key]
        row = next(r for r in page.rows if r and r[0] == tolerance)  # the point-estimate table comes first
        if chosen is None:
            assert "no point qualifies" in row[1]
        else:
            assert row[1] == f"{chosen['energy_saving_pct']:.1f} %"
            assert [c.split(" ")[0] for c in row[-5:]] == chosen["genome"].split(";")


def test_summarize_rewrites_the_report(tiny, cli):
    run = tiny["run"]
    (run / "report.html").write_text("stale")
    r = cli("summarize", str(run), paths=False)
    assert r.rc == 0 and f"report: {run / 'report.html'}" in r.out.splitlines()
    assert_front_named(check_page(run / "report.html"), run)
    (run / "report.html").unlink()
    r = cli("summarize", str(run), "--json", paths=False)
    assert r.rc == 0 and json.loads(r.out)["run"] == "r"  # stdout stays JSON; the report line goes to stderr
    assert f"report: {run / 'report.html'}" in r.err
    check_page(run / "report.html")


def test_a_run_without_rescoring_reports_the_search_set(tiny):
    run = tiny["no_test"]
    assert not (run / "rescored.csv").exists() and not (run / "summary.json").exists()
    page = check_page(run / "report.html")
    assert_front_named(page, run)
    assert len(page.images) == 2
    assert "not re-scored" in "".join(page.text)
    for r in read_csv(run / "front.csv"):  # search-set accuracy of every point, no validation column
        assert any(r["search_accuracy"][:6] in row and row[4] == "-" for row in page.rows if len(row) > 5)


# --------------------------------------------------------------------------- committed records


@pytest.fixture
def real_copy(tmp_path):
    shutil.copytree(REAL_RUN, tmp_path / REAL_RUN.name)
    return tmp_path / REAL_RUN.name


def test_a_committed_run_renders_with_its_intervals(real_copy):
    page = check_page(write_run_report(real_copy))
    assert_front_named(page, real_copy)
    bits = bits_of(real_copy)
    exact = next(r for r in read_csv(real_copy / "rescored.csv") if r["role"] == "all-exact")["genome_indices"]
    rows = [row for row in page.rows if len(row) == 15 and row[0][:1].isdigit()]  # the front table: 10 + 5 layers
    front = read_csv(real_copy / "front.csv")
    assert len(rows) == len(front)
    by_circuits = {tuple(c.split(" ")[0] for c in row[-5:]): row for row in rows}
    checked = 0
    for r in front:
        row = by_circuits[tuple(r["genome"].split(";"))]
        for split, column in (("validation", 6), ("test", 9)):
            point = bits.get((r["genome_indices"], split))
            if point is not None:
                lo, hi = paired_interval(bits[exact, split], point)
                assert row[column] == f"[{lo:.2f}, {hi:.2f}]"
                checked += 1
            else:
                assert row[column] == "-"
    assert checked == len(front) + 4  # every point on validation, the 4 chosen ones on test


def test_an_old_run_without_per_image_records_renders(tmp_path):
    run = tmp_path / OLD_RUN.name
    shutil.copytree(OLD_RUN, run)
    page = check_page(write_run_report(run))
    assert_front_named(page, run)
    text = " ".join(page.text)
    assert "no per-image records" in text
    assert any(row[-5:] == ["layer 1", "layer 2", "layer 3", "layer 4", "layer 5"] for row in page.rows)  # no names


def test_the_design_section_shows_what_design_json_has(real_copy):
    design = {  # design.json's names (issue 36); "2", the whole upper rule and two costs left out
        "model": "alexnet", "seed": 0, "reference": {"choosing_accuracy": 0.8342},
        "images": {"split_of_choosing": "validation"},
        "chosen": {"0.5": {"genome": [27, 27, 24, 22, 12], "energy_saving_pct": 61.25, "choosing_loss_pp": 0.41,
                           "choosing_loss_ci_pp": [-0.1, 0.92], "test_loss_pp": 0.37, "test_loss_ci_pp": [0.02, 0.72],
                           "retrained": True, "design": "designs/0.5.keras"},
                   "1": {"genome": ["mul8u_KEM"] * 5, "retrained": False}},
        "cost": {"wall_s": 5400.0, "float_pass_s": 1.5, "phases": {"search": 1800.0, "retrain": 3000.0}},
    }
    page = check_page(write_run_report(real_copy, design))
    assert "After retraining (design)" in page.headings
    rows: dict[str, list[str]] = {}
    for row in page.rows:  # the first table (rule "chosen"); the second, "chosen_upper", is all "-" here
        if row and row[0].endswith(" pp") and len(row) == 13:
            rows.setdefault(row[0], row)
    assert sum(len(row) == 13 and row[1:] == ["-"] * 12 for row in page.rows) == 4  # upper: 3 missing + "2" of chosen
    assert rows["0.5 pp"][:8] == ["0.5 pp", "61.2", "0.41", "[-0.10, 0.92]", "0.37", "[0.02, 0.72]", "yes",
                                  "designs/0.5.keras"]
    assert rows["0.5 pp"][8:] == ["mul8u_KEM", "mul8u_KEM", "mul8u_GS2", "mul8u_EXZ", "mul8u_19DB"]  # config's names
    assert rows["1 pp"][1:8] == ["-", "-", "-", "-", "-", "no", "-"]
    assert rows["2 pp"][1:] == ["-"] * 12
    cells = {row[0]: row[1:] for row in page.rows if row}
    assert cells["phase: retrain"] == ["3000 s (0.83 h)"] and cells["retrain_epoch_s"] == ["-"]
    # written beside the run as design.json, a later refresh (summarize) keeps the section
    (real_copy / "design.json").write_text(json.dumps(design))
    assert "After retraining (design)" in Page(write_run_report(real_copy).read_text()).headings


def test_not_a_folder_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="no such run folder"):
        write_run_report(tmp_path / "missing")
