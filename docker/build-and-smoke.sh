#!/usr/bin/env bash
# Build docker/Dockerfile for real and smoke-test the image, without a registry or a container
# runtime: where rayproject/ray cannot be pulled and containers cannot be run (no internet
# but the package registries; crun refused), but Debian's podman, buildah and debootstrap are
# installed and this runs as root.
#
#   bash docker/build-and-smoke.sh          # from anywhere; the build context is the repo root
#
# 1. A stand-in for rayproject/ray:2.60.0-py311-cpu: `debootstrap --variant=minbase bookworm`
#    imported as localhost/qsweep-rootfs:bookworm, then docker/ray-standin.Containerfile on
#    it (Python 3.11 env at /home/ray/anaconda3 with Ray 2.60.0, user ray 1000:100, sudo).
# 2. docker/Dockerfile on that base, with podman's chroot isolation and the docker format
#    (the OCI format drops HEALTHCHECK), context filtered by docker/Dockerfile.dockerignore.
# 3. The image's filesystem (a buildah working container, mounted) is entered with chroot as
#    the image's USER, with its Env and WorkingDir, /proc and /dev bound in: the image's
#    config and contents are checked, then `qsweep validate examples/quick.yaml` and one trial
#    of `python -m trainers.run` run there. Mounts and the container go on exit, however it
#    ends.
#
# Idempotent: the rootfs image is made once (QSWEEP_SMOKE_REBUILD_BASE=1 to redo it), the
# stand-in and the image reuse podman's layer cache. The images stay (podman image ls); remove
# them with `podman rmi localhost/qsweep:cpu-smoke localhost/qsweep-ray-standin:2.60.0-py311-cpu
# localhost/qsweep-rootfs:bookworm`.
#
# pip inside the builds: the host's CA bundle is mounted with a pip.conf naming it (an
# intercepting proxy's CA then works too), and where the host's pip finds a local CPU torch
# wheel (a find-links directory of `pip config list`, or QSWEEP_TORCH_WHEELS=DIR), it is
# served to the build as PIP_EXTRA_INDEX_URL in place of PyTorch's CPU index. Nothing of this
# stays in the image: bind mounts and build args only.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=${QSWEEP_SMOKE_WORK:-/var/tmp/qsweep-image-smoke}
suite=${QSWEEP_SMOKE_SUITE:-bookworm}
rootfs_image=localhost/qsweep-rootfs:$suite
base_image=localhost/qsweep-ray-standin:2.60.0-py311-cpu
image=${QSWEEP_SMOKE_IMAGE:-localhost/qsweep:cpu-smoke}
nice_=(nice -n 10)

say() { printf '== %s\n' "$*"; }
die() { printf 'build-and-smoke: %s\n' "$*" >&2; exit 1; }
seconds() { echo $(( $(date +%s) - $1 )); }

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, chroot and mounts need it)"
for tool in podman buildah debootstrap chroot; do
  command -v "$tool" > /dev/null || die "$tool is missing: apt-get install -y podman buildah debootstrap"
done
mkdir -p "$work"

# ---------------------------------------------------------------------------------------------
# pip inside the builds

ca=""
for candidate in "${PIP_CERT:-}" /etc/ssl/certs/ca-certificates.crt; do
  if [ -n "$candidate" ] && [ -f "$candidate" ]; then ca=$candidate; break; fi
done
mounts=()
if [ -n "$ca" ]; then
  printf '[global]\ncert = /run/qsweep-build/ca.crt\n' > "$work/pip.conf"
  mounts+=(-v "$ca:/run/qsweep-build/ca.crt:ro" -v "$work/pip.conf:/etc/pip.conf:ro")
fi

torch_wheel=""
wheel_dirs=()
if [ -n "${QSWEEP_TORCH_WHEELS:-}" ]; then
  wheel_dirs=("$QSWEEP_TORCH_WHEELS")
