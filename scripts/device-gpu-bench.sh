#!/usr/bin/env bash
# bench/gpu.py on a lent GPU machine, in phases that each end within their own time cap, so a
# slow or broken phase costs only its own figures. Run from anywhere; it works in the repo root.
#
# On the device (bare image: python3 with torch, no internet): what the image lacks travels
# with the call, in two git-ignored folders named in the call's `carry`:
#   .whl/     wheels of the Python packages the image lacks (pip download --no-deps, cp312),
#             installed here with --target /tmp/site;
#   .devbin/  ffmpeg.tar.xz (static ffmpeg + ffprobe) and redis.tar.xz (Debian's redis-server
#             and the shared libraries it needs beyond glibc and libstdc++). These are used
#             by default (FORCE_CARRIED=1: the combination tested here end to end); with
#             FORCE_CARRIED=0 only where the machine has no ffmpeg/ffprobe or redis-server.
# Everything printed goes to $OUT/gpu.log too; each phase writes its own JSON into $OUT.
#
# Phases (each one bench/gpu.py's main(), through a small wrapper that prints every figure the
# moment it is measured, so a phase stopped at its cap still leaves its figures in the log):
#   A engine   a 240 s song: plain demucs, ours for batch sizes 1 4 16 x fp32 bf16 fp16,
#              best of 2                                                  -> gpu.json
#   B service  Separate -> last track (4) and pipelined songs per hour (3), 8 songs of 240 s,
#              max_jobs 4; (1) is phase A's figure reused, (2) is not run -> gpu-service.json
#              (if B dies without a report: (3) alone again            -> gpu-throughput.json)
#   C grid     ours for batch sizes 2 8 x fp32 bf16 fp16, only if time is left -> gpu-grid.json
# gpu.py has no compiled (torch.compile) path, so there is no compiled run.
#
#   DEVICE_DRY_RUN=1 scripts/device-gpu-bench.sh   # here, on CPU: tiny models, 3 s song,
#                                                  # carried ffmpeg/redis forced, no wheels
# Knobs (environment): BUDGET_S (whole script, default 420), OUT, PYTHON, FORCE_CARRIED,
# A_BATCH_SIZES, C_BATCH_SIZES, PRECISIONS, REPEAT, SONGS, SONG_SECONDS, MAX_JOBS.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
START=$(date +%s)
BUDGET_S=${BUDGET_S:-420}
DEADLINE=$((START + BUDGET_S))
DRY=${DEVICE_DRY_RUN:-0}
OUT=${OUT:-$ROOT/bench/results/device$([ "$DRY" = 1 ] && echo -dry)}
mkdir -p "$OUT"
LOG=$OUT/gpu.log
: >"$LOG"
rm -f "$OUT"/gpu*.json

if [ "$DRY" = 1 ]; then
    PY=${PYTHON:-$ROOT/.venv/bin/python}
    FORCE_CARRIED=${FORCE_CARRIED:-1}
    DEVICE=cpu SIZE=tiny SECONDS_=3
    A_BATCH_SIZES=${A_BATCH_SIZES:-1} C_BATCH_SIZES=${C_BATCH_SIZES:-2}
    PRECISIONS=${PRECISIONS:-fp32 bf16} REPEAT=${REPEAT:-1}
    SONGS=${SONGS:-2} SONG_SECONDS=${SONG_SECONDS:-2} MAX_JOBS=${MAX_JOBS:-2} LATENCY=0.2
    CAP_A=150 CAP_B=150 MIN_C=30
else
    PY=${PYTHON:-python3}
    FORCE_CARRIED=${FORCE_CARRIED:-1}
    DEVICE=cuda SIZE=pretrained SECONDS_=240
    A_BATCH_SIZES=${A_BATCH_SIZES:-1 4 16} C_BATCH_SIZES=${C_BATCH_SIZES:-2 8}
    PRECISIONS=${PRECISIONS:-fp32 bf16 fp16} REPEAT=${REPEAT:-2}
    SONGS=${SONGS:-8} SONG_SECONDS=${SONG_SECONDS:-240} MAX_JOBS=${MAX_JOBS:-4} LATENCY=0.5
    CAP_A=210 CAP_B=190 MIN_C=60
fi
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

elapsed() { echo $(($(date +%s) - START)); }
say() { echo "=== [$(elapsed)s] $*"; }

