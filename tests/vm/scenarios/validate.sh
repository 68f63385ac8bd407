# CI validation in the vIOMMU VM: `vfioctl validate` accepts every file in examples/ and rejects a broken config with located diagnostics; `vfioctl status --json` of the live guest equals `vfioctl status --json --host` of a `vfioctl snapshot` taken there.
# vmtest: layout=default

n=0
for f in /vmtest/examples/*.toml; do
    [ -e "$f" ] || continue
    n=$((n + 1))
    check "validate-$(basename "$f" .toml)" vfioctl validate "$f"
done
[ "$n" -gt 0 ] && pass examples-found "$n files" || fail examples-found "no examples/*.toml in the image"

cat >/tmp/broken.toml <<'TOML'
version = 1

[[device]]
name = "nic"
address = "0000:zz:00.0"

[[device]]
name = "nic"
adress = "0000:01:00.0"
TOML
# every mistake is reported at its place (file:line:column), and the exit code says `failed`
out=$(vfioctl validate /tmp/broken.toml 2>&1); rc=$?
expect_eq broken-exit-code 1 "$rc"
for at in "broken.toml:5:11" "broken.toml:8:8" "broken.toml:9:1"; do
    case "$out" in
        *"$at"*) pass "broken-located-$at" ;;
        *) fail "broken-located-$at" "not in: $(oneline "$out" | cut -c1-300)" ;;
    esac
done
vfioctl validate --json /tmp/broken.toml >/tmp/broken.json 2>&1
lines=$(grep -Eo '"line": ?[0-9]+' /tmp/broken.json | grep -Eo '[0-9]+' | sort -n | uniq | tr '\n' ' ')
for l in 5 8 9; do
    case " $lines" in
        *" $l "*) pass "broken-json-line-$l" ;;
        *) fail "broken-json-line-$l" "lines in the JSON: $lines" ;;
    esac
done

# live vs snapshot, with a group on vfio-pci so nodes and overrides are part of it
bind_vfio 0000:00:05.0 && bind_vfio 0000:00:05.1
check snapshot-taken vfioctl snapshot -o /tmp/snap.json
check status-live sh -c 'vfioctl status --json >/tmp/live.json'
check status-from-snapshot sh -c 'vfioctl status --json --host /tmp/snap.json >/tmp/from-snap.json'
if cmp -s /tmp/live.json /tmp/from-snap.json; then
    pass live-equals-snapshot "$(wc -c </tmp/live.json) bytes"
else
    fail live-equals-snapshot "$(diff /tmp/live.json /tmp/from-snap.json | head -n 8 | tr '\n' ' ')"
fi
check status-text-from-snapshot sh -c 'vfioctl status --host /tmp/snap.json >/tmp/text-snap.txt && vfioctl status >/tmp/text-live.txt && cmp /tmp/text-live.txt /tmp/text-snap.txt'
