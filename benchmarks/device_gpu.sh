#!/usr/bin/env bash
# BENCHMARKS.md's GPU column on a lent GPU machine (the `device` tool's `run`), never in tests.
#
#   bash benchmarks/device_gpu.sh pack       here, once: what the calls carry (.whl, .xs, .pys; all git-ignored)
#   bash benchmarks/device_gpu.sh            there, carry [".whl"]: bench_real_models --devices cuda,
#                                            bench_quick_train --reference, bench_zero_shot --skip-things
#   bash benchmarks/device_gpu.sh xserver    there, carry [".xs"]: Xvfb + Mesa's software GL, checked with pyglet
#   bash benchmarks/device_gpu.sh feedback   there, next call on the same warm machine, carry [".whl", ".pys"]:
#                                            bench_feedback with sd-turbo's architecture (random weights) at 512 px
#
# The machine's image (Python 3.12) has torch, transformers, timm, huggingface_hub and safetensors, but not
# diffusers, open_clip, PsychoPy, pyglet, MNE, SQLAlchemy, pylsl..., and no X server: `pack` downloads wheels
# for its Python, copies the pure-Python packages bench_feedback's processes import from this venv, and packs
# Xvfb with Mesa's llvmpipe from this Debian 12 machine (libz3 and libicudata replaced by stubs, which Mesa
# never calls: 45 MB instead of 60). The X stack and the Python packages exceed one call's 64 MiB together,
# hence two calls for the feedback loop; the second must come within the machine's 30 s warm window.
set -u
cd "$(dirname "$0")/.." || exit 1  # the repository root: what the calls carry lives there
MODE=${1:-bench}
OUT=${OUT:-/tmp/device-gpu}
PY=${PY:-python3}
XS=${XS:-/opt/xs}

log_json() {  # the last JSON line of a log (tqdm's bars end in \r)
    tr '\r' '\n' < "$1" | grep -E '^\{' | tail -1
}

