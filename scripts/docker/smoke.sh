#!/usr/bin/env bash
# make docker-smoke: build the real Dockerfile (same `.[gpu]` install as production) on a local Debian base, then run
# the image without a GPU and without network, as its own user (uid 1000), and check what a user does first.
#
#   scripts/docker/smoke.sh                   # or: make docker-smoke
#   IMAGE=aha:smoke BASE_IMAGE=aha-base:bookworm PYTHON_PKG=python3.11 scripts/docker/smoke.sh
#
# It builds twice: once from a copy of this working tree, then again after touching only aha/ in that copy; the
# second build must reuse the dependency layer (`pip install .[gpu]` CACHED). Both are timed. It downloads several GB
# on the first run (vLLM, CUDA torch and its CUDA wheels). Logs go to $LOGS (default /tmp/aha-docker-smoke).
# Exit 0: every check passed; 1: a build or a check failed (its log is named); 2: no Docker engine, no BuildKit, or no
# base image and no root to make one.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
IMAGE=${IMAGE:-aha:smoke}
BASE_IMAGE=${BASE_IMAGE:-aha-base:bookworm}
PYTHON_PKG=${PYTHON_PKG:-python3.11}  # bookworm's Python (Ubuntu 24.04's python3.12 does not exist there)
LOGS=${LOGS:-/tmp/aha-docker-smoke}
GPU_RECIPE=recipes/qwen2.5-1.5b-instruct/gsm8k-grpo.yaml  # for `aha download --dry-run`: a hub model and dataset

fail2() {
    echo "docker-smoke: $*" >&2
    exit 2
}

command -v docker >/dev/null || fail2 "no docker client on PATH: apt-get install -y docker.io, then start dockerd as root."
docker info >/dev/null 2>&1 || fail2 "no Docker engine answers (docker info failed): start one as root (dockerd &)."

