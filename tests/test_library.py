"""Large multiplier libraries (issue 20): the explicit exact reference, power from C
headers, union catalogs, and per-layer pruning before the auto compensation rule.

Expected values come from hand-made tables and files and from code written here from the
definitions, never from the library's own output."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from surrogate_nas import cli
from surrogate_nas.errors import UserError
from surrogate_nas.multipliers import pruning
from surrogate_nas.multipliers.catalog import load_catalog
from surrogate_nas.multipliers.importers import import_catalog

ROOT = Path(__file__).resolve().parents[1]
CODES = np.arange(256, dtype=np.int64)
A, B = np.meshgrid(CODES, CODES, indexing="ij")
EXACT = A * B
TRUNC = EXACT & ~0xFF
LOW = EXACT & ~0x3F
ZERO = np.zeros_like(EXACT)


def write_catalog(folder: Path, rows: list[tuple[str, np.ndarray, float]], extra: dict | None = None) -> Path:
    """catalog.csv + tables; `extra` = {name: {column: text}}."""
    folder.mkdir(parents=True, exist_ok=True)
    extra = extra or {}
    cols = ["name", "lut_file", "power_mW"] + sorted({c for d in extra.values() for c in d})
    with open(folder / "catalog.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for name, table, power in rows:
            (folder / f"{name}.bin").write_bytes(np.asarray(table).astype("<u2").tobytes())
            w.writerow({"name": name, "lut_file": f"{name}.bin", "power_mW": power, **extra.get(name, {})})
    return folder


def old_fingerprint(rows: list[tuple[str, np.ndarray, float]]) -> str:
    """The catalog fingerprint as it was before the reference was explicit (names, tables, powers)."""
    h = hashlib.sha256()
    for name, table, power in rows:
        sha = hashlib.sha256(np.asarray(table).astype("<u2").tobytes()).hexdigest()
        h.update(f"{name}\0{sha}\0{float(power)!r}\n".encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------- exact reference

THREE_EXACT = [("trunc", TRUNC, 0.2), ("zeta", EXACT, 0.5), ("mid", EXACT, 0.4), ("alpha", EXACT, 0.4)]


def test_default_reference_is_cheapest_exact_ties_by_name(tmp_path):
    cat = load_catalog(write_catalog(tmp_path / "c", THREE_EXACT))
    # cheapest exact: mid and alpha at 0.4 mW; the tie goes to the name: alpha
    assert cat.exact.name == "alpha" and cat.exact_index == 3 and not cat.exact_chosen
    assert "alpha" in cat.reference_text() and "cheapest exact" in cat.reference_text()
    # the reference is not the first exact entry (zeta), so the fingerprint names it
    assert cat.fingerprint != old_fingerprint(THREE_EXACT)


def test_reference_recorded_in_csv_overrides_default(tmp_path):
    cat = load_catalog(write_catalog(tmp_path / "c", THREE_EXACT, {"zeta": {"exact_reference": "yes"}}))
    assert cat.exact.name == "zeta" and cat.exact_index == 1 and cat.exact_chosen
    # zeta is the first exact entry: the choice before references were explicit, old fingerprint
    assert cat.fingerprint == old_fingerprint(THREE_EXACT)
    mid = load_catalog(write_catalog(tmp_path / "m", THREE_EXACT, {"mid": {"exact_reference": "yes"}}))
    assert mid.exact.name == "mid"
    assert len({mid.fingerprint, cat.fingerprint, load_catalog(tmp_path / "c").fingerprint,
                load_catalog(write_catalog(tmp_path / "d", THREE_EXACT)).fingerprint}) == 3


def test_reference_marks_checked(tmp_path):
    with pytest.raises(UserError, match=r"trunc is marked exact_reference but its table is not the exact"):
        load_catalog(write_catalog(tmp_path / "a", THREE_EXACT, {"trunc": {"exact_reference": "yes"}}))
    with pytest.raises(UserError, match=r"exact_reference marks several rows \(zeta, mid\)"):
        load_catalog(write_catalog(tmp_path / "b", THREE_EXACT,
                                   {"zeta": {"exact_reference": "yes"}, "mid": {"exact_reference": "yes"}}))


def test_old_catalog_with_one_exact_keeps_its_fingerprint(tmp_path):
    rows = [("t", TRUNC, 0.2), ("e", EXACT, 0.391)]
    cat = load_catalog(write_catalog(tmp_path / "c", rows))
    assert cat.exact.name == "e" and cat.fingerprint == old_fingerprint(rows)


def test_shipped_catalog_fingerprint_unchanged():
    """Cached evaluations and committed run records are keyed on it."""
    cat = load_catalog(ROOT / "multipliers" / "evoapprox8b")
    record = json.loads((ROOT / "experiments" / "headline" / "surrogate-b300-auto" / "config.json").read_text())
    recorded = json.dumps(record)
    assert cat.fingerprint in recorded  # the evaluator description of the committed run
    assert cat.fingerprint == "3dde1a700e1e35350cc2e993c12af11db82ca9cde681a44eec04fba1fd62f6ed"
    assert cat.exact.name == "mul8u_1JFF" and not cat.exact_chosen


def test_import_exact_override_and_list(tmp_path, capsys):
    src = write_catalog(tmp_path / "src", THREE_EXACT)
    cat = import_catalog(src, tmp_path / "a")
    assert cat.exact.name == "alpha"
    with open(tmp_path / "a" / "catalog.csv", newline="") as fh:
        marked = [r["name"] for r in csv.DictReader(fh) if r["exact_reference"] == "yes"]
    assert marked == ["alpha"]
    assert import_catalog(src, tmp_path / "b", exact="zeta").exact.name == "zeta"
    assert import_catalog(tmp_path / "b", tmp_path / "b2").exact.name == "zeta"  # a re-import keeps the choice
    with pytest.raises(UserError, match=r"--exact trunc: .*not the exact product"):
        import_catalog(src, tmp_path / "c", exact="trunc")
    with pytest.raises(UserError, match=r"--exact nope: no circuit of that name"):
        import_catalog(src, tmp_path / "c", exact="nope")
    assert cli.main(["multipliers", "list", "--catalog", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "zeta *" in out and "exact reference zeta (0.5 mW, chosen with --exact)" in out


# ----------------------------------------------------------------------------- C headers

EVO2017_C = """#include <stdint.h>
#include <stdlib.h>
/// Approximate function {name}
///  Power  (180) = 4460.50
///  Area   (45) = 618
///  Power  (45) = {uw}
///  MAE = 0.00000
uint16_t {name}(uint8_t a, uint8_t b)
{{
  return {expr};
}}
"""

PDK_C = """// PDK45_PWR = {mw} mW
#include <stdint.h>
uint64_t {name}(const uint64_t B, const uint64_t A) {{ return {expr}; }}
"""

needs_cc = pytest.mark.skipif(not (os.environ.get("CC") or shutil.which("cc")), reason="no C compiler")


def c_file(folder: Path, template: str, name: str, expr: str, **power) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.c"
    path.write_text(template.format(name=name, expr=expr, **power))
    return path


@needs_cc
def test_evoapprox8b_header_power_in_microwatts(tmp_path):
    src = tmp_path / "c"
    c_file(src, EVO2017_C, "mul8_e1", "a * b", uw="428.70")
    c_file(src, EVO2017_C, "mul8_e2", "a * b", uw="390.70")
    c_file(src, EVO2017_C, "mul8_t", "(a * b) & 0xFF00", uw="120.00")
    cat = import_catalog(src, tmp_path / "out")
    assert cat["mul8_e1"].power_mw == pytest.approx(0.4287) and cat["mul8_t"].power_mw == pytest.approx(0.12)
    assert cat.exact.name == "mul8_e2"  # the cheaper exact one, not the first
    assert np.array_equal(cat["mul8_t"].lut, TRUNC)
    assert cat.power_sources == ["C header Power (45) (uW)"]


@needs_cc
def test_pdk45_header_and_csv_wins_with_disagreements(tmp_path):
    src = tmp_path / "c"
    c_file(src, EVO2017_C, "m1", "a * b", uw="400.0")
    c_file(src, EVO2017_C, "m2", "(a * b) & 0xFF00", uw="200.0")
    powers = tmp_path / "p.csv"
    powers.write_text("name,power_mW\nm1,0.403\nm2,0.25\n")  # m1: 0.75 % off, m2: 20 % off
    notes: list[str] = []
    cat = import_catalog(src, tmp_path / "out", powers_csv=powers, notes=notes)
    assert cat["m1"].power_mw == 0.403 and cat["m2"].power_mw == 0.25
    listed = [n for n in notes if n.startswith("  ")]
    assert len(listed) == 1 and "m2" in listed[0] and "0.25" in listed[0] and "0.2 mW in its header" in listed[0]
    assert any("1 of 2 circuits differ by over 1%" in n for n in notes)
    assert cat.power_sources == ["CSV " + tmp_path.name + "/p.csv"]
    pdk = c_file(tmp_path / "d", PDK_C, "mul8u_P", "B * A", mw="0.25")
    assert import_catalog(pdk, tmp_path / "out2")[0].power_mw == 0.25


@needs_cc
def test_no_power_error_names_formats(tmp_path):
    path = c_file(tmp_path / "c", "#include <stdint.h>\nuint16_t {name}(uint8_t a, uint8_t b) {{ return {expr}; }}\n",
                  "m", "a * b")
    with pytest.raises(UserError) as info:
        import_catalog(path, tmp_path / "out")
    msg = str(info.value)
    assert "\n" not in msg and "PDK45_PWR" in msg and "Power  (45)" in msg and "uW" in msg and "--powers" in msg


@needs_cc
def test_mixing_power_sources_refused(tmp_path):
    src = tmp_path / "c"
    c_file(src, EVO2017_C, "m1", "a * b", uw="400.0")
    c_file(src, PDK_C, "m2", "B * A", mw="0.3")
    with pytest.raises(UserError, match=r"powers come from several sources \(1 from C header Power \(45\) \(uW\), "
                                        r"1 from C header PDK45_PWR \(mW\)\)") as info:
        import_catalog(src, tmp_path / "out")
    assert "\n" not in str(info.value)
    # a CSV that covers some circuits only would mix it with the headers
    partial = tmp_path / "p.csv"
    partial.write_text("name,power_mW\nm1,0.4\n")
    with pytest.raises(UserError, match=r"p\.csv: no row for 1 of 2 circuits \(m2\); powers must come from one"):
        import_catalog(src, tmp_path / "out", powers_csv=partial)


# ----------------------------------------------------------------------------- union catalogs


def test_union_of_two_sources_same_power_source(tmp_path):
    """One powers CSV for both sources: one power source, nothing rescaled."""
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, tables in ((a, {"x": TRUNC, "e": EXACT}), (b, {"y": LOW, "f": EXACT})):
        folder.mkdir()
        for name, table in tables.items():
            (folder / f"{name}.bin").write_bytes(table.astype("<u2").tobytes())
    powers = tmp_path / "pw.csv"
    powers.write_text("name,power_mW\nx,0.1\ne,0.4\ny,0.2\nf,0.39\n")
    cat = import_catalog([a, b], tmp_path / "u", powers_csv=powers)
    assert cat.names == ["x", "e", "y", "f"] and cat.exact.name == "f"  # f is the cheaper exact one
    assert [m.power_mw for m in cat] == [0.1, 0.4, 0.2, 0.39]


def test_union_rescale_clashes_duplicates_zero(tmp_path):
    a = write_catalog(tmp_path / "a", [("x", TRUNC, 0.1), ("e", EXACT, 0.4), ("same", LOW, 0.3)])
    b = write_catalog(tmp_path / "b", [("f", EXACT, 0.5), ("y", LOW, 0.25), ("z", ZERO, 0.01), ("same", LOW, 0.2)])
    notes: list[str] = []
    with pytest.raises(UserError) as info:
        import_catalog([a, b], tmp_path / "u")
    assert "\n" not in str(info.value) and "--rescale" in str(info.value)
    cat = import_catalog([a, b], tmp_path / "u", rescale=True, notes=notes)
    # reference: the cheaper of the sources' own references (e 0.4 < f 0.5); b scaled by 0.4/0.5
    assert cat.exact.name == "e" and cat.names == ["x", "e", "same", "f", "y", "z"]
    assert cat["x"].power_mw == 0.1 and cat["f"].power_mw == pytest.approx(0.4)
    assert cat["y"].power_mw == pytest.approx(0.25 * 0.8) and cat["z"].power_mw == pytest.approx(0.008)
    text = "\n".join(notes)
    assert "name clash: same" in text and "kept once" in text  # same name, same table
    assert "same = y" in text  # identical tables under two names
    assert "e = f (exact)" in text
    assert "always 0: 1 circuit(s)" in text and ": z" in text
    with open(tmp_path / "u" / "catalog.csv", newline="") as fh:
        rows = {r["name"]: r for r in csv.DictReader(fh)}
    assert float(rows["y"]["source_power_mW"]) == 0.25 and float(rows["x"]["source_power_mW"]) == 0.1
    # --exact picks f: a is then scaled to f's 0.5 mW
    cat = import_catalog([a, b], tmp_path / "v", rescale=True, exact="f")
    assert cat.exact.name == "f" and cat["x"].power_mw == pytest.approx(0.125)
    # same name, different tables: refused with one line naming them
    c = write_catalog(tmp_path / "c", [("x", LOW, 0.1), ("e2", EXACT, 0.4)])
    with pytest.raises(UserError, match=r"name clash: 1 name\(s\) with different tables in two sources: x ") as info:
        import_catalog([a, c], tmp_path / "w", rescale=True)
    assert "\n" not in str(info.value)


def test_cli_import_several_sources(tmp_path, capsys):
    a = write_catalog(tmp_path / "a", [("x", TRUNC, 0.1), ("e", EXACT, 0.4)])
    b = write_catalog(tmp_path / "b", [("y", LOW, 0.2), ("f", EXACT, 0.4)])
    rc = cli.main(["multipliers", "import", str(a), str(b), "--out", str(tmp_path / "u"), "--rescale"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "imported 4 multiplier(s)" in out and out.rstrip().splitlines()[-1].startswith("exact reference e ")
    assert "e = f (exact)" in out


# ----------------------------------------------------------------------------- pruning


def brute_output_error(lut, p_in, p_w, taps) -> float:
    """The README definition of the pruning error, written out: for each candidate method
    the compensated table, its product error under the code distributions, and the RMS of
    K such errors summed (mean removed by bias); the best method's."""
    lut = np.asarray(lut, np.float64)
    # ALWANN tuning with the activation histogram: w' = argmin sum_a p(a)|a*w - T[a, w']|, ties keep w
    wmap = np.arange(256)
    for w in range(256):
        cost = np.array([np.sum(p_in * np.abs(CODES * w - lut[:, v])) for v in range(256)])
        best = int(np.argmin(cost))
        wmap[w] = w if cost[w] <= cost[best] else best
    best = np.inf
    for tuned in (False, True):
        err = (lut[:, wmap] if tuned else lut) - EXACT
        mean = np.sum(p_in[:, None] * p_w[None, :] * err)
        var = np.sum(p_in[:, None] * p_w[None, :] * err ** 2) - mean ** 2
        for bias in (False, True):
            m = 0.0 if bias else mean
            best = min(best, np.sqrt((taps * m) ** 2 + taps * max(var, 0.0)))
    return best