pack() {
    local venv=${VENV:-.venv} py sp tmp need
    py="$venv/bin/python"
    for need in "$py" /usr/bin/Xvfb /usr/bin/xkbcomp /usr/lib/x86_64-linux-gnu/dri/swrast_dri.so \
                /usr/lib/x86_64-linux-gnu/libLLVM-15.so.1 /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf; do
        [ -e "$need" ] || { echo "pack: $need is missing (pack runs on Debian 12 with xvfb, Mesa, fonts-dejavu" \
                                 "and the project's .venv with the test extra)"; return 2; }
    done
    command -v gcc > /dev/null && command -v nm > /dev/null || { echo "pack: needs gcc and nm"; return 2; }
    set -o pipefail
    sp=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    mkdir -p .whl .xs .pys
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d .whl diffusers==0.42.1 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 \
        importlib_metadata==10.2.0 sqlalchemy==2.1.9 python-bidi==0.6.12 || return 1
    # the X server and Mesa: every library they load that is not glibc's, libstdc++ or zlib
    local L=/usr/lib/x86_64-linux-gnu
    mkdir -p "$tmp/xs/lib" "$tmp/xs/bin" "$tmp/xs/dri" "$tmp/py"
    for f in /usr/bin/Xvfb /usr/bin/xkbcomp $L/dri/swrast_dri.so $L/libGLX_mesa.so.0 $L/libGL.so.1 $L/libGLU.so.1 \
             $L/libXi.so.6 $L/libXxf86vm.so.1 $L/libXrandr.so.2 $L/libXinerama.so.1 $L/libXcursor.so.1 \
             $L/libfontconfig.so.1 $L/libfreetype.so.6; do
        echo "$f"; ldd "$f" | awk '/=>/{print $3}'
    done | grep '^/' | grep -v -E '/(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt|libz)\.so' | sort -u \
        | grep -v -E '/(Xvfb|xkbcomp|swrast_dri\.so)$' | xargs -I{} cp -L {} "$tmp/xs/lib/" || return 1
    cp /usr/bin/Xvfb /usr/bin/xkbcomp "$tmp/xs/bin/" && cp -L $L/dri/swrast_dri.so "$tmp/xs/dri/" \
        && cp -r /usr/share/X11/xkb "$tmp/xs/xkb" || return 1
    echo 'const char icudt72_dat[64] = {0};' > "$tmp/icu.c"
    nm -D --undefined-only "$tmp/xs/lib/libLLVM-15.so.1" | awk '{print $2}' | grep '^Z3_' | sed 's/@.*//' \
        | sort -u | awk '{print "void " $1 "(void){}"}' > "$tmp/z3.c"
    gcc -shared -fPIC -o "$tmp/xs/lib/libicudata.so.72" -Wl,-soname,libicudata.so.72 "$tmp/icu.c" || return 1
    gcc -shared -fPIC -o "$tmp/xs/lib/libz3.so.4" -Wl,-soname,libz3.so.4 "$tmp/z3.c" || return 1
    cp -r "$sp/pyglet" "$tmp/xs/py_pyglet"
    find "$tmp" -name __pycache__ -prune -exec rm -rf {} +
    tar -C "$tmp/xs" -cJf .xs/xs.tar.xz --exclude=py_pyglet . && tar -C "$tmp/xs" -cJf .xs/pyglet.tar.xz \
        --transform 's,^py_pyglet,pyglet,' py_pyglet || return 1
    # pure-Python packages the loop's processes import that the image lacks (tests and demos left out), a font
    "$py" - "$tmp/py" <<'PYEOF' || return 1
import importlib.metadata as md, shutil, sys
from pathlib import Path
dst = Path(sys.argv[1])
for d in ("alembic arabic-reshaper beautifulsoup4 decorator et-xmlfile freetype-py i18next json-tricks mako mne "
          "openpyxl psychopy psychtoolbox pylsl pyriemann pyserial soupsieve array-api-compat array-api-extra "
          "skops prettytable").split():
    dist = md.distribution(d)
    for f in dist.files or ():
        src = Path(dist.locate_file(f))
        parts = Path(f).parts
        # scripts listed as ../../../bin/NAME would land outside the pack (in /usr/bin as root)
        if parts[0] == ".." or {"tests", "demos", "__pycache__", "examples"} & set(parts) or not src.is_file():
            continue
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / f)
PYEOF
    mkdir -p "$tmp/py/fonts" && cp /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf "$tmp/py/fonts/"
    printf '<?xml version="1.0"?>\n<fontconfig><dir>/opt/pysite/fonts</dir><cachedir>/tmp/fc-cache</cachedir></fontconfig>\n' \
        > "$tmp/py/fonts.conf"
    tar -C "$tmp/py" -cJf .pys/pysite.tar.xz . || return 1
    du -sh .whl .xs .pys
}

start_x() {  # Xvfb on :99 with the carried Mesa; LD_LIBRARY_PATH holds only what the image lacks
    export LD_LIBRARY_PATH="$XS/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" LIBGL_DRIVERS_PATH="$XS/dri" \
        DISPLAY=":${XDISPLAY:-99}"
    "$XS/bin/Xvfb" ":${XDISPLAY:-99}" -screen 0 1920x1080x24 -nolisten tcp -xkbdir "$XS/xkb" > "$OUT/xvfb.log" 2>&1 &
    XPID=$!
    sleep 3
    kill -0 $XPID || { echo "Xvfb died:"; cat "$OUT/xvfb.log"; exit 1; }
}

