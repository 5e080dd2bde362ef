#!/usr/bin/env bash
# Gather every pinned dependency of the image as a wheel in build/wheelhouse/, with a
# requirements.txt and the VARIANT beside them (another variant's wheelhouse is replaced), so that `docker build` installs with --no-index
# (no registry reached from inside the build: what air-gapped sites need).
#
#   deploy/docker/wheelhouse.sh cpu|cuda
#
# Pins come from pyproject.toml. VARIANT=cpu takes torch/torchvision from the PyTorch CPU
# wheel index (TORCH_CPU_INDEX; no CUDA libraries, ~4 GB smaller). Where that index cannot
# be reached, it says so and takes the default torch wheel (CUDA libraries included):
# the image then works the same on CPUs, it is only bigger. VARIANT=cuda takes the default
# torch wheel. Runs on the host, with the host's pip configuration (indexes, find-links,
# CA bundle); the wheels must fit the image: CPython 3.11, manylinux x86_64.
set -euo pipefail
variant="${1:?usage: wheelhouse.sh cpu|cuda}"
case "$variant" in cpu|cuda) ;; *) echo "wheelhouse.sh: VARIANT must be cpu or cuda, got '$variant'" >&2; exit 1 ;; esac
repo="$(cd "$(dirname "$0")/../.." && pwd)"
py="${PYTHON:-$repo/.venv/bin/python}"
out="$repo/build/wheelhouse"
torch_cpu_index="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
pip=("$py" -m pip --disable-pip-version-check)
# Wheels for the image's interpreter: CPython 3.11 on glibc 2.36 (bookworm), x86_64.
target=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --platform linux_x86_64
        --platform manylinux1_x86_64 --platform manylinux2010_x86_64 --platform manylinux2014_x86_64)
for glibc_minor in $(seq 5 36); do target+=(--platform "manylinux_2_${glibc_minor}_x86_64"); done
if [ -f "$out/VARIANT" ] && [ "$(cat "$out/VARIANT")" != "$variant" ]; then rm -rf "$out"; fi
mkdir -p "$out"
"$py" - "$repo/pyproject.toml" > "$out/requirements.txt" <<'PY'
import sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print("\n".join(deps))
PY
grep -E '^(torch|torchvision)==' "$out/requirements.txt" > "$out/torch.txt"
if [ "$variant" = cpu ] && ! ls "$out"/torch-*+cpu-*.whl >/dev/null 2>&1; then
  if ! "${pip[@]}" download --no-deps "${target[@]}" -d "$out" -r "$out/torch.txt" \
        --isolated --timeout 10 --retries 1 --index-url "$torch_cpu_index" --cert /etc/ssl/certs/ca-certificates.crt; then
    echo "wheelhouse.sh: the PyTorch CPU index ($torch_cpu_index) cannot be reached; using the default" \
         "torch wheel, which carries CUDA libraries (same behaviour on CPUs, ~4 GB bigger image)." \
         "Set TORCH_CPU_INDEX to a reachable mirror for the small image." >&2
  fi
fi
# Everything else (and torch itself where no CPU wheel was found), plus what `pip install .`
# needs to build the project inside the image (setuptools, wheel). pip evaluates dependency
# markers with the host's interpreter, so the backport that redis needs below Python 3.11.3
# (Debian bookworm's python3 is 3.11.2) is named here for base images with an older 3.11.
"${pip[@]}" download "${target[@]}" -d "$out" --find-links "$out" -r "$out/requirements.txt" \
  "setuptools>=68" wheel "async-timeout>=4.0.3"
echo "$variant" > "$out/VARIANT"
torch_wheel="$(ls "$out"/torch-[0-9]*.whl | sort | tail -1)"
echo "wheelhouse.sh: $(ls "$out"/*.whl | wc -l) wheels, $(du -sh "$out" | cut -f1) in $out; torch: $(basename "$torch_wheel")"