def brute_front(power, error) -> set[int]:
    n = len(power)
    return {i for i in range(n) if not any(
        power[j] <= power[i] and error[j] <= error[i] and (power[j] < power[i] or error[j] < error[i])
        for j in range(n))}


class FakeLayer:
    def __init__(self, kernel_codes):
        self._codes = kernel_codes

    def kernel_codes(self):
        return self._codes

    def scales(self):
        return 0.01, 0.02


def random_library(rng, n):
    """Tables with different error shapes: truncations, biased and noisy ones, plus exact."""
    tables = [EXACT]
    for i in range(n - 1):
        kind = i % 3
        if kind == 0:
            t = EXACT & ~int(rng.integers(1, 2 ** int(rng.integers(2, 10))))
        elif kind == 1:
            t = EXACT + rng.integers(-20, 60) * (A > rng.integers(0, 256))
        else:
            t = EXACT + rng.integers(-40, 41, size=EXACT.shape)
        tables.append(np.clip(t, 0, 65535))
    return tables


def test_dominated_counts_hand_values():
    power = [1.0, 2.0, 3.0, 2.0, 1.0]
    error = [3.0, 2.0, 1.0, 3.0, 3.0]
    # 3 is dominated by 0, 1 and 4; 0 and 4 are identical (no mutual dominance)
    assert pruning.dominated_counts(power, error).tolist() == [0, 0, 0, 3, 0]
    assert pruning.keep_mask(power, error, 1).tolist() == [True, True, True, False, True]
    assert pruning.keep_mask(power, error, 4).all() and pruning.keep_mask(power, error, 0).all()
    assert pruning.effective_k(None, 36) == 0 and pruning.effective_k(None, 541) == pruning.AUTO_PRUNE_K
    assert pruning.effective_k(0, 541) == 0 and pruning.effective_k(3, 36) == 3


