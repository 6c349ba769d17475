"""EvoApprox8b-style C models turned into tables: find the circuit functions in a C file,
compile them with a driver that runs all 65,536 operand pairs, and read the products."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from surrogate_nas.errors import UserError
from surrogate_nas.multipliers.tables import _read_lut

_C_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)


_C_FUNC = re.compile(
    r"(?m)^[ \t]*(static\s+)?(?:inline\s+)?((?:const\s+|unsigned\s+|signed\s+|long\s+|short\s+)*"
    r"(?:u?int\d+_t|int|long|short|char|unsigned|size_t))\s+([A-Za-z_]\w*)\s*\(([^()]*)\)\s*\{"
)


_C_INT_PARAM = re.compile(
    r"(?:const\s+|unsigned\s+|signed\s+|long\s+|short\s+)*(?:u?int\d+_t|int|long|short|char|unsigned|size_t)"
    r"(?:\s+const)?\s+[A-Za-z_]\w*"
)


_C_POWER = re.compile(r"PDK45_PWR\s*=\s*([-+0-9.eE]+)\s*mW")


# EvoApprox8b (2017) headers: `///  Power  (45) = 428.70`, in microwatts (45 nm PDK);
# `Power (180)` is another PDK and is not read.
_C_POWER_45 = re.compile(r"(?m)^[ \t]*///[ \t]*Power[ \t]*\(45\)[ \t]*=[ \t]*([-+0-9.eE]+)")


# power source labels of the header formats, and the divisor to mW
HEADER_FORMATS = {
    "C header PDK45_PWR (mW)": (_C_POWER, 1.0),
    "C header Power (45) (uW)": (_C_POWER_45, 1000.0),
}


KNOWN_HEADER_FORMATS = "'// PDK45_PWR = x mW' (EvoApproxLib) or '///  Power  (45) = x' in uW (EvoApprox8b)"


def header_power(text: str, where: str) -> tuple[float, str] | None:
    """(power in mW, source label) stated by a C file's header, or None when it states none
    in a known format. Two formats, or one stated twice, is refused (ambiguous)."""
    found = [(label, values, scale) for label, (rx, scale) in HEADER_FORMATS.items() if (values := rx.findall(text))]
    if not found:
        return None
    if len(found) > 1 or len(found[0][1]) > 1:
        what = " and ".join(f"{len(v)} x {label}" for label, v, _ in found)
        raise UserError(f"{where}: states power {what}; ambiguous, pass --power or --powers")
    label, (text_value,), scale = found[0]
    try:
        value = float(text_value)
    except ValueError:
        raise UserError(f"{where}: {label}: {text_value!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise UserError(f"{where}: {label}: {text_value!r} is not a finite non-negative power")
    return value / scale, label


def _c_circuits(text: str) -> list[str]:
    """Names of non-static functions taking two integer arguments: the circuits in a file."""
    code = _C_COMMENTS.sub(" ", text)
    names = []
    for m in _C_FUNC.finditer(code):
        static, _ret, fname, params = m.groups()
        if static or fname == "main":
            continue
        parts = [p.strip() for p in params.split(",")]
        if len(parts) == 2 and all(_C_INT_PARAM.fullmatch(p) for p in parts):
            names.append(fname)
    return names


def _c_compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise UserError("no C compiler found (cc): install one or set CC to import .c circuits")
    return cc


_DRIVER = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#define main surrogate_nas_circuit_main
#include "%(source)s"
#undef main

static unsigned char surrogate_nas_buf[131072];

static int surrogate_nas_write(const char *path, const char *name) {
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "cannot write %%s\n", path); return 2; }
    if (fwrite(surrogate_nas_buf, 1, sizeof surrogate_nas_buf, f) != sizeof surrogate_nas_buf) {
        fprintf(stderr, "cannot write %%s\n", path); fclose(f); return 2;
    }
    fclose(f);
    (void)name;
    return 0;
}

int main(int argc, char **argv) {
    uint64_t a, b, r;
    if (argc != %(count)d + 1) return 2;
%(calls)s
    return 0;
}
"""


# First argument = activation code a, second = weight code b (README: operand order).
_DRIVER_CALL = r"""
    for (a = 0; a < 256; a++) for (b = 0; b < 256; b++) {
        r = (uint64_t)(%(name)s(a, b));
        if (r > 65535u) {
            fprintf(stderr, "RANGE %(name)s %%llu %%llu %%llu\n",
                    (unsigned long long)a, (unsigned long long)b, (unsigned long long)r);
            return 3;
        }
        surrogate_nas_buf[2 * (a * 256 + b)] = (unsigned char)(r & 0xFFu);
        surrogate_nas_buf[2 * (a * 256 + b) + 1] = (unsigned char)(r >> 8);
    }
    if (surrogate_nas_write(argv[%(k)d], "%(name)s")) return 2;
"""


def _first_compiler_line(stderr: str, tmp: Path, original: Path) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    pick = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else "unknown error")
    return pick.replace(str(tmp / original.name), str(original)).replace(str(tmp) + os.sep, "")


def _run_c_file(path: Path, cc: str) -> tuple[list[str], list[np.ndarray], str]:
    """Compile one C file with a generated driver; return (circuit names, tables, source text)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    names = _c_circuits(text)
    if not names:
        raise UserError(
            f"{path}: no circuit function found (expected e.g. "
            "'uint64_t mul8u_XXX(const uint64_t B, const uint64_t A) {...}')"
        )
    with tempfile.TemporaryDirectory(prefix="surrogate_nas_cc_") as tmpdir:
        tmp = Path(tmpdir)
        (tmp / path.name).write_text(text, encoding="utf-8")
        calls = "".join(_DRIVER_CALL % {"name": n, "k": k + 1} for k, n in enumerate(names))
        driver = tmp / "surrogate_nas_driver.c"
        driver.write_text(_DRIVER % {"source": path.name, "count": len(names), "calls": calls})
        exe = tmp / "driver"
        try:
            proc = subprocess.run(
                [cc, "-O1", "-w", "-o", str(exe), str(driver), "-lm"],
                cwd=tmp, capture_output=True, text=True, timeout=300,
            )
        except subprocess.TimeoutExpired:
            raise UserError(f"{path}: C compiler timed out") from None
        except OSError as exc:
            raise UserError(f"{path}: cannot run C compiler {cc} ({exc.strerror})") from None
        if proc.returncode != 0:
            raise UserError(f"{path}: C compile failed: {_first_compiler_line(proc.stderr, tmp, path)}")
        outs = [tmp / f"out{k}.bin" for k in range(len(names))]
        try:
            run = subprocess.run([str(exe), *map(str, outs)], cwd=tmp, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            raise UserError(f"{path}: evaluating the circuit(s) took over 120 s") from None
        if run.returncode != 0:
            m = re.search(r"RANGE (\S+) (\d+) (\d+) (\d+)", run.stderr)
            if m:
                raise UserError(
                    f"{path}: {m[1]}({m[2]}, {m[3]}) = {m[4]} does not fit in 16 bits (0..65535)"
                )
            detail = run.stderr.strip().splitlines()[:1] or [f"exit status {run.returncode}"]
            raise UserError(f"{path}: evaluating the circuit failed: {detail[0]}")
        luts = [_read_lut(o)[0] for o in outs]
    return names, luts, text
