#!/bin/sh
# Usage: tools/pip_install.sh PYTHON REQUIREMENT
# pip-installs hubopt with extras. The tasks' simulator (gymnasium[box2d]) normally comes
# as wheels; where no Box2D wheel fits the machine pip builds it, which needs SWIG and a
# C++ compiler: then this installs them with apt-get (as root, where apt-get exists) and
# retries, or says exactly what to install.
set -u
py=$1
req=$2
"$py" -m pip install --quiet -e "$req" && exit 0
echo "hubopt: 'pip install -e $req' failed; Box2D may need building (SWIG, g++)." >&2
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "hubopt: installing swig and g++ with apt-get, then retrying" >&2
  apt-get update -qq && apt-get install -y -qq swig g++ && "$py" -m pip install --quiet -e "$req" && exit 0
fi
echo "hubopt: install SWIG and a C++ compiler (Debian/Ubuntu: sudo apt-get install swig g++;" >&2
echo "        macOS: brew install swig), then run make again." >&2
exit 1