# A builder with BuildKit (the build-only pip_cert secret needs it): buildx where installed, else a pre-23 client
# (Debian's docker.io 20.10) whose `docker build` has BuildKit built in.
BUILD=()
for client in docker /usr/bin/docker; do
    command -v "$client" >/dev/null || continue
    if "$client" buildx version >/dev/null 2>&1; then
        BUILD=("$client" buildx build --load)
        break
    fi
    major=$("$client" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
    if [[ "$major" =~ ^[0-9]+$ ]] && [ "$major" -lt 23 ]; then
        BUILD=(env DOCKER_BUILDKIT=1 "$client" build)
        break
    fi
done
[ ${#BUILD[@]} -gt 0 ] || fail2 "no BuildKit builder: install the buildx plugin (docker-buildx) or Debian's docker.io client."

base_start=$SECONDS
"$REPO/scripts/docker/base-image.sh" "$BASE_IMAGE" || exit $?
echo "base image: $((SECONDS - base_start)) s"

rm -rf "$LOGS" && mkdir -p "$LOGS"
# The machine's CA bundle for pip, when pip is configured with one (PIP_CERT or pip's `cert` setting): handed to
# the build as a secret, so it is in no layer of the image.
cert=${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}
cert=${cert//\'/}
SECRET=()
[ -n "$cert" ] && [ -s "$cert" ] && SECRET=(--secret "id=pip_cert,src=$cert")

# The build context: a copy of the working tree (tracked and untracked files that git does not ignore), so the
# second build can touch aha/ without touching the checkout.
context=$(mktemp -d /tmp/aha-docker-context.XXXXXX)
trap 'rm -rf "$context"' EXIT
git -C "$REPO" ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' file; do [ -e "$REPO/$file" ] && printf '%s\0' "$file"; done \
    | tar -C "$REPO" --null -T - -c | tar -C "$context" -x \
    || fail2 "could not copy the working tree (is $REPO a git checkout?)."

build() {  # build LABEL: time one build of $context into $IMAGE, log to $LOGS/build-LABEL.log
    local start=$SECONDS
    if ! "${BUILD[@]}" --progress=plain --build-arg "CUDA_IMAGE=$BASE_IMAGE" --build-arg "PYTHON=$PYTHON_PKG" \
        "${SECRET[@]}" -t "$IMAGE" "$context" >"$LOGS/build-$1.log" 2>&1; then
        tail -30 "$LOGS/build-$1.log" >&2
        echo "docker-smoke: FAIL build $1 (log: $LOGS/build-$1.log)" >&2
        exit 1
    fi
    echo "build $1: $((SECONDS - start)) s"
}

echo "docker-smoke: building $IMAGE on $BASE_IMAGE ($PYTHON_PKG) with: ${BUILD[*]} (logs: $LOGS)"
build first
echo "# touched by make docker-smoke: a source-only change" >>"$context/aha/__init__.py"
build second
dependency_step=$(grep -E "^#[0-9]+ \[.*pip install --no-cache-dir '\.\[gpu\]'" "$LOGS/build-second.log" | head -1 | cut -d' ' -f1)
if [ -n "$dependency_step" ] && grep -q "^$dependency_step CACHED" "$LOGS/build-second.log"; then
    echo "PASS  second build reused the dependency layer (pip install .[gpu] CACHED)"
else
    echo "FAIL  second build re-ran pip install .[gpu] (log: $LOGS/build-second.log)"
    failed=1
fi
size=$(docker image inspect --format '{{.Size}}' "$IMAGE")
echo "image $IMAGE: $(awk -v s="$size" 'BEGIN {printf "%.2f GB (%.0f bytes)", s / 1e9, s}')"

failed=${failed:-0}
# check NAME COMMAND...: one container, no network, as the image's user; PASS/FAIL with the time and the log
check() {
    local name=$1 start=$SECONDS
    shift
    if docker run --rm --network none "$@" >"$LOGS/check-$name.log" 2>&1; then
        echo "PASS  $name ($((SECONDS - start)) s)"
    else
        echo "FAIL  $name ($((SECONDS - start)) s; log: $LOGS/check-$name.log)"
        tail -15 "$LOGS/check-$name.log" | sed 's/^/      /'
        failed=1
    fi
}

check help "$IMAGE" --help
# the build's CA secret left nothing behind: no file, no variable, no pip setting
check build-secret-not-in-image --entrypoint bash "$IMAGE" -c \
    '[ ! -e /run/secrets/pip_cert ] && [ -z "${PIP_CERT:-}" ] && ! pip config list | grep -qi cert \
     && echo "no /run/secrets/pip_cert, no PIP_CERT, no pip cert setting"'
check user --entrypoint bash "$IMAGE" -c '[ "$(id -u):$(id -g)" = 1000:1000 ] && id'
check aha-check-every-recipe --entrypoint bash "$IMAGE" -c \
    'for r in recipes/*/*.yaml; do aha check "$r" >/dev/null || { echo "aha check $r failed"; exit 1; }; echo "ok $r"; done'
# the tiny model built inside, then 2 GRPO steps on CPU (a smaller batch than the recipe's: this checks that training
# runs in the image, not what it learns)
check launch-2-steps --entrypoint bash "$IMAGE" -c \
    'aha tiny && aha launch recipes/tiny/grpo-arith.yaml --model_name_or_path ./artifacts/tiny --max_steps 2 \
        --per_device_train_batch_size 16 --output_dir runs/smoke \
     && python -c "import json; s = json.load(open(\"runs/smoke/summary.json\")); print(s[\"global_step\"], s[\"stopped_by\"]); assert s[\"global_step\"] == 2"'
check download-dry-run "$IMAGE" download "$GPU_RECIPE" --dry-run
check venv-read-only-cache-writable --entrypoint bash "$IMAGE" -c \
    'site=$(python -c "import sysconfig; print(sysconfig.get_paths()[\"purelib\"])")
     for d in /opt/venv /opt/venv/bin "$site"; do
         if touch "$d/.probe" 2>/dev/null; then echo "$d is writable by $(id -u)"; exit 1; fi; done
     touch /cache/huggingface/.probe && rm /cache/huggingface/.probe && echo "/opt/venv read-only, HF cache writable"'
# `make train` must go straight to the recipe: make -n prints what it would run (no pip, no venv), and a real `make
# check` runs through the same install stamp (with no network, a reinstall would fail)
check make-train-does-not-reinstall --entrypoint bash "$IMAGE" -c \
    'out=$(make -n train RECIPE=recipes/tiny/sft-warmup.yaml) && echo "$out" \
     && ! grep -Eq "pip|-m venv" <<<"$out" && grep -q "/opt/venv/bin/aha launch recipes/tiny/sft-warmup.yaml" <<<"$out" \
     && make check RECIPE=recipes/tiny/grpo-arith.yaml'

if [ "$failed" -ne 0 ]; then
    echo "docker-smoke: FAILED (logs: $LOGS)"
    exit 1
fi
echo "docker-smoke: every check passed (logs: $LOGS)"
