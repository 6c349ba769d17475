"""Catalog loading, metrics, importers and the `multipliers` CLI, on real files in tmp_path."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from surrogate_nas import cli, config
from surrogate_nas.errors import UserError
from surrogate_nas.multipliers.catalog import Catalog, Multiplier, load_catalog
from surrogate_nas.multipliers.importers import import_catalog
from surrogate_nas.multipliers.metrics import CatalogMetricWarning, compute_metrics
from surrogate_nas.multipliers.tables import error_table, exact_table, load_lut

CODES = np.arange(256, dtype=np.int64)
A, B = np.meshgrid(CODES, CODES, indexing="ij")  # A = activation (row), B = weight (column)
EXACT = A * B
TRUNC = EXACT & ~0xFF
RNG_ERR = np.clip(EXACT + np.random.default_rng(0).integers(-3, 4, size=EXACT.shape), 0, 65535)
ASYM = A * (B & 0xFE)  # not symmetric: catches swapped operands


def write_table(path: Path, values) -> bytes:
    data = np.asarray(values).astype("<u2").tobytes()
    path.write_bytes(data)
    return data


def write_catalog(folder: Path, tables: dict, powers: dict | None = None, extra: dict | None = None,
                  sha: bool = True) -> Path:
    """Catalog folder with tables in dict order; `extra` = {name: {column: text}}."""
    folder.mkdir(parents=True, exist_ok=True)
    extra = extra or {}
    cols = ["name", "lut_file", "power_mW"] + (["lut_sha256"] if sha else [])
    cols += sorted({c for d in extra.values() for c in d})
    with open(folder / "catalog.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for i, (name, table) in enumerate(tables.items()):
            data = write_table(folder / f"{name}.bin", table)
            row = {"name": name, "lut_file": f"{name}.bin",
                   "power_mW": (powers or {}).get(name, 0.1 * (i + 1))}
            if sha:
                row["lut_sha256"] = hashlib.sha256(data).hexdigest()
            row.update(extra.get(name, {}))
            w.writerow(row)
    return folder


@pytest.fixture
def tiny(tmp_path) -> Path:
    return write_catalog(tmp_path / "cat", {"trunc": TRUNC, "exact": EXACT, "noisy": RNG_ERR},
                         powers={"trunc": 0.2, "exact": 0.4, "noisy": 0.3})


def reference_metrics(table) -> dict:
    """Metric definitions straight from the README, written independently of the library."""
    err = np.asarray(table, dtype=np.float64) - EXACT
    nz = EXACT != 0
    rel = np.abs(err[nz]) / EXACT[nz]
    return {
        "mae": np.mean(np.abs(err)), "wce": np.max(np.abs(err)),
        "ep_pct": 100.0 * np.sum(err != 0) / 65536, "mre_pct": 100.0 * np.mean(rel),
        "mse": np.mean(err ** 2), "mean_error": np.mean(err), "error_std": np.std(err),
        "mae_pct": np.mean(np.abs(err)) / 2 ** 16 * 100, "wce_pct": np.max(np.abs(err)) / 2 ** 16 * 100,
        "wcre_pct": 100.0 * np.max(rel),
    }


# ----------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("table", [EXACT, TRUNC, RNG_ERR, ASYM], ids=["exact", "trunc", "noisy", "asym"])
def test_metrics_match_definitions(table):
    got = compute_metrics(table.astype(np.uint16)).as_dict()
    want = reference_metrics(table)
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_metrics_hand_values():
    m = compute_metrics(TRUNC.astype(np.uint16))
    low = EXACT & 0xFF  # the error is minus the cleared low byte
    assert m.wce == low.max() == 255
    assert m.mean_error == pytest.approx(-low.mean())
    zero = compute_metrics(np.zeros((256, 256), np.uint16))
    assert zero.wcre_pct == 100.0 and zero.wce == 255 * 255
    assert compute_metrics(EXACT.astype(np.uint16)).as_dict() == dict.fromkeys(reference_metrics(EXACT), 0.0)


def test_error_table_signed_int32():
    err = error_table(np.zeros((256, 256), np.uint16))
    assert err.dtype == np.int32 and err[255, 255] == -65025 and err[3, 5] == -15
    assert np.array_equal(exact_table(), EXACT)
    with pytest.raises(ValueError):
        error_table(np.zeros((16, 16), np.uint16))


# ----------------------------------------------------------------------------- catalog


def test_catalog_access(tiny):
    cat = load_catalog(tiny)
    assert isinstance(cat, Catalog) and len(cat) == 3 and cat.path == tiny
    assert cat.names == ["trunc", "exact", "noisy"]
    assert [m.name for m in cat] == cat.names
    assert cat[1].name == "exact" and cat[np.int64(2)].name == "noisy" and cat[np.uint8(0)].name == "trunc"
    assert cat[-1].name == "noisy"
    assert cat["noisy"] is cat[2] and cat["noisy.bin"] is cat[2]
    assert cat.index("exact") == 1 and cat.index("exact.bin") == 1
    assert "trunc" in cat and "nope" not in cat
    assert cat.exact is cat[1] and cat[1].is_exact
    m = cat["trunc"]
    assert isinstance(m, Multiplier) and m.power_mw == 0.2
    assert m.lut.dtype == np.uint16 and m.lut.shape == (256, 256)
    assert np.array_equal(m.lut, TRUNC)
    assert m.sha256 == hashlib.sha256((tiny / "trunc.bin").read_bytes()).hexdigest()
    assert m.csv["lut_file"] == "trunc.bin" and "name" not in m.csv
    assert m.metrics.wce == 255
    with pytest.raises(ValueError):
        m.lut[0, 0] = 1  # shared tables must not be edited in place
    with pytest.raises(AttributeError):
        m.power_mw = 1.0  # type: ignore[misc]
    assert np.allclose(cat.powers, [0.2, 0.4, 0.3])


def test_catalog_lookup_errors(tiny):
    cat = load_catalog(tiny)
    with pytest.raises(KeyError, match="unknown multiplier 'nope'"):
        cat["nope"]
    with pytest.raises(UserError, match="unknown multiplier"):
        cat.index("nope")
    with pytest.raises(IndexError, match="out of range"):
        cat[3]
    with pytest.raises(TypeError):
        cat[1.0]  # type: ignore[index]


def test_exact_none_and_fingerprint(tmp_path, tiny):
    cat = load_catalog(tiny)
    no_exact = load_catalog(write_catalog(tmp_path / "ne", {"trunc": TRUNC}))
    assert no_exact.exact is None
    again = load_catalog(tiny)
    assert again.fingerprint == cat.fingerprint and len(cat.fingerprint) == 64
    other = load_catalog(write_catalog(tmp_path / "p", {"trunc": TRUNC, "exact": EXACT, "noisy": RNG_ERR},
                                       powers={"trunc": 0.2, "exact": 0.4, "noisy": 0.31}))
    reordered = load_catalog(write_catalog(tmp_path / "o", {"exact": EXACT, "trunc": TRUNC, "noisy": RNG_ERR},
                                           powers={"trunc": 0.2, "exact": 0.4, "noisy": 0.3}))
    assert len({cat.fingerprint, other.fingerprint, reordered.fingerprint}) == 3


def test_catalog_csv_path_and_optional_sha(tmp_path):
    folder = write_catalog(tmp_path / "c", {"exact": EXACT}, sha=False)
    assert load_catalog(folder / "catalog.csv").exact is not None


def test_load_lut(tmp_path):
    write_table(tmp_path / "t.bin", ASYM)
    lut = load_lut(tmp_path / "t.bin")
    assert lut.dtype == np.uint16 and np.array_equal(lut, ASYM) and lut[3, 5] == 3 * 4
    (tmp_path / "short.bin").write_bytes(b"\0" * 100)
    with pytest.raises(UserError, match=r"short\.bin: lookup table is 100 bytes, expected 131,072"):
        load_lut(tmp_path / "short.bin")
    with pytest.raises(UserError, match=r"missing\.bin: lookup table not found"):
        load_lut(tmp_path / "missing.bin")


def _rewrite_csv(folder: Path, edit) -> None:
    path = folder / "catalog.csv"
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    rows = edit(rows)
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def _set(row: int, col: str, value: str):
    def edit(rows):
        rows[row][rows[0].index(col)] = value
        return rows
    return edit


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (_set(1, "power_mW", "abc"), r"catalog\.csv:2: trunc: power 'abc' is not a number"),
        (_set(2, "power_mW", "-0.1"), r"catalog\.csv:3: exact: power '-0\.1' is negative"),
        (_set(1, "power_mW", "nan"), r"catalog\.csv:2: trunc: power 'nan' is not a finite number"),
        (_set(1, "power_mW", ""), r"catalog\.csv:2: trunc: power '' is not a number"),
        (_set(3, "name", "trunc"), r"catalog\.csv:4: duplicate name 'trunc' \(first on line 2\)"),
        (_set(1, "lut_sha256", "0" * 64), r"trunc\.bin: sha256 mismatch: catalog\.csv line 2 says 0+"),
        (_set(2, "lut_file", "gone.bin"), r"gone\.bin: lookup table not found \(named by catalog\.csv line 3\)"),
        (lambda rows: [r[:2] + r[3:] for r in rows], r"catalog\.csv: missing required column\(s\) power_mW"),
        (lambda rows: rows[:1], r"catalog\.csv: empty catalog"),
        (lambda rows: [], r"catalog\.csv: empty catalog"),
    ],
    ids=["power-text", "power-negative", "power-nan", "power-empty", "duplicate", "sha256", "missing-table",
         "missing-column", "header-only", "empty-file"],
)
def test_catalog_errors(tiny, edit, pattern):
    _rewrite_csv(tiny, edit)
    with pytest.raises(UserError, match=pattern) as info:
        load_catalog(tiny)
    assert "\n" not in str(info.value)


def test_catalog_file_errors(tmp_path, tiny):
    with pytest.raises(UserError, match=r"nowhere: multiplier catalog folder not found"):
        load_catalog(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty/catalog\.csv: catalog file not found"):
        load_catalog(tmp_path / "empty")
    (tiny / "noisy.bin").write_bytes(b"\1" * 131070)
    with pytest.raises(UserError, match=r"noisy\.bin: lookup table is 131,070 bytes, expected 131,072"):
        load_catalog(tiny)


def test_stated_metrics_checked(tmp_path):
    m = reference_metrics(TRUNC)
    good = {"mae": f"{m['mae']:.3g}", "mse": f"{m['mse'] / 100:.3f}e2", "ep_pct": f"{m['ep_pct']:.2f}",
            "wce": "255", "wcre_pct": f"{m['wcre_pct']:.2f}", "mae_pct": f"{m['mae_pct']:.2g}"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_catalog(write_catalog(tmp_path / "ok", {"trunc": TRUNC}, extra={"trunc": good}))
    bad = dict(good, mae=f"{m['mae'] * 1.5:.3g}")
    with pytest.warns(CatalogMetricWarning) as record:
        load_catalog(write_catalog(tmp_path / "bad", {"trunc": TRUNC}, extra={"trunc": bad}))
    assert len(record) == 1
    msg = str(record[0].message)
    assert "trunc" in msg and "mae" in msg and "catalog.csv" in msg


# ----------------------------------------------------------------------------- import


def test_import_bins_with_powers_csv(tmp_path):
    src = tmp_path / "bins"
    src.mkdir()
    for name, table in {"a_trunc": TRUNC, "b_exact": EXACT, "c_asym": ASYM}.items():
        write_table(src / f"{name}.bin", table)
    powers = tmp_path / "p.csv"
    powers.write_text("name,power_mW\nc_asym,0.3\nb_exact.bin,0.39\na_trunc,0.2\n")
    cat = import_catalog(src, tmp_path / "out", powers_csv=powers)
    assert cat.names == ["c_asym", "b_exact", "a_trunc"]  # order of the powers CSV
    assert cat.exact.name == "b_exact" and cat["c_asym"].power_mw == 0.3
    assert np.array_equal(cat["c_asym"].lut, ASYM)
    with open(tmp_path / "out" / "catalog.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert header[:4] == ["name", "lut_file", "lut_sha256", "power_mW"] and "mre_pct" in header

    # powers.csv inside the folder is found without --powers
    shutil.copy(powers, src / "powers.csv")
    assert import_catalog(src, tmp_path / "out2").names == cat.names
    with pytest.raises(UserError, match=r"out/catalog\.csv: already exists; pass --overwrite"):
        import_catalog(src, tmp_path / "out")
    assert len(import_catalog(src, tmp_path / "out", overwrite=True)) == 3


def test_import_bins_errors(tmp_path):
    src = tmp_path / "bins"
    src.mkdir()
    write_table(src / "x.bin", EXACT)
    write_table(src / "y.bin", TRUNC)
    with pytest.raises(UserError, match=r"x\.bin: no power for x \(no powers CSV"):
        import_catalog(src, tmp_path / "out")
    (tmp_path / "p.csv").write_text("name,power_mW\nx,0.4\n")
    with pytest.raises(UserError, match=r"y\.bin: no power for y \(.*p\.csv has no row for it\)"):
        import_catalog(src, tmp_path / "out", powers_csv=tmp_path / "p.csv")
    (tmp_path / "q.csv").write_text("name,watts\nx,0.4\n")
    with pytest.raises(UserError, match=r"q\.csv: missing required column\(s\) power_mW"):
        import_catalog(src, tmp_path / "out", powers_csv=tmp_path / "q.csv")
    (src / "y.bin").write_bytes(b"\0" * 10)
    (tmp_path / "r.csv").write_text("name,power_mW\nx,0.4\ny,0.2\n")
    with pytest.raises(UserError, match=r"y\.bin: lookup table is 10 bytes"):
        import_catalog(src, tmp_path / "out", powers_csv=tmp_path / "r.csv")
    with pytest.raises(UserError, match=r"nothing-here: not found"):
        import_catalog(tmp_path / "nothing-here", tmp_path / "out")


EVOAPPROX_C = """/***
* This code is a part of EvoApproxLib library (ehw.fit.vutbr.cz/approxlib) distributed under The MIT License.
***/
// MAE% = 0.19 %
// PDK45_PWR = 0.123 mW
// PDK45_AREA = 300.0 um2