# The wrapper: bench/gpu.py's main() with every figure printed as it is measured.
# BENCH_PLAIN_FROM=<json>: figure (1) taken from that report (a placeholder when it is missing);
# BENCH_SKIP_OURS=1: figure (2) not run (an empty table).
WRAPPER=/tmp/device_gpu_phase.py
cat >"$WRAPPER" <<'EOF'
import json, os, sys, time
from pathlib import Path

sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), "bench")]
import gpu  # noqa: E402

T0 = time.perf_counter()


def log(*parts):
    print(f"--- [{time.perf_counter() - T0:7.1f}s]", *parts, flush=True)


_timed = gpu.timed


def timed(device, duration_s, repeat, run):
    args = getattr(run, "args", ())
    what = "plain" if len(args) < 3 else ("six" if len(args[2]) > 1 else "vocals")
    figure, result = _timed(device, duration_s, repeat, run)
    log("figure", what, json.dumps(gpu.asdict(figure)))
    return figure, result


gpu.timed = timed
_Separator = gpu.EnsembleSeparator


def separator(config):
    log("separator", f"batch_size={config.batch_size} precision={config.precision}")
    return _Separator(config)


gpu.EnsembleSeparator = separator
_serve_queue = gpu.serve_queue


async def serve_queue(*args, **kwargs):
    result = await _serve_queue(*args, **kwargs)
    log("throughput run", json.dumps(result, default=str))
    return result


gpu.serve_queue = serve_queue
_delivery = gpu.delivery


def delivery(*args, **kwargs):
    result = _delivery(*args, **kwargs)
    log("delivery", json.dumps(result, default=str))
    return result


gpu.delivery = delivery

plain_from = os.environ.get("BENCH_PLAIN_FROM")
if plain_from:
    def plain(*_args, **_kwargs):
        path = Path(plain_from)
        if path.is_file():
            row = json.loads(path.read_text())["plain"]
            return {**row, "name": row["name"] + " (phase A's figure, not rerun)"}
        return {"name": "plain apply_model: not run in this phase", "precision": "fp32",
                "seconds": 0.0, "real_time_factor": 0.0, "peak_memory_mb": 0.0}
    gpu.plain_demucs = plain
if os.environ.get("BENCH_SKIP_OURS") == "1":
    gpu.ours = lambda *_args, **_kwargs: []

sys.exit(gpu.main(sys.argv[1:]))
EOF

# phase NAME CAP_S MIN_S [env VAR=VALUE ...] -- gpu.py arguments...
phase() {
    local name=$1 cap=$2 min=$3
    shift 3
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    local left=$((DEADLINE - $(date +%s)))
    if [ "$left" -lt "$min" ]; then
        say "phase $name skipped: ${left}s left of the budget, it needs ${min}s"
        return 0
    fi
    [ "$cap" -gt "$left" ] && cap=$left
    say "phase $name (cap ${cap}s): gpu.py $*"
    env "${envs[@]}" timeout -k 10 "$cap" "$PY" -u "$WRAPPER" "$@"
    local rc=$?
    case $rc in
        0) say "phase $name done" ;;
        124 | 137) say "phase $name STOPPED at its ${cap}s cap (figures so far: the '--- figure' lines)" ;;
        *) say "phase $name exited $rc (1: a problem or missed check, see above)" ;;
    esac
    return $rc
}

unpack() { # archive folder
    "$PY" -c "import sys, tarfile
t = tarfile.open(sys.argv[1])
t.extractall(sys.argv[2], **({'filter': 'tar'} if hasattr(tarfile, 'tar_filter') else {}))" "$1" "$2"
}

