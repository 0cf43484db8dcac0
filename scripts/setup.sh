#!/usr/bin/env bash
# Create .venv and install everything edgeticket needs: the torch pair, the package, and Debian's data.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" torch==2.14.1 torchvision==0.29.1
"${pip[@]}" -e ".[test,edge,timm]"

# Debian: Fashion-MNIST, a Vulkan loader + Mesa's software GPU (lavapipe) for ncnn-vulkan correctness, and an
# OpenSSH server (and client, for ssh-keyscan) that the ssh bench tests start on 127.0.0.1 as a "board"
need_apt=()
[ -x /usr/sbin/sshd ] && command -v ssh-keyscan >/dev/null || need_apt+=(openssh-server openssh-client)
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need_apt+=(dataset-fashion-mnist)
ls /usr/lib/*/libvulkan.so.1 >/dev/null 2>&1 || need_apt+=(libvulkan1)
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  if command -v apt-get >/dev/null && { [ -z "$sudo" ] || command -v sudo >/dev/null; }; then
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "warning: could not install ${need_apt[*]} (no apt-get/root); put Fashion-MNIST in \$EDGETICKET_DATA" >&2
  fi
fi
