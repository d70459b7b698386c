#!/usr/bin/env bash
# Run one distill-jax command on every worker of a Cloud TPU VM slice (one JAX process per host).
#
# Usage: launch/tpu_vm.sh --name=NAME --zone=ZONE [options] -- distill-jax SUBCOMMAND [flags...]
#   --name=NAME              TPU VM name (or $TPU_NAME); reused if it exists, else created.
#   --zone=ZONE              its zone (or $ZONE).
#   --project=PROJECT        (or $PROJECT) default: gcloud's configured project.
#   --accelerator-type=TYPE  (or $ACCELERATOR_TYPE) e.g. v4-32, v5litepod-16, v6e-16; needed only to create.
#   --version=VERSION        (or $TPU_VERSION) TPU software version when creating; default from the type
#                            (v4: tpu-ubuntu2204-base, v5litepod: v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5,
#                            v6e: v2-alpha-tpuv6e).
#   --spot                   create as a Spot VM.
#   --install=SPEC           pip requirement to install on every worker (e.g. distill-jax==0.1.0 or a git
#                            URL); default: this checkout's HEAD (git archive), copied with scp.
#   --log=FILE               also append the streamed output of every worker to FILE.
#   --teardown               delete the TPU VM when the command ends (also on failure).
#   --dry-run                print the commands instead of running them (or DRY_RUN=1).
# Every worker runs the same command with DISTILL_JAX_DISTRIBUTED=1, so jax.distributed.initialize()
# finds the coordinator, process count and index from the TPU metadata. Data and --workdir must be
# paths every worker reaches: gs://BUCKET/... (no mount needed; the VM's service account via ADC), or a
# Filestore/NFS mount. Orbax writes checkpoints from all hosts.
# Needs: gcloud (authenticated), and git unless --install is given.
set -euo pipefail

die() { echo "launch/tpu_vm.sh: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -e/{/^#/p}' "$0"; exit 2; }

name=${TPU_NAME:-} zone=${ZONE:-} project=${PROJECT:-} type=${ACCELERATOR_TYPE:-} version=${TPU_VERSION:-}
spot=0 install="" log="" teardown=0 dry_run=${DRY_RUN:-0}
while [ $# -gt 0 ]; do
  case $1 in
    --name=*) name=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --accelerator-type=*) type=${1#*=} ;;
    --version=*) version=${1#*=} ;;
    --spot) spot=1 ;;
    --install=*) install=${1#*=} ;;
    --log=*) log=${1#*=} ;;
    --teardown) teardown=1 ;;
    --dry-run) dry_run=1 ;;
    -h|--help) usage ;;
    --) shift; break ;;
    *) die "unknown option '$1' (put the distill-jax command after --; --help lists the options)" ;;
  esac
  shift
done
[ $# -gt 0 ] || die "no command given; e.g. launch/tpu_vm.sh --name=my-tpu --zone=us-central2-b -- distill-jax train --config=configs/t5_small.py --workdir=/mnt/runs/small"
[ -n "$name" ] || die "no TPU VM name: pass --name=NAME or set TPU_NAME"
[ -n "$zone" ] || die "no zone: pass --zone=ZONE or set ZONE"
if [ "$dry_run" = 0 ]; then
  command -v gcloud >/dev/null || die "gcloud not found on PATH: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install) and run 'gcloud auth login'"
fi
if [ -z "$install" ] && [ "$dry_run" = 0 ]; then
  command -v git >/dev/null || die "git not found on PATH: it packages this checkout; or pass --install=SPEC"
fi

where=(--zone="$zone")
[ -n "$project" ] && where+=(--project="$project")
tpu=(gcloud compute tpus tpu-vm)

# Prints a command (shell-quoted, one line); runs it unless this is a dry run.
run() {
  printf '+'; printf ' %q' "$@"; printf '\n'
  [ "$dry_run" = 1 ] || "$@"
}

# --- Create or reuse the slice.
if [ -n "$type" ] && [ -z "$version" ]; then
  case $type in
    v4-*) version=tpu-ubuntu2204-base ;;
    v5litepod-*) version=v2-alpha-tpuv5-lite ;;
    v5p-*) version=v2-alpha-tpuv5 ;;
    v6e-*) version=v2-alpha-tpuv6e ;;
    *) die "no default TPU software version for accelerator type '$type': pass --version=VERSION" ;;
  esac
fi
create=("${tpu[@]}" create "$name" "${where[@]}" --accelerator-type="$type" --version="$version")
[ "$spot" = 1 ] && create+=(--spot)
if [ "$dry_run" = 1 ]; then
  if [ -n "$type" ]; then
    echo "# only if '$name' does not exist yet (gcloud compute tpus tpu-vm describe fails):"
    run "${create[@]}"
  else
    echo "# '$name' must exist (no --accelerator-type, so it is never created)"
  fi
elif "${tpu[@]}" describe "$name" "${where[@]}" --format='value(state)' >/dev/null 2>&1; then
  echo "launch/tpu_vm.sh: reusing the existing TPU VM '$name' in $zone" >&2
else
  [ -n "$type" ] || die "TPU VM '$name' does not exist in $zone; pass --accelerator-type=TYPE (or set ACCELERATOR_TYPE) to create it"
  run "${create[@]}"
fi
delete=("${tpu[@]}" delete "$name" "${where[@]}" --quiet)
if [ "$teardown" = 1 ] && [ "$dry_run" = 0 ]; then
  trap 'run "${delete[@]}"' EXIT
fi

# --- Install on every worker. The checkout is unpacked to ~/distill_jax and the command runs there,
# so relative paths (configs/t5_small.py) mean what they mean in this checkout.
remote_dir="~"
setup="python3 -m pip install --quiet 'jax[tpu]' $(printf '%q' "${install:-./distill_jax}")"
if [ -z "$install" ]; then
  archive=${TMPDIR:-/tmp}/distill_jax-$name.tar.gz
  run git -C "$(cd "$(dirname "$0")/.." && pwd)" archive --format=tar.gz --prefix=distill_jax/ -o "$archive" HEAD
  run "${tpu[@]}" scp "$archive" "$name":distill_jax.tar.gz "${where[@]}" --worker=all
  setup="rm -rf distill_jax && tar -xzf distill_jax.tar.gz && $setup" remote_dir="~/distill_jax"
fi
run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$setup"

# --- Run the command on every worker, streaming their output.
remote="cd $remote_dir && export PATH=\$HOME/.local/bin:\$PATH DISTILL_JAX_DISTRIBUTED=1 &&$(printf ' %q' "$@")"
ssh=("${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$remote")
if [ -n "$log" ] && [ "$dry_run" = 0 ]; then
  run "${ssh[@]}" 2>&1 | tee -a "$log"
else
  run "${ssh[@]}"
fi
if [ "$teardown" = 1 ] && [ "$dry_run" = 1 ]; then
  echo "# when the command ends, also on failure (--teardown):"
  run "${delete[@]}"
fi
