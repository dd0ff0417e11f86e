# Sourced by the scripts that run binaries out of a build directory.
#
# safe_exec_dir DIR: fails (with the reason) unless DIR and every directory above it is owned by
# root or by the current user and writable by no one else. Binaries from a place another user
# can write to (/tmp, /var/tmp, a group-writable share) could have been put there first by
# that user, and would then run as root.
safe_exec_dir() {
  local d
  d=$(realpath -m "$1")
  while :; do
    if [ -e "$d" ]; then
      local owner
      owner=$(stat -c '%u' "$d")
      if [ "$owner" != 0 ] && [ "$owner" != "$(id -u)" ]; then
        echo "refusing to run binaries from $1: $d belongs to uid $owner" >&2
        return 1
      fi
      if [ -n "$(find "$d" -maxdepth 0 -perm /022)" ]; then
        echo "refusing to run binaries from $1: $d is writable by other users" >&2
        return 1
      fi
    fi
    [ "$d" = / ] && return 0
    d=$(dirname "$d")
  done
}
