# The fd broker: `vfioctl watch` holds a domain over edu; uid 1000, named in the config, gets it through `vfioctl domain open` and programs edu to DMA between two offsets of the window, read back through its own mapping of the memfd, while DMA outside the window does not arrive; uid 1001, not named, is refused and nothing changes; watch killed and restarted rebuilds the domain and the client reconnects.
# vmtest: layout=default
# vmtest: timeout=150

edu=0000:00:05.0
tdev=0000:00:05.1
mkdir -p /etc/vfioctl-test
cfgfile=/etc/vfioctl-test/vfio.toml
cat >"$cfgfile" <<TOML
version = 1

[[device]]
name = "edu"
address = "$edu"
companions = ["$tdev"]

[[user]]
name = "user"
devices = ["edu"]

[[domain]]
name = "dma"
devices = ["edu"]

[[domain.window]]
name = "buf"
iova = "0x100000"
size = "2MiB"
TOML
# uid 1001: an account the config does not name.
grep -q '^other:' /etc/passwd || {
    echo "other:x:1001:1001:other:/tmp:/bin/sh" >>/etc/passwd
    echo "other:x:1001:" >>/etc/group
}
as_other() { su -s /bin/sh other -c "$*"; }

start_watch() {
    vfioctl -v watch -c "$cfgfile" --state-dir /tmp/state --run-dir /tmp/run --debounce-ms 100 \
        >>/tmp/watch.log 2>&1 &
    pid=$!
}
# until_held: wait up to 20 s for the published domain to have its window.
until_held() {
    _n=100
    while ! grep -q '"buf"' /tmp/run/domains.json 2>/dev/null && [ $_n -gt 0 ]; do
        usleep 200000; _n=$((_n - 1))
    done
    [ -S /tmp/run/broker.sock ] && grep -q '"buf"' /tmp/run/domains.json
}
vmlck() { awk '/^VmLck:/ {print $2}' "/proc/$pid/status"; }

start_watch
check domain-held until_held
g=$(group_of "$edu")
expect_eq socket-mode srw-rw-rw- "$(ls -l /tmp/run/broker.sock | cut -c1-10)"

dmesg -c >/dev/null
out=$(as_user vfioctl domain open --run-dir /tmp/run dma -- vfio-edu-client --inherited "$edu" 2>&1); rc=$?
echo "$out"
expect_eq user-open-exit 0 "$rc"
for s in inherited mmap-window device dma-copy dma-outside-blocked; do
    line=$(printf '%s\n' "$out" | grep "^ok $s\\b")
    [ -n "$line" ] && pass "client-$s" "${line#ok $s }" || fail "client-$s" "$(oneline "$(printf '%s\n' "$out" | grep -E '^error|vfioctl' | head -n 2)")"
done
fault=$(dmesg | grep -m1 -E 'DMAR: \[DMA Write')
[ -n "$fault" ] && pass outside-dma-faulted "$(echo "$fault" | cut -c1-120)" \
    || fail outside-dma-faulted "no DMAR write fault in dmesg: $(oneline "$(dmesg | tail -n 3)")"
grep -q 'handed domain "dma" (3 fds)' /tmp/watch.log && pass watch-logged-handover \
    || fail watch-logged-handover "$(oneline "$(grep broker /tmp/watch.log | tail -3)")"

# Who holds what: a client keeping the fds shows in status; once it exits it does not.
as_user vfioctl domain open --run-dir /tmp/run dma -- sleep 3 &
holder=$!
n=50
while ! vfioctl status --run-dir /tmp/run | grep -q 'dma: uid 1000 pid' && [ $n -gt 0 ]; do usleep 100000; n=$((n - 1)); done
line=$(vfioctl status --run-dir /tmp/run | grep 'dma: uid 1000 pid')
[ -n "$line" ] && pass status-shows-holder "$line" || fail status-shows-holder "$(oneline "$(vfioctl status --run-dir /tmp/run | tail -4)")"
vfioctl status --json --run-dir /tmp/run | grep -q '"broker"' && pass status-json-broker || fail status-json-broker ""
wait "$holder"
vfioctl status --run-dir /tmp/run | grep -q 'Broker: no client holds a domain' && pass status-holder-gone \
    || fail status-holder-gone "$(oneline "$(vfioctl status --run-dir /tmp/run | tail -4)")"

