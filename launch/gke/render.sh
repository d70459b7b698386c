#!/usr/bin/env bash
# Render launch/gke/jobset.yaml for one distill-jax command on a GKE TPU slice or GPU node pool, and
# optionally submit it.
#
# Usage: launch/gke/render.sh --name=NAME --image=IMAGE --workers=N ACCELERATOR [options] -- distill-jax SUBCOMMAND [flags...]
#   --name=NAME           JobSet name (DNS label: lowercase letters, digits, '-').
#   --image=IMAGE         container image with distill-jax installed (and jax[tpu] or jax[cuda12]).
#   --workers=N           pods = JAX processes: the slice's hosts (TPU) or the GPU nodes.
#   ACCELERATOR, one of:
#     --tpu=TYPE --topology=AxB[xC] [--chips=4]   e.g. --tpu=tpu-v5-lite-podslice --topology=4x4 (4 hosts x 4 chips)
#     --gpu=TYPE [--gpus=8]                       e.g. --gpu=nvidia-h100-80gb
#   --pvc=CLAIM [--mount=/shared]   a ReadWriteMany volume claim mounted in every pod, for data and --workdir;
#                         not needed with --workdir=gs://BUCKET/... and gs:// data (workload identity gives
#                         the pods their credentials through ADC; no key in the YAML).
#   --port=8482           jax.distributed coordinator port.   --max-restarts=3  JobSet restarts on failure.
#   --out=FILE            write the YAML to FILE instead of stdout.
#   --apply               submit with `kubectl apply -f -` (needs kubectl and a cluster context).
#   --dry-run             with --apply: print the kubectl command instead of running it (or DRY_RUN=1).
# Each pod runs the command with --num_processes=N --process_id=$JOB_COMPLETION_INDEX appended and
# JAX_COORDINATOR_ADDRESS pointing at pod 0, so the subcommand must take the distributed flags
# (train, eval, import-hf, export-hf). Follow the logs with:
#   kubectl logs -f -l jobset.sigs.k8s.io/jobset-name=NAME --prefix --max-log-requests=N
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true  # bash >= 5.2 would expand '&' in ${x//pattern/replacement}.

die() { echo "launch/gke/render.sh: $*" >&2; exit 2; }
name="" image="" workers="" tpu="" topology="" chips=4 gpu="" gpus=8 pvc="" mount=/shared port=8482 restarts=3
out="" apply=0 dry_run=${DRY_RUN:-0}
while [ $# -gt 0 ]; do
  case $1 in
    --name=*) name=${1#*=} ;;
    --image=*) image=${1#*=} ;;
    --workers=*) workers=${1#*=} ;;
    --tpu=*) tpu=${1#*=} ;;
    --topology=*) topology=${1#*=} ;;
    --chips=*) chips=${1#*=} ;;
    --gpu=*) gpu=${1#*=} ;;
    --gpus=*) gpus=${1#*=} ;;
    --pvc=*) pvc=${1#*=} ;;
    --mount=*) mount=${1#*=} ;;
    --port=*) port=${1#*=} ;;
    --max-restarts=*) restarts=${1#*=} ;;
    --out=*) out=${1#*=} ;;
    --apply) apply=1 ;;
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,/^set -e/{/^#/p}' "$0"; exit 2 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (put the distill-jax command after --; --help lists the options)" ;;
  esac
  shift
done
[ $# -gt 0 ] || die "no command given; e.g. ... -- distill-jax train --config=configs/t5_small.py --workdir=/shared/runs/small"
[ -n "$name" ] || die "no JobSet name: pass --name=NAME"
[[ $name =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] || die "--name=$name is not a DNS label (lowercase letters, digits, '-')"
[ -n "$image" ] || die "no container image: pass --image=IMAGE (one with distill-jax installed)"
[[ $workers =~ ^[1-9][0-9]*$ ]] || die "pass --workers=N (pods = JAX processes), got '${workers}'"
if [ -n "$tpu" ] && [ -z "$gpu" ]; then
  accelerator=tpu
  [ -n "$topology" ] || die "--tpu needs --topology=AxB[xC] (the slice shape, e.g. 4x4)"
elif [ -n "$gpu" ] && [ -z "$tpu" ]; then
  accelerator=gpu
else
  die "pass exactly one of --tpu=TYPE (with --topology) or --gpu=TYPE"
fi
if [ "$apply" = 1 ] && [ "$dry_run" = 0 ]; then
  command -v kubectl >/dev/null || die "kubectl not found on PATH: install it (gcloud components install kubectl) and run 'gcloud container clusters get-credentials CLUSTER'"
fi

# The pod's command: the user's, quoted for bash -c, plus this pod's place in the job; as a JSON string.
command="$(printf '%q ' "$@")--num_processes=$workers --process_id=\$JOB_COMPLETION_INDEX"
command=${command//\\/\\\\}
command="\"${command//\"/\\\"}\""

yaml=""
while IFS= read -r line; do
  case $line in
    *'#@tpu') [ "$accelerator" = tpu ] || continue ;;
    *'#@gpu') [ "$accelerator" = gpu ] || continue ;;
    *'#@pvc') [ -n "$pvc" ] || continue ;;
  esac
  line=${line%  \#@*}
  line=${line//@NAME@/$name}
  line=${line//@IMAGE@/$image}
  line=${line//@NUM_WORKERS@/$workers}
  line=${line//@MAX_RESTARTS@/$restarts}
  line=${line//@PORT@/$port}
  line=${line//@TPU_ACCELERATOR@/$tpu}
  line=${line//@TPU_TOPOLOGY@/\"$topology\"}
  line=${line//@CHIPS_PER_WORKER@/$chips}
  line=${line//@GPU_TYPE@/$gpu}
  line=${line//@GPUS_PER_WORKER@/$gpus}
  line=${line//@PVC@/$pvc}
  line=${line//@MOUNT@/$mount}
  line=${line//@COMMAND@/$command}
  yaml+="$line"$'\n'
done < <(sed '/^#/d' "$(dirname "$0")/jobset.yaml")

if [ -n "$out" ]; then printf '%s' "$yaml" > "$out"; elif [ "$apply" = 0 ] || [ "$dry_run" = 1 ]; then printf '%s' "$yaml"; fi
if [ "$apply" = 1 ]; then
  echo "+ kubectl apply -f -" >&2
  [ "$dry_run" = 1 ] || printf '%s' "$yaml" | kubectl apply -f -
  echo "follow the logs: kubectl logs -f -l jobset.sigs.k8s.io/jobset-name=$name --prefix --max-log-requests=$workers" >&2
fi