def test_pruning_keeps_every_front_circuit_of_every_layer():
    from surrogate_nas.evaluation.designs import LayerDesigns
    from surrogate_nas.multipliers.catalog import Catalog, Multiplier

    rng = np.random.default_rng(1)
    tables = random_library(rng, 14)
    powers = [0.4] + list(rng.uniform(0.05, 0.4, size=len(tables) - 1))
    entries = [Multiplier(f"m{i}", t.astype(np.uint16), float(p), f"sha{i}") for i, (t, p) in
               enumerate(zip(tables, powers))]
    catalog = Catalog(entries)
    # two layers with opposite activation statistics and different fan-in
    hist_small = (1000 * np.exp(-CODES / 20.0)).astype(np.int64)[None, :] * np.array([[3], [1]])
    hist_large = (CODES >= 128).astype(np.int64)[None, :] * np.ones((3, 1), np.int64)
    codes1 = rng.integers(100, 160, size=(3, 3, 2, 4))
    codes2 = rng.integers(0, 256, size=(1, 1, 3, 5))
    designs = LayerDesigns([FakeLayer(codes1), FakeLayer(codes2)], catalog, "auto",
                           [hist_small, hist_large], prune_k=1)
    fronts = []
    for layer, (hist, codes) in enumerate(((hist_small, codes1), (hist_large, codes2))):
        p_in = hist.sum(axis=0) / hist.sum()
        p_w = np.bincount(codes.ravel(), minlength=256) / codes.size
        taps = int(np.prod(codes.shape[:-1]))
        errors = [brute_output_error(t, p_in, p_w, taps) for t in tables]
        fronts.append(brute_front(powers, errors))
    keep = designs.prune(1)
    for layer, front in enumerate(fronts):
        kept = set(np.flatnonzero(keep[layer]).tolist())
        assert front | {0} == kept  # k = 1: the layer's front (and the exact reference), nothing else
    assert fronts[0] != fronts[1]  # the layers disagree, so pruning really is per layer
    keep2 = designs.prune(2)
    assert (keep2 >= keep).all() and keep2.sum() > keep.sum()
    assert designs.prune(0).all()


