#!/usr/bin/env bash
# Builds the rwsgi wheels: one per CPython minor version found on this machine (3.10 to
# 3.13), with maturin (pinned below, installed into a build venv under target/).
#
#   bash scripts/build-wheels.sh                      # release wheels into dist/
#   bash scripts/build-wheels.sh --profile dev --out target/wheels-ci        # what CI uses
#   PYTHONS="/usr/local/bin/python3.12" bash scripts/build-wheels.sh         # these only
#
# Interpreters: $PYTHONS if set, else pyenv's 3.10-3.13 (newest patch of each), else
# python3.10 ... python3.13 on PATH. One wheel per minor version: a wheel serves every
# install of that version (it finds libpython at run time, see python/rwsgi/_launch.py),
# so the first interpreter found for a minor version builds it. Interpreters without a
# shared libpython cannot link rwsgi and are skipped with a note.
#
# All builds share one CARGO_TARGET_DIR (default target/): the dependencies compile
# once per profile (with `--profile dev`, scripts/test.sh's own debug build has compiled
# most of them already), and each Python version adds only pyo3 and rwsgi. A `dev`
# wheel is stripped (its debug info would make it 20 times larger).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MATURIN_VERSION=1.16.0

profile=release
out=$ROOT/dist
while (($#)); do
    case "$1" in
        --profile) profile="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) echo "build-wheels.sh: unknown option $1 (see the header of this file)" >&2; exit 2 ;;
    esac
done

log() { printf '\n==> %s\n' "$*" >&2; }

# --- interpreters: one per minor version -----------------------------------------
candidates=()
if [ -n "${PYTHONS:-}" ]; then
    read -r -a candidates <<<"$PYTHONS"
else
    pyenv_root=$( (command -v pyenv >/dev/null && pyenv root) || echo "$HOME/.pyenv")
    for minor in 10 11 12 13; do
        newest=$(ls -d "$pyenv_root"/versions/3."$minor".* 2>/dev/null | grep -E '/3\.[0-9]+\.[0-9]+$' | sort -V | tail -n1 || true)
        if [ -n "$newest" ] && [ -x "$newest/bin/python3" ]; then
            candidates+=("$newest/bin/python3")
        elif command -v "python3.$minor" >/dev/null; then
            candidates+=("$(command -v "python3.$minor")")
        fi
    done
fi
pythons=()
seen=" "
for py in "${candidates[@]}"; do
    info=$("$py" -c 'import sys, sysconfig; print("%d.%d" % sys.version_info[:2], sysconfig.get_config_var("Py_ENABLE_SHARED") or 0)' 2>/dev/null) || {
        echo "skipping $py: it does not run" >&2; continue; }
    minor=${info% *}
    shared=${info#* }
    case " 3.10 3.11 3.12 3.13 " in *" $minor "*) ;; *) echo "skipping $py: Python $minor (rwsgi wheels are for 3.10-3.13)" >&2; continue ;; esac
    if [ "$shared" != 1 ]; then
        echo "skipping $py: built without a shared libpython (--enable-shared), which rwsgi links" >&2
        continue
    fi
    case "$seen" in *" $minor "*) continue ;; esac
    seen="$seen$minor "
    pythons+=("$py")
done
if [ ${#pythons[@]} -eq 0 ]; then
    echo "build-wheels.sh: no CPython 3.10-3.13 with a shared libpython found; set PYTHONS" >&2
    exit 1
fi

# --- maturin, in its own venv ---------------------------------------------------------
TOOLS=$ROOT/target/wheel-tools
if [ "$("$TOOLS/bin/maturin" --version 2>/dev/null)" != "maturin $MATURIN_VERSION" ]; then
    log "installing maturin $MATURIN_VERSION into $TOOLS"
    rm -rf "$TOOLS"
    "${pythons[0]}" -m venv "$TOOLS"
    "$TOOLS/bin/python" -m pip install -q --disable-pip-version-check "maturin==$MATURIN_VERSION"
fi

# --- the wheels -------------------------------------------------------------------------
strip=()
[ "$profile" = dev ] && strip=(--strip)
mkdir -p "$out"
for py in "${pythons[@]}"; do
    log "wheel for $("$py" --version 2>&1) ($py), profile $profile"
    start=$(date +%s)
    # maturin sets PYO3_PYTHON from -i; a value inherited from the caller must not win.
    env -u PYO3_PYTHON "$TOOLS/bin/maturin" build --locked --profile "$profile" \
        --interpreter "$py" --out "$out" "${strip[@]}"
    echo "built in $(( $(date +%s) - start )) s" >&2
done
log "wheels in $out:"
ls -1 "$out"/*.whl >&2