#include <stdint.h>
#include <stdlib.h>

uint64_t mul8u_ASYM(const uint64_t B,const uint64_t A)
{
  uint64_t O;
  O = B * (A & 0xFE);
  return O;
}
"""

BLOCK_COMMENT_C = """/*
 * PDK45_PWR = 0.391 mW
 */
#include <stdint.h>
static uint64_t helper(uint64_t x, uint64_t y) { return x * y; }
uint64_t mul8u_EX(const uint64_t B, const uint64_t A) { return helper(B, A); }
"""

needs_cc = pytest.mark.skipif(not (os.environ.get("CC") or shutil.which("cc")), reason="no C compiler")


@needs_cc
def test_import_c_files(tmp_path):
    src = tmp_path / "c"
    src.mkdir()
    (src / "mul8u_ASYM.c").write_text(EVOAPPROX_C)
    (src / "mul8u_EX.c").write_text(BLOCK_COMMENT_C)
    cat = import_catalog(src, tmp_path / "out")
    assert cat.names == ["mul8u_ASYM", "mul8u_EX"]
    # first C argument = activation code a (row), second = weight code b (column)
    assert np.array_equal(cat["mul8u_ASYM"].lut, ASYM)
    assert cat["mul8u_ASYM"].power_mw == 0.123 and cat["mul8u_EX"].power_mw == 0.391
    assert cat.exact is cat["mul8u_EX"]
    assert (tmp_path / "out" / "mul8u_ASYM.bin").stat().st_size == 131072


@needs_cc
def test_import_c_errors(tmp_path):
    bad = tmp_path / "broken.c"
    bad.write_text("#include <stdint.h>\nuint64_t mul8u_B(uint64_t B, uint64_t A) { return B * ; }\n")
    with pytest.raises(UserError, match=r"broken\.c: C compile failed: .*error") as info:
        import_catalog(bad, tmp_path / "out")
    assert "\n" not in str(info.value)
    big = tmp_path / "big.c"
    big.write_text("// PDK45_PWR = 0.1 mW\n#include <stdint.h>\n"
                   "uint64_t mul8u_BIG(const uint64_t B, const uint64_t A) { return B * A + 1000; }\n")
    with pytest.raises(UserError, match=r"big\.c: mul8u_BIG\(\d+, \d+\) = \d+ does not fit in 16 bits"):
        import_catalog(big, tmp_path / "out")
    nopower = tmp_path / "nopower.c"
    nopower.write_text("#include <stdint.h>\nuint64_t m(uint64_t B, uint64_t A) { return B * A; }\n")
    with pytest.raises(UserError, match=r"nopower\.c: no power for m .*--power"):
        import_catalog(nopower, tmp_path / "out")
    (tmp_path / "nofunc.c").write_text("int x;\n")
    with pytest.raises(UserError, match=r"nofunc\.c: no circuit function found"):
        import_catalog(tmp_path / "nofunc.c", tmp_path / "out")


def test_import_callable(tmp_path):
    cat = import_catalog("helpers_multipliers:truncated", tmp_path / "v", power="0.25")
    assert cat.names == ["truncated"] and cat[0].power_mw == 0.25
    assert np.array_equal(cat[0].lut, TRUNC)
    # scalar-only function, custom name; asymmetric so operand order is checked
    cat = import_catalog("helpers_multipliers:asymmetric_scalar", tmp_path / "s", power=0.3, name="mul_asym")
    want = np.where((A > B) & (EXACT > 0), EXACT - 1, EXACT)
    assert cat.names == ["mul_asym"] and np.array_equal(cat[0].lut, want)


@pytest.mark.parametrize(
    "spec, power, pattern",
    [
        ("helpers_multipliers:truncated", None, r"--power is required"),
        ("helpers_multipliers:truncated", "-1", r"--power: power '-1' is negative"),
        ("helpers_multipliers:too_big", "0.1", r"too_big\(254, 255\) = 65770 does not fit in 16 bits"),
        ("helpers_multipliers:negative", "0.1", r"negative\(0, 0\) = -1 does not fit in 16 bits"),
        ("helpers_multipliers:broken", "0.1", r"calling broken\(0, 0\) failed: RuntimeError: boom"),
        ("helpers_multipliers:missing", "0.1", r"has no attribute missing"),
        ("no_such_module_xyz:f", "0.1", r"cannot import module no_such_module_xyz"),
    ],
)
def test_import_callable_errors(tmp_path, spec, power, pattern):
    with pytest.raises(UserError, match=pattern):
        import_catalog(spec, tmp_path / "out", power=power)


# ----------------------------------------------------------------------------- CLI


def test_cli_list_sorted_by_power(tiny, capsys):
    assert cli.main(["multipliers", "list", "--catalog", str(tiny)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["index", "name", "power_mW", "rel_power"]
    body = [ln.split() for ln in lines[1:4]]
    assert [r[1] for r in body] == ["trunc", "noisy", "exact"]  # 0.2, 0.3, 0.4 mW
    assert [r[0] for r in body] == ["0", "2", "1"]  # catalog positions, not rank
    assert body[0][3] == "50.0%" and body[2][4] == "100.0%"  # exact row has '*' after its name
    assert len({len(ln) for ln in lines[:4]}) <= 2  # aligned (trailing-space strip aside)
    assert cli.main(["multipliers", "list", "--catalog", str(tiny), "--sort", "name"]) == 0
    names = [ln.split()[1] for ln in capsys.readouterr().out.splitlines()[1:4]]
    assert names == ["exact", "noisy", "trunc"]


def test_cli_list_uses_env(tiny, capsys, monkeypatch):
    monkeypatch.setenv("SURROGATE_NAS_MULTIPLIERS", str(tiny))
    assert cli.main(["multipliers", "list"]) == 0
    assert "trunc" in capsys.readouterr().out


def test_cli_bad_catalog(tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    assert cli.main(["multipliers", "list", "--catalog", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "catalog.csv" in err


def test_cli_import(tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["multipliers", "import", "helpers_multipliers:truncated", "--out", str(out), "--power", "0.2"])
    assert rc == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("imported 1 multiplier(s)") and "truncated" in text
    assert cli.main(["multipliers", "import", "helpers_multipliers:truncated", "--out", str(out),
                     "--power", "0.2"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main(["multipliers", "import", "helpers_multipliers:truncated", "--out", str(out),
                     "--power", "x"]) == 2
    assert "not a number" in capsys.readouterr().err


# ----------------------------------------------------------------------------- real catalog


def _real_catalog_dir() -> Path | None:
    env = os.environ.get("SURROGATE_NAS_MULTIPLIERS")
    if env:
        return Path(env)
    try:
        return config.resolve_paths().multipliers
    except UserError:
        return None


@pytest.mark.real_data
def test_real_catalog_loads_without_warnings():
    folder = _real_catalog_dir()
    if folder is None or not (folder / "catalog.csv").is_file():
        pytest.skip("real multiplier catalog not available")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        cat = load_catalog(folder)
    assert [str(w.message) for w in record if issubclass(w.category, CatalogMetricWarning)] == []
    assert len(cat) == 36
    assert cat.exact is not None and cat.exact.name == "mul8u_1JFF" and cat.exact.power_mw == 0.391
    assert all(m.power_mw <= cat.exact.power_mw for m in cat)