def test_rule_tests_only_kept_circuits_and_keeps_old_key():
    from surrogate_nas.evaluation.cache import fingerprint
    from surrogate_nas.evaluation.designs import RULE_VERSION, LayerDesigns
    from surrogate_nas.multipliers import compensation as comp
    from surrogate_nas.multipliers.catalog import Catalog, Multiplier

    rng = np.random.default_rng(2)
    tables = random_library(rng, 8)
    entries = [Multiplier(f"m{i}", t.astype(np.uint16), 0.4 if i == 0 else 0.05 * i, f"s{i}")
               for i, t in enumerate(tables)]
    catalog = Catalog(entries)
    layers = [FakeLayer(rng.integers(0, 256, size=(3, 3, 2, 4)))]
    hists = [np.ones((2, 256), np.int64)]
    off = LayerDesigns(layers, catalog, "auto", hists, prune_k=0)
    old = fingerprint({"version": RULE_VERSION, "model": "m", "catalog": catalog.fingerprint, "images": "i",
                       "candidates": comp.AUTO_CANDIDATES})
    assert off.rule_key("m", "i") == old  # no pruning: the key of rules measured before pruning existed
    on = LayerDesigns(layers, catalog, "auto", hists, prune_k=1)
    assert on.rule_key("m", "i") != old
    tested = []
    on.choose(lambda: 0.0, lambda layer, m, c: tested.append(m), on.rule_key("m", "i"), None, quiet=True)
    keep = on.prune(1)[0]
    measured = {m for m in tested if m != 0}
    assert measured == set(np.flatnonzero(keep).tolist()) - {0}
    assert all(on.rule[0][m] == pruning.PRUNED_METHOD for m in range(1, 8) if not keep[m])
    assert on.prune_report["kept_per_layer"] == [int(keep.sum())]
    assert on.prune_report["one_layer_tests"] == len(measured) * len(comp.AUTO_CANDIDATES)


