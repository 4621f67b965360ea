# Sourced by scripts/container-bases.sh and scripts/test-containers.sh: run a step that downloads
# (a Debian bootstrap, an image build that runs apt-get or pip) again when it failed the way a
# passing network fault makes it fail (a name that did not resolve, a connection reset or timed
# out), up to FDL_NETWORK_TRIES times in all (default 3), waiting 15 s, then 30 s. Any other failure
# is returned at once: a broken Dockerfile is not built three times.
# Usage: with_network_retries LOG COMMAND...   (COMMAND's output goes to LOG, the last try's kept)

NETWORK_FAULT='Temporary failure (in name )?resolving|Could not resolve|Name or service not known'
NETWORK_FAULT+='|Temporary failure in name resolution|Failed to fetch|Connection (timed out|reset|refused)'
NETWORK_FAULT+='|Network is unreachable|ReadTimeoutError|Max retries exceeded|Unable to connect to'

with_network_retries() {
  local log=$1 tries=${FDL_NETWORK_TRIES:-3} try=1
  shift
  until "$@" >"$log" 2>&1; do
    local fault
    fault=$(grep -m1 -E "$NETWORK_FAULT" "$log") || return 1
    [ "$try" -lt "$tries" ] || { echo "network fault on try $try of $tries: $fault"; return 1; }
    echo "network fault on try $try of $tries, again in $((15 * try)) s: $fault"
    sleep "${FDL_NETWORK_RETRY_WAIT:-$((15 * try))}"
    try=$((try + 1))
  done
}
