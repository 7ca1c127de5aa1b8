#!/usr/bin/env bash
# Imports image archives (docker save / go-containerregistry tarballs, such as
# hack/image writes) into the local node's containerd, where the kubelet
# finds them: use imagePullPolicy Never (or IfNotPresent) in pod specs.
#
#   hack/cluster/import-image.sh gateway.tar users.tar ...
#
# An archive whose image is already there imports nothing new.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

(($# > 0)) || die import-image "" "usage: $0 ARCHIVE.tar..."
[[ -S "$CONTAINERD_SOCK" ]] || die import-image "$LOGS/containerd.log" "no containerd at $CONTAINERD_SOCK: run hack/cluster/up.sh first"
for archive in "$@"; do
  [[ -f "$archive" ]] || die import-image "" "$archive: no such file"
  # Unpacked into the CRI's snapshotter while importing, so the first pod
  # does not wait for it.
  "$CONTAINERD_BIN/ctr" --address "$CONTAINERD_SOCK" -n k8s.io images import \
    --snapshotter overlayfs "$archive" ||
    die import-image "$LOGS/containerd.log" "ctr images import $archive failed"
done