xserver() {
    mkdir -p "$XS/dup" "$XS/py" && tar -C "$XS" -xJf .xs/xs.tar.xz && tar -C "$XS/py" -xJf .xs/pyglet.tar.xz || exit 1
    for f in "$XS"/lib/*; do  # the image's own copy wins where it has one (newer)
        if ldconfig -p | grep -q "^[[:space:]]$(basename "$f") "; then mv "$f" "$XS/dup/"; fi
    done
    echo "carried libraries used: $(ls "$XS/lib" | wc -l); the image's own: $(ls "$XS/dup" | wc -l)"
    # the server loads its GL driver from its compiled-in folder, and runs xkbcomp from /usr/bin
    mkdir -p /usr/lib/x86_64-linux-gnu/dri /var/lib/xkb
    [ -e /usr/lib/x86_64-linux-gnu/dri/swrast_dri.so ] || cp "$XS/dri/swrast_dri.so" /usr/lib/x86_64-linux-gnu/dri/
    [ -e /usr/bin/xkbcomp ] || cp "$XS/bin/xkbcomp" /usr/bin/
    start_x
    PYTHONPATH="$XS/py" "$PY" -c "
import time, pyglet
w = pyglet.window.Window(320, 240)
from pyglet import gl
print('GL', gl.gl_info.get_renderer(), gl.gl_info.get_version())
t = time.perf_counter()
for _ in range(200):
    w.flip()
print('flips/s', round(200 / (time.perf_counter() - t)))
w.close()"
    local rc=$?
    kill $XPID
    return $rc
}

install_wheels() {
    if [ -d .whl ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl || exit 1
        export PYTHONPATH=/tmp/site
    fi
}

bench() {  # name, seconds, script and arguments
    local name=$1 limit=$2
    shift 2
    echo "== $name: $* (limit ${limit} s)"
    local t0=$SECONDS
    timeout "$limit" "$PY" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "rc=$rc in $((SECONDS - t0)) s"
    log_json "$OUT/$name.log" > "$OUT/$name.json"
    [ $rc -eq 0 ] || FAILED=$((FAILED + 1))
}
FAILED=0

feedback() {
    [ -x "$XS/bin/Xvfb" ] || { echo "no $XS: run 'device_gpu.sh xserver' first on the same machine"; exit 1; }
    install_wheels
    [ -d /opt/pysite/psychopy ] || { mkdir -p /opt/pysite && tar -C /opt/pysite -xJf .pys/pysite.tar.xz; } || exit 1
    export PYTHONPATH="${PYTHONPATH:-/tmp/site}:/opt/pysite:$XS/py:$PWD" FONTCONFIG_FILE=/opt/pysite/fonts.conf
    start_x
    local gen=/tmp/sd-turbo-random
    [ -f $gen/model_index.json ] || "$PY" - $gen <<'PYEOF' || exit 1
import sys, time
sys.path.insert(0, "benchmarks")
import torch
from bench_real_models import build_sd_turbo
t = time.perf_counter()
pipe, _ = build_sd_turbo(False)
pipe.to(torch.float16).save_pretrained(sys.argv[1])
print("sd-turbo's architecture, random weights, saved in", round(time.perf_counter() - t, 1), "s", flush=True)
PYEOF
    bench feedback "${LIMIT_FB:-260}" benchmarks/bench_feedback.py --trials 20 --generator $gen --size 512
    cat "$OUT/feedback.json"
    kill $XPID
}

mkdir -p "$OUT"
case "$MODE" in
    pack) pack; exit $? ;;
    xserver) xserver; exit $? ;;
    feedback) export PYTHONUNBUFFERED=1; feedback; exit $((FAILED > 0)) ;;
    bench) ;;
    *) echo "device_gpu.sh: unknown mode '$MODE' (pack, bench, xserver, feedback)"; exit 2 ;;
esac

install_wheels
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/smi.txt"
grep -m1 "model name" /proc/cpuinfo; nproc
"$PY" -c "import torch, diffusers, open_clip, transformers; print('torch', torch.__version__, 'diffusers',
diffusers.__version__, 'open_clip', open_clip.__version__, 'transformers', transformers.__version__,
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA')" || exit 1
bench real_models "${LIMIT_REAL:-220}" benchmarks/bench_real_models.py --devices cuda
bench quick_train "${LIMIT_TRAIN:-180}" benchmarks/bench_quick_train.py --reference
bench zero_shot "${LIMIT_ZERO:-100}" benchmarks/bench_zero_shot.py --skip-things
echo "== summary"
for f in "$OUT"/*.json; do echo "$(basename "$f"): $(cat "$f")"; done
exit $((FAILED > 0))