main() {
    say "device-gpu-bench: dry_run=$DRY budget=${BUDGET_S}s out=$OUT"
    # 1. Python packages the image lacks.
    if [ "$DRY" != 1 ] && compgen -G ".whl/*.whl" >/dev/null; then
        say "installing $(ls .whl/*.whl | wc -l) wheels into /tmp/site"
        timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target /tmp/site .whl/*.whl || { say "wheel install FAILED"; return 3; }
        export PYTHONPATH=/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}
    else
        export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
    fi
    # 2. ffmpeg + ffprobe and redis-server: the machine's own, else the carried ones.
    local bin=/tmp/devbin
    mkdir -p "$bin/bin"
    if [ "$FORCE_CARRIED" = 1 ] || ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
        if [ -f .devbin/ffmpeg.tar.xz ]; then
            say "unpacking the carried static ffmpeg + ffprobe"
            unpack .devbin/ffmpeg.tar.xz "$bin/bin" || say "ffmpeg unpack FAILED"
        else
            say "no ffmpeg/ffprobe here and none carried (.devbin/ffmpeg.tar.xz)"
        fi
    fi
    if [ "$FORCE_CARRIED" = 1 ] || ! command -v redis-server >/dev/null; then
        if [ -f .devbin/redis.tar.xz ]; then
            say "unpacking the carried redis-server"
            unpack .devbin/redis.tar.xz "$bin" || say "redis unpack FAILED"
            cat >"$bin/bin/redis-server" <<EOF
#!/usr/bin/env bash
LD_LIBRARY_PATH=$bin/redis/lib exec -a redis-server $bin/redis/redis-server.bin "\$@"
EOF
            chmod +x "$bin/bin/redis-server"
        else
            say "no redis-server here and none carried (.devbin/redis.tar.xz)"
        fi
    fi
    export PATH=$bin/bin:$PATH
    # 3. What we run on.
    say "machine"
    command -v nvidia-smi >/dev/null && nvidia-smi -L
    echo "cores $(nproc); $(free -g | awk '/Mem:/{print $2 " GiB memory"}'); $(uname -r)"
    echo "ffmpeg: $(command -v ffmpeg) $(ffmpeg -hide_banner -version 2>&1 | head -1)"
    echo "ffprobe: $(command -v ffprobe) $(ffprobe -hide_banner -version 2>&1 | head -1)"
    echo "redis-server: $(command -v redis-server) $(redis-server --version 2>&1 | head -1)"
    "$PY" -c "import sys, torch
print('python', sys.version.split()[0], sys.executable)
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '', 'threads', torch.get_num_threads())"
    # 4. Everything the phases import, before any of them spends time (fails fast, loudly).
    say "import check"
    "$PY" -c "import sys, os
sys.path[:0] = [os.getcwd(), 'bench']
import gpu, throughput, demucs.apply, demucs.pretrained, demucs.htdemucs, worker.app, bot, tests.support.load
import pydantic, telegram, arq, redis, limits, aiosqlite
print('imports ok: demucs', __import__('demucs').__version__, 'pydantic', pydantic.VERSION,
      'telegram', telegram.__version__, 'arq', __import__('importlib.metadata').metadata.version('arq'),
      'redis', redis.__version__, 'numpy', __import__('numpy').__version__)" ||
        { say "import check FAILED"; return 4; }

    local common=(--device "$DEVICE" --size "$SIZE" --seconds "$SECONDS_")
    local status=0
    # shellcheck disable=SC2086  # the lists are meant to split
    phase A "$CAP_A" 60 -- "${common[@]}" --batch-sizes $A_BATCH_SIZES \
        --precisions $PRECISIONS --repeat "$REPEAT" --skip-throughput --skip-delivery \
        --json "$OUT/gpu.json" || status=1
    # shellcheck disable=SC2086
    phase B "$CAP_B" 60 BENCH_PLAIN_FROM="$OUT/gpu.json" BENCH_SKIP_OURS=1 -- "${common[@]}" \
        --batch-sizes 1 --precisions fp32 --songs "$SONGS" --song-seconds "$SONG_SECONDS" \
        --max-jobs "$MAX_JOBS" --latency "$LATENCY" --json "$OUT/gpu-service.json"
    local rc_b=$?
    [ "$rc_b" = 0 ] || status=1
    if [ ! -f "$OUT/gpu-service.json" ] && [ "$rc_b" != 124 ] && [ "$rc_b" != 137 ]; then
        # B died before its report (not at its cap): the throughput alone, if time is left.
        phase B2 "$CAP_B" 90 BENCH_PLAIN_FROM="$OUT/gpu.json" BENCH_SKIP_OURS=1 -- "${common[@]}" \
            --batch-sizes 1 --precisions fp32 --songs "$SONGS" --song-seconds "$SONG_SECONDS" \
            --max-jobs "$MAX_JOBS" --latency "$LATENCY" --skip-delivery \
            --json "$OUT/gpu-throughput.json" || status=1
    fi
    # shellcheck disable=SC2086
    phase C 100000 "$MIN_C" BENCH_PLAIN_FROM="$OUT/gpu.json" -- "${common[@]}" \
        --batch-sizes $C_BATCH_SIZES --precisions $PRECISIONS --repeat "$REPEAT" \
        --skip-throughput --skip-delivery --json "$OUT/gpu-grid.json" || status=1
    command -v nvidia-smi >/dev/null &&
        nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm,clocks.max.sm --format=csv
    say "finished, status $status; files: $(cd "$OUT" && ls | tr '\n' ' ')"
    return $status
}

main 2>&1 | tee -a "$LOG"
exit "${PIPESTATUS[0]}"
