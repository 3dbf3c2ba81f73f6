#!/usr/bin/env bash
# Mutation score of the fast unit tests on src/jd_ner/modeling/ and src/jd_ner/text/ (mutmut).
#
# The configuration (paths to mutate, test files run) is the [tool.mutmut] table at the end of
# pyproject.toml. mutmut copies src/, tests/ and conf/ into mutants/ and puts mutants/src first on
# sys.path, so the mutated copy shadows the editable install; its "forced fail" check stops the
# run if the tests do not import the mutated copy.
# mutmut forks each mutant's test run from a process that has already run the whole suite, so a
# functools cache filled there (char_features' pinyin/glyph caches) would hide mutants in the
# code it calls: a small pytest plugin, loaded through PYTEST_ADDOPTS, empties jd_ner's caches
# at the start of every test session. (process_isolation = "forkserver" avoids that too, but
# runs about 8x slower here.)
#
# Usage: scripts/mutation.sh [--keep] [--no-run] [--report FILE] [MUTANT_GLOB ...]
#   --keep         reuse mutants/ of the last run (only functions whose code changed are re-tested;
#                  verdicts may be stale if tests or unmutated modules changed). Default: fresh run.
#   --no-run       only print the summary (and report) of the last run in mutants/
#   --report FILE  also write the surviving mutants, grouped by file and function, with their diffs
#   MUTANT_GLOB    test only these mutants, e.g. 'jd_ner.modeling.losses.*'
# Environment: VENV (default .venv), MUTMUT_CHILDREN (default 1: one test process at a time),
#              NICE (default 19).
# Afterwards: .venv/bin/mutmut results | show NAME | browse  (run from the repository root).
set -euo pipefail
cd "$(dirname "$0")/.."

MUTMUT_VERSION=3.8.1
VENV=${VENV:-.venv}
CHILDREN=${MUTMUT_CHILDREN:-1}
NICE=${NICE:-19}
keep=0
norun=0
report=""
globs=()
while (($#)); do
    case $1 in
        --keep) keep=1 ;;
        --no-run) norun=1 ;;
        --report) report=$(realpath -m "$2"); shift ;;
        -h|--help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; exit 0 ;;
        *) globs+=("$1") ;;
    esac
    shift
done

if ! "$VENV/bin/python" -c "import mutmut" 2>/dev/null; then
    echo "installing mutmut==$MUTMUT_VERSION into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "mutmut==$MUTMUT_VERSION"
fi
installed=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('mutmut'))")
[[ $installed == "$MUTMUT_VERSION" ]] || echo "warning: mutmut $installed installed, this script was written for $MUTMUT_VERSION" >&2
grep -q '^\[tool\.mutmut\]' pyproject.toml || { echo "no [tool.mutmut] table in pyproject.toml" >&2; exit 2; }

export KEDRO_DISABLE_TELEMETRY=1 OMP_NUM_THREADS=1
plugin_dir=$(mktemp -d)
trap 'rm -rf "$plugin_dir"' EXIT
cat > "$plugin_dir/mutmut_fresh_caches.py" <<'PY'
"""Empty jd_ner's functools caches when a test session starts (see scripts/mutation.sh)."""
import sys


def pytest_sessionstart(session):
    for name, module in list(sys.modules.items()):
        if name == "jd_ner" or name.startswith("jd_ner."):
            for obj in list(vars(module).values()):
                if callable(getattr(obj, "cache_clear", None)):
                    obj.cache_clear()
PY
export PYTHONPATH="$plugin_dir${PYTHONPATH:+:$PYTHONPATH}"
export PYTEST_ADDOPTS="-p mutmut_fresh_caches${PYTEST_ADDOPTS:+ $PYTEST_ADDOPTS}"
start=$(date +%s)
if ((!norun)); then
    ((keep)) || rm -rf mutants
    nice -n "$NICE" "$VENV/bin/mutmut" run --max-children "$CHILDREN" ${globs[@]+"${globs[@]}"}
fi
wall=$(($(date +%s) - start))

"$VENV/bin/python" - "$wall" "$report" <<'PY'
import sys
from collections import Counter, defaultdict

from mutmut.__main__ import SourceFileMutationData, walk_mutatable_files
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code

wall, report = int(sys.argv[1]), sys.argv[2]
total, per_file, survivors = Counter(), defaultdict(Counter), defaultdict(list)
for path in walk_mutatable_files():
    m = SourceFileMutationData(path=path)
    m.load()
    for name, code in m.exit_code_by_key.items():
        status = status_by_exit_code[code]
        total[status] += 1
        per_file[str(path)][status] += 1
        if status == "survived":
            survivors[str(path)].append(name)


def score(c):
    k, s, n = c["killed"], c["survived"], c["no tests"]
    a = f"{100 * k / (k + s):.1f}%" if k + s else "n/a"
    b = f"{100 * k / (k + s + n):.1f}%" if k + s + n else "n/a"
    return a, b


lines = ["", f"mutation summary (this invocation took {wall // 60} min {wall % 60} s)",
         f"{'file':40} {'total':>6} {'killed':>6} {'surv':>5} {'notest':>6} {'tmout':>5} {'unrun':>5} "
         f"{'other':>5} {'score':>6}"]
for path, c in sorted(per_file.items()) + [("TOTAL", total)]:
    other = sum(c.values()) - sum(c[k] for k in ("killed", "survived", "no tests", "timeout", "not checked"))
    lines.append(f"{path.removeprefix('src/jd_ner/'):40} {sum(c.values()):6} {c['killed']:6} {c['survived']:5} "
                 f"{c['no tests']:6} {c['timeout']:5} {c['not checked']:5} {other:5} {score(c)[0]:>6}")
a, b = score(total)
lines += [f"score = killed / (killed + survived) = {a}; counting no-test mutants as survivors: {b}",
          f"statuses: {dict(total)} (timeout and suspicious count as neither killed nor survived)"]
print("\n".join(lines))

if report:
    def key(name):  # pkg.mod.x_func__mutmut_12 / pkg.mod.xǁClassǁmethod__mutmut_3 -> (func, 12)
        func, _, n = name.rpartition("__mutmut_")
        func = func.rpartition(".")[2]
        func = func[2:] if func.startswith("x_") else func[1:].strip("ǁ").replace("ǁ", ".")
        return func, int(n)

    with open(report, "w", encoding="utf-8") as out:
        out.write("\n".join(lines[1:]) + "\n")
        for path, names in sorted(survivors.items()):
            by_func = defaultdict(list)
            for name in sorted(names, key=key):
                by_func[key(name)[0]].append(name)
            out.write(f"\n{'=' * 100}\n{path}: {len(names)} survivors\n")
            for func, group in by_func.items():
                out.write(f"\n--- {func}: {len(group)} survivors\n")
                for name in group:
                    out.write(f"\n# {name}\n{get_diff_for_mutant(name, path=path)}\n")
    print(f"survivors with diffs written to {report}")
PY
