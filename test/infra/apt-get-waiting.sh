# Sourced (bash) by setup-system.sh and envtest/assets.sh: `apt_get_waiting ARGS...` runs apt-get,
# but when another apt/dpkg process holds the package locks it waits for them (saying who holds
# them) instead of failing at once with "Could not get lock". Gives up after
# TRICKLE_RELAY_APT_LOCK_TIMEOUT seconds (default 900). Messages start with $APT_LOG_PREFIX.

APT_LOCK_FILES=(/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock)

# "PID (command) on FILE" for a process holding one of apt's locks, or nothing. Reads /proc/locks
# ("1: POSIX  ADVISORY  WRITE PID MAJ:MIN:INODE 0 EOF", major/minor in hex) rather than trying to
# take a lock, so the check itself never makes another apt-get fail.
apt_lock_holder() {
  local file major minor id pid
  for file in "${APT_LOCK_FILES[@]}"; do
    [ -e "$file" ] || continue
    read -r major minor < <(stat -c '%Hd %Ld' "$file")
    id=$(printf '%02x:%02x:%s' "$major" "$minor" "$(stat -c %i "$file")")
    pid=$(awk -v id="$id" '$2 != "->" && $6 == id { print $5; exit }' /proc/locks 2>/dev/null)
    if [ -n "$pid" ]; then
      echo "$pid ($(cat "/proc/$pid/comm" 2>/dev/null || echo '?')) on $file"
      return 0
    fi
  done
  return 0
}

apt_get_waiting() {
  local prefix="${APT_LOG_PREFIX:-apt}" timeout_s="${TRICKLE_RELAY_APT_LOCK_TIMEOUT:-900}"
  local deadline=$((SECONDS + timeout_s)) holder said=-1 err rc
  err=$(mktemp)
  while :; do
    while holder=$(apt_lock_holder) && [ -n "$holder" ]; do
      if [ $SECONDS -ge $deadline ]; then
        echo "$prefix: error: another apt/dpkg process still holds the package lock after ${timeout_s} s: process $holder." >&2
        echo "$prefix:   let it finish and rerun, or wait longer with TRICKLE_RELAY_APT_LOCK_TIMEOUT=SECONDS" >&2
        rm -f "$err"
        return 1
      fi
      if [ $said -lt 0 ] || [ $((SECONDS - said)) -ge 30 ]; then
        echo "$prefix: waiting for another apt/dpkg process to finish: process $holder ($((deadline - SECONDS)) s left)" >&2
        said=$SECONDS
      fi
      sleep 2
    done
    # DPkg::Lock::Timeout covers the dpkg lock taken by a process that starts right now; apt-get
    # update's lists lock ignores it, hence the retry below.
    rc=0
    apt-get -o "DPkg::Lock::Timeout=$((deadline - SECONDS > 1 ? deadline - SECONDS : 1))" "$@" 2>"$err" || rc=$?
    if [ $rc -ne 0 ] && [ $SECONDS -lt $deadline ] && grep -qE 'Could not get lock|Unable to (acquire|lock)' "$err"; then
      sleep 2
      continue
    fi
    cat "$err" >&2
    rm -f "$err"
    return $rc
  done
}