# Not named: refused, logged, nothing changes.
before=$(grep -v "\"pass\"" /tmp/run/domains.json; vmlck)
out=$(as_other vfioctl domain open --run-dir /tmp/run dma -- true 2>&1); rc=$?
expect_eq stranger-refused-exit 1 "$rc"
printf '%s\n' "$out" | grep -q 'refused: uid 1001 may not open domain "dma"' \
    && pass stranger-refused-reason "$(oneline "$out" | cut -c1-160)" || fail stranger-refused-reason "$(oneline "$out")"
grep -q 'uid 1001: refused domain "dma"' /tmp/watch.log && pass watch-logged-refusal \
    || fail watch-logged-refusal "$(oneline "$(grep broker /tmp/watch.log | tail -3)")"
expect_eq stranger-changed-nothing "$before" "$(grep -v "\"pass\"" /tmp/run/domains.json; vmlck)"
# A stranger cannot open the group either: watch holds it (and it is not theirs).
as_other "exec 3<>/dev/vfio/$g" 2>/dev/null && fail stranger-no-direct-open "opened" \
    || pass stranger-no-direct-open

# watch killed (no cleanup at all) and started again: the domain is rebuilt, the user reconnects.
kill -KILL "$pid"
wait "$pid" 2>/dev/null
out=$(as_user vfioctl domain open --run-dir /tmp/run dma -- true 2>&1); rc=$?
expect_eq no-watch-exit 4 "$rc"
printf '%s\n' "$out" | grep -q 'no vfioctl watch is serving' && pass no-watch-message \
    || fail no-watch-message "$(oneline "$out")"
rm -f /tmp/run/domains.json
start_watch
check domain-rebuilt until_held
out=$(as_user vfioctl domain open --run-dir /tmp/run dma -- vfio-edu-client --inherited "$edu" 2>&1); rc=$?
expect_eq reconnect-exit 0 "$rc"
printf '%s\n' "$out" | grep -q '^ok dma-copy' && pass reconnect-dma-copy \
    || fail reconnect-dma-copy "$(oneline "$out")"

# A client still holding the domain keeps the group busy: a restarted watch says so, and
# holds the group again once the client closed (client closes, watch restarts, client reconnects).
as_user vfioctl domain open --run-dir /tmp/run dma -- sleep 4 &
holder=$!
n=50
while ! vfioctl status --run-dir /tmp/run | grep -q 'dma: uid 1000 pid' && [ $n -gt 0 ]; do usleep 100000; n=$((n - 1)); done
kill -KILL "$pid"
wait "$pid" 2>/dev/null
rm -f /tmp/run/domains.json
start_watch
n=50
while ! grep -q 'given this domain by an earlier watch' /tmp/watch.log && [ $n -gt 0 ]; do usleep 100000; n=$((n - 1)); done
line=$(grep -m1 'given this domain by an earlier watch' /tmp/watch.log)
[ -n "$line" ] && pass busy-group-explained "$(echo "$line" | cut -c1-200)" || fail busy-group-explained "$(oneline "$(tail -3 /tmp/watch.log)")"
wait "$holder"
kill -HUP "$pid"
check domain-held-after-client-closed until_held
out=$(as_user vfioctl domain open --run-dir /tmp/run dma -- vfio-edu-client --inherited "$edu" 2>&1); rc=$?
expect_eq reconnect-after-client-closed 0 "$rc"

# Hand-over latency (figures for docs/broker.md): the broker, then, once watch let go of the
# group, the same user opening and attaching it directly.
out=$(as_user vfioctl-bench-domain open dma --run-dir /tmp/run --rounds 200 2>&1) \
    && pass bench-broker "$out" || fail bench-broker "$(oneline "$out")"

kill -TERM "$pid"
wait "$pid"
expect_eq watch-exit 0 "$?"
chown 1000:1000 "/dev/vfio/$g"
out=$(as_user vfioctl-bench-domain open dma --direct "$g" --rounds 200 2>&1) \
    && pass bench-direct "$out" || fail bench-direct "$(oneline "$out")"
[ -e /tmp/run/broker.sock ] && fail socket-removed-on-exit "still there" || pass socket-removed-on-exit
sed 's/^/vmtest: watch: /' /tmp/watch.log | grep -E 'broker|error|warn' | tail -20
