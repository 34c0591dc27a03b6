#!/usr/bin/env bash
# Tries the README's quick start as a newcomer would: in a clean Debian 12 root filesystem made with
# debootstrap, with only git added, clone this repository and run the README's two commands as written,
# as root, through chroot.
#
#   scripts/check-fresh-debian.sh [--with-shared] [--skip-tests] [--tests 'PYTEST ARGS'] [WORKDIR]
#
#   --with-shared   put a copy of ../shared/sources/ beside the clone (default: none, so the sources come
#                   from Debian's source archive, as for a newcomer)
#   --skip-tests    run command 1 only
#   --tests ARGS    run command 2 as `bash .ci/run ARGS` (a subset of the tests) instead of `bash .ci/run`
#   --reuse         keep the root of an earlier run (its clone, its command 1) and run command 2 only
#   WORKDIR         where the root filesystem and logs go (default /var/tmp/sitedist-fresh-debian);
#                   debootstrap's package cache is kept there, so a second run is faster
#
# Needs root, debootstrap and the network to the Debian mirror that this machine's apt uses. Clones the
# committed HEAD of this repository (uncommitted changes are not tried). Prints the logs' paths and exits
# non-zero when a command fails.
set -euo pipefail
with_shared=0 skip_tests=0 tests="" reuse=0
while (($#)); do
  case $1 in
    --with-shared) with_shared=1 ;;
    --skip-tests) skip_tests=1 ;;
    --reuse) reuse=1 ;;
    --tests) tests=${2:?--tests needs an argument}; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
  shift
done
((EUID == 0)) || { echo "run as root (debootstrap and chroot need it)" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/var/tmp/sitedist-fresh-debian}
root=$work/rootfs
mkdir -p "$work/cache"
read -r mirror codename < <(/usr/bin/python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import fetch_sources
print(*fetch_sources.debian_mirror())' "$repo/scripts")
[[ $codename == bookworm ]] || codename=bookworm

mounts=()
bind() {  # mount, remembered for the clean-up
  mkdir -p "$root$2" && mount "${@:3}" "$1" "$root$2" && mounts+=("$root$2")
}
cleanup() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
  mounts=()
}
trap cleanup EXIT
if grep -qE " $root[/ ]" /proc/mounts; then  # a killed earlier run: never delete through its mounts
  echo "$root still has mounts (an earlier run was killed?): umount them first:" >&2
  grep -E " $root[/ ]" /proc/mounts | cut -d' ' -f2 >&2
  exit 1
fi
if ((!reuse)); then
  rm -rf --one-file-system "$root"
  echo "== debootstrap $codename from $mirror into $root"
  debootstrap --cache-dir="$work/cache" "$codename" "$root" "$mirror" > "$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; exit 1; }
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  # As Debian's installer writes it: the host name resolves (Slurm's daemons look their node up).
  printf '127.0.1.1\t%s\n' "$(cat "$root/etc/hostname")" >> "$root/etc/hosts"
fi
bind "$root" "" --bind  # / a mount point, as on a booted machine (unshare --mount needs it)
bind proc /proc -t proc
bind /sys /sys --rbind  # with /sys/fs/cgroup, as on a booted machine (slurmd needs it)
bind /dev /dev --bind
bind /dev/pts /dev/pts --bind
bind "$repo" /mnt/src --bind -o ro
if [[ -f $repo/.git ]]; then  # a git worktree: its .git names a directory outside it
  gitdir=$(git -C "$repo" rev-parse --path-format=absolute --git-common-dir)
  bind "$gitdir" "$gitdir" --bind -o ro
fi

in_root() {  # a login shell of a fresh machine: root's usual environment, nothing of ours
  chroot "$root" /usr/bin/env -i HOME=/root USER=root LOGNAME=root TERM=dumb LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

if ((!reuse)); then
echo "== installing git, cloning"
in_root bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq git >/dev/null' \
  > "$work/git.log" 2>&1 || { tail -20 "$work/git.log"; exit 1; }
# This machine's network, not what is being tried: local CAs (e.g. a TLS-inspecting proxy's), without
# which PyPI cannot be reached from the root, are trusted there as here.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  in_root bash -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ca-certificates >/dev/null &&
                   update-ca-certificates' >> "$work/git.log" 2>&1 || { tail -20 "$work/git.log"; exit 1; }
fi
in_root git -c safe.directory='*' clone -q /mnt/src /root/sitedist
in_root git -C /root/sitedist log --oneline -1
if ((with_shared)); then
  mkdir -p "$root/root/shared" && cp -r "$repo/../shared/sources" "$root/root/shared/"
fi

fi

status=0
start=$(date +%s)
((reuse)) || {
echo "== command 1: bash .ci/setup.sh && .venv/bin/sitedist sync site_configs/example/site.yml"
in_root bash -c 'cd /root/sitedist && bash .ci/setup.sh && .venv/bin/sitedist sync site_configs/example/site.yml' \
  > "$work/command1.log" 2>&1 || status=$?
echo "   exit $status after $(( $(date +%s) - start )) s; log: $work/command1.log"
tail -5 "$work/command1.log"
}
if ((status == 0 && !skip_tests)); then
  start=$(date +%s)
  echo "== command 2: bash .ci/run $tests"
  command2="CI=true bash .ci/run $tests"
  if ss -ltn 2>/dev/null | grep -qE ':(6817|6818)\b'; then
    # The root shares this machine's network, and a Slurm running here holds the ports that .ci/run's
    # .ci/slurm-up.sh needs (a network namespace does not help: slurmd then finds no address to use).
    # Then command 2 runs .ci/run's steps without the Slurm cluster, and the Slurm tests skip.
    command2="bash .ci/setup.sh && .venv/bin/python -m pytest -n 2 -rs ${tests:-tests}"
    echo "   a Slurm listens on this machine: running '$command2' instead (the Slurm tests skip)"
  fi
  in_root bash -c "cd /root/sitedist && $command2" > "$work/command2.log" 2>&1 || status=$?
  echo "   exit $status after $(( $(date +%s) - start )) s; log: $work/command2.log"
  tail -5 "$work/command2.log"
fi
exit "$status"