def test_rule_progress_survives_a_stop(tmp_path, monkeypatch):
    """A stopped rule resumes from its checkpoint: measured designs are not measured again."""
    from surrogate_nas.evaluation import designs as designs_mod
    from surrogate_nas.evaluation.designs import LayerDesigns
    from surrogate_nas.multipliers.catalog import Catalog, Multiplier

    monkeypatch.setattr(designs_mod, "CHECKPOINT_SECONDS", -1.0)  # save after every design
    rng = np.random.default_rng(3)
    tables = random_library(rng, 6)
    catalog = Catalog([Multiplier(f"m{i}", t.astype(np.uint16), 0.4 if i == 0 else 0.05 * i, f"s{i}")
                       for i, t in enumerate(tables)])
    layers = [FakeLayer(rng.integers(0, 256, size=(3, 3, 2, 4)))]
    hists = [np.ones((2, 256), np.int64)]
    calls = []

    def stopping_loss():
        calls.append(1)
        if len(calls) > 9:  # two designs (8 tests) measured, the third interrupted
            raise KeyboardInterrupt
        return float(len(calls) % 3)

    first = LayerDesigns(layers, catalog, "auto", hists, prune_k=0)
    with pytest.raises(KeyboardInterrupt):
        first.choose(stopping_loss, lambda *a: None, "k" * 64, tmp_path, quiet=True)
    partial = tmp_path / f"compensation-rule-{'k' * 16}.partial.json"
    assert len(json.loads(partial.read_text())["losses"]) == 2
    calls.clear()
    second = LayerDesigns(layers, catalog, "auto", hists, prune_k=0)
    second.choose(lambda: calls.append(1) or 0.5, lambda *a: None, "k" * 64, tmp_path, quiet=True)
    assert len(calls) == (5 - 2) * 4  # 5 approximate circuits, 2 already measured
    assert not partial.exists() and (tmp_path / f"compensation-rule-{'k' * 16}.json").is_file()
    # the first two from the saved losses (1,2,0,1 and 2,0,1,2 for none, bias, tune, tune+bias)
    assert second.rule[0][:3] == ["none", "tune", "bias"]
