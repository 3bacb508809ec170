#!/usr/bin/env bash
# The Debian packages the lab needs beyond Python: the real-material datasets' synthesisers (espeak-ng, fluidsynth
# and its General MIDI sound font), Redis for the broker, Chromium for the browser test, and slurm-wlm with munge for
# the two-node SLURM cluster the multi-node tests start on loopback (deploy/slurm_loopback.py). Installs what is
# missing with apt-get (as root, or through sudo); prints the command and fails where it cannot.
set -euo pipefail

missing=()
need() { # need PACKAGE CHECK...: the package is missing when the check fails
  local package=$1; shift
  "$@" >/dev/null 2>&1 || missing+=("$package")
}
need espeak-ng command -v espeak-ng
need fluidsynth command -v fluidsynth
need fluid-soundfont-gm test -f /usr/share/sounds/sf2/FluidR3_GM.sf2
need redis-server command -v redis-server
need chromium test -x /usr/bin/chromium
need slurm-wlm test -x /usr/sbin/slurmctld
need munge test -x /usr/sbin/munged

[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
else
  echo "cannot install them without root; run: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