elif command -v python3 > /dev/null; then
  # find-links values of the host's pip (config files and PIP_FIND_LINKS), local dirs only
  mapfile -t wheel_dirs < <(python3 -m pip config list 2>/dev/null \
    | sed -n "s/^[^=]*find-links='\(.*\)'$/\1/p" | tr ' ' '\n' | sed 's#^file://##' | sort -u)
fi
for dir in "${wheel_dirs[@]}"; do
  [ -d "$dir" ] || continue
  found=$(find "$dir" -maxdepth 1 -name 'torch-*+cpu-cp311-cp311-manylinux*_x86_64.whl' | sort -V | tail -1)
  if [ -n "$found" ]; then torch_wheel=$found; break; fi
done
build_args=()
if [ -n "$torch_wheel" ]; then
  # A one-project PEP 503 index: pip reads file:// index directories' index.html.
  rm -rf "$work/torch-index" && mkdir -p "$work/torch-index/torch"
  name=$(basename "$torch_wheel")
  printf '<!DOCTYPE html><html><body><a href="file:///run/qsweep-build/wheels/%s">%s</a></body></html>\n' \
    "${name//+/%2B}" "$name" > "$work/torch-index/torch/index.html"
  mounts+=(-v "$(dirname "$torch_wheel"):/run/qsweep-build/wheels:ro"
           -v "$work/torch-index:/run/qsweep-build/torch-index:ro")
  build_args+=(--build-arg PIP_EXTRA_INDEX_URL=file:///run/qsweep-build/torch-index)
  say "CPU torch from the local wheel $torch_wheel"
else
  say "CPU torch from docker/Dockerfile's default index (PIP_EXTRA_INDEX_URL)"
fi

# ---------------------------------------------------------------------------------------------
# 1. the stand-in base

t0=$(date +%s)
if [ "${QSWEEP_SMOKE_REBUILD_BASE:-0}" = 1 ] || ! podman image exists "$rootfs_image"; then
  # the Debian mirror apt uses here (deb822 or one-line sources), else deb.debian.org
  mirror=$( (grep -h -E -o '(URIs:|^deb)[[:space:]]+https?://[^[:space:]]*/debian/?([[:space:]]|$)' \
      /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null || true) \
    | awk '{print $2}' | head -1)
  mirror=${mirror:-http://deb.debian.org/debian}
  say "debootstrap --variant=minbase $suite from $mirror"
  rm -rf "$work/rootfs"
  "${nice_[@]}" debootstrap --variant=minbase "$suite" "$work/rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; die "debootstrap failed (log: $work/debootstrap.log)"; }
  tar -C "$work/rootfs" -c . | podman import - "$rootfs_image" > /dev/null
  rm -rf "$work/rootfs"
fi
say "rootfs image ready in $(seconds "$t0")s"

t0=$(date +%s)
mkdir -p "$work/empty-context"  # the Containerfile copies nothing in
"${nice_[@]}" podman build --isolation chroot --format docker --pull=never "${mounts[@]}" \
  --build-arg ROOTFS_IMAGE="$rootfs_image" -f "$repo/docker/ray-standin.Containerfile" \
  -t "$base_image" "$work/empty-context" > "$work/base-build.log" 2>&1 \
  || { tail -30 "$work/base-build.log"; die "the stand-in base did not build (log: $work/base-build.log)"; }
say "base image $base_image built in $(seconds "$t0")s"

# ---------------------------------------------------------------------------------------------
# 2. the image

t0=$(date +%s)
previous=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
"${nice_[@]}" podman build --isolation chroot --format docker --pull=never "${mounts[@]}" \
  --build-arg BASE_IMAGE="$base_image" "${build_args[@]}" \
  --ignorefile "$repo/docker/Dockerfile.dockerignore" -f "$repo/docker/Dockerfile" \
  -t "$image" "$repo" > "$work/image-build.log" 2>&1 \
  || { tail -40 "$work/image-build.log"; die "docker/Dockerfile did not build (log: $work/image-build.log)"; }
say "image $image built in $(seconds "$t0")s"
# the image this tag named before, now untagged: its layers would pile up run after run
current=$(podman image inspect --format '{{.Id}}' "$image")
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
  podman rmi "$previous" > /dev/null 2>&1 || true
fi
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
  | grep -E "^($image|$base_image|$rootfs_image) " | sed 's/^/image size: /'

# ---------------------------------------------------------------------------------------------
# 3. smoke test inside the image's filesystem

ctr="" mnt=""
cleanup() {
  if [ -n "$mnt" ]; then
    for sub in dev proc; do
      if mountpoint -q "$mnt/$sub"; then umount -R "$mnt/$sub" 2>/dev/null || umount -R -l "$mnt/$sub"; fi
    done
  fi
  if [ -n "$ctr" ]; then
    buildah umount "$ctr" > /dev/null 2>&1 || true
    buildah rm "$ctr" > /dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ctr=$(buildah from --pull=never --name "qsweep-smoke-$$" "$image")
mnt=$(buildah mount "$ctr")
mount -t proc proc "$mnt/proc"
mount --rbind /dev "$mnt/dev"
mount --make-rslave "$mnt/dev"

user=$(podman image inspect --format '{{.Config.User}}' "$image")
workdir=$(podman image inspect --format '{{.Config.WorkingDir}}' "$image")
mapfile -t image_env < <(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$image" | sed '/^$/d')
healthcheck=$(podman image inspect --format '{{json .Config.Healthcheck}}' "$image")

# in_image DIR COMMAND...: run as the image's USER with only its Env, in DIR
in_image() {
  local dir=$1; shift
  # shellcheck disable=SC2016  # $1 and $@ are the inner shell's
  chroot --userspec="$user" "$mnt" /usr/bin/env -i "${image_env[@]}" \
    /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$dir" "$@"
}

say "smoke: image config"
echo "user=$user workdir=$workdir"
printf 'env %s\n' "${image_env[@]}"
echo "healthcheck=$healthcheck"
case "$user" in 0|0:*|root|root:*|"") die "the image runs as root ($user)";; esac
printf '%s\n' "${image_env[@]}" | grep -qx 'RAY_AUTH_MODE=token' || die "RAY_AUTH_MODE=token is not set"
case "$healthcheck" in *52365/api/healthz*) ;; *) die "no HEALTHCHECK in the image config";; esac

say "smoke: contents"
in_image "$workdir" id
in_image "$workdir" ls -A
for left_out in .venv .git tests results docker qsweep.egg-info build; do
  [ ! -e "$mnt$workdir/$left_out" ] || die "$workdir/$left_out is in the image (allow-list or cleanup broken)"
done
if grep -q '^ray ALL=NOPASSWD' "$mnt/etc/sudoers" 2>/dev/null; then die "ray still has password-less sudo"; fi
if in_image "$workdir" id -nG | grep -qw sudo; then die "ray is still in group sudo"; fi
[ "$(stat -c %u:%g "$mnt/results")" = 1000:100 ] || die "/results is not owned by 1000:100"
in_image "$workdir" python -c '
import sys, ray, torch
print("python", sys.version.split()[0], "ray", ray.__version__, "torch", torch.__version__, "cuda", torch.version.cuda)
assert torch.version.cuda is None, "a CUDA build of torch in the CPU image"
'
if in_image "$workdir" python -m pip list --format=freeze 2>/dev/null | grep -i -E '^(nvidia-|triton=)'; then
  die "CUDA packages in the CPU image"
fi

say "smoke: qsweep validate examples/quick.yaml"
t0=$(date +%s)
in_image "$workdir" qsweep validate examples/quick.yaml
say "validate took $(seconds "$t0")s"

say "smoke: python -m trainers.run (one trial)"
t0=$(date +%s)
# from the user's home, so the installed package runs, not the source copy in $workdir
in_image /home/ray python -m trainers.run --estimator ste --bits 4 --quantizer int \
  --model mlp --dataset digits --steps 60 --num-evals 3 --json
say "trial took $(seconds "$t0")s"

say "SMOKE OK: $image"
