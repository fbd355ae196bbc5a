#!/usr/bin/env bash
# The wheels that .ci/gpu.sh installs on the GPU machine, which reaches no package registry and has the rest of
# img2img's dependencies (the earlier leases installed these alone): downloaded here into .whl/ (ignored by git;
# give it to the machine with run's carry=[".whl"]).  The versions are those the test suite passes with here.
#   bash .ci/gpu-wheels.sh          # from the repository root; GPU_PYTHON (3.12) is the machine's Python
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "${GPU_PYTHON:-3.12}" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --platform any -d .whl \
    albumentations==2.0.8 albucore==0.0.24 simsimd==6.5.16 stringzilla==5.3.2 pydantic==2.14.4 \
    pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 \
    kornia==0.9.0 kornia-rs==0.2.0
ls .whl
du -sh .whl   # what carry takes of its 64 MiB
