#!/bin/busybox sh
# PID 1 of the rig's L1 guest. Mounts the host's / (9p, read-only) under a
# tmpfs overlay, chroots into it and runs the command the host wrote to
# $run/cmd.sh. Output and status travel on virtio-serial ports, not the
# console, so they come back byte for byte.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug

for a in $(cat /proc/cmdline); do
  case "$a" in pinion.run=*) run=${a#pinion.run=} ;; pinion.rw=*) rw=${a#pinion.rw=} ;; esac
done

port() {
  for p in /sys/class/virtio-ports/*; do
    [ "$(cat "$p/name" 2>/dev/null)" = "$1" ] && { echo "/dev/${p##*/}"; return; }
  done
}
ctl=$(port pinion.ctl); out=$(port pinion.out); err=$(port pinion.err); hb=$(port pinion.hb)
die() { echo "l1: $*" > "${ctl:-/dev/console}"; reboot -f; }
[ -n "$ctl" ] && [ -n "$out" ] && [ -n "$err" ] && [ -n "$hb" ] || die "virtio-serial ports missing"

# Heartbeat for the host's stall watchdog: a line a second with L1's uptime
# (clocksource time) and busy/idle ticks from /proc/stat (tick counts), so the
# host can tell a silent L1 from an idle one. The port opens once (virtio
# ports allow one opener); the same fd carries the host's "dump" requests,
# answered without any timer: sysrq task dumps to the console log and a
# summary back on the port.
exec 3<>"$hb"
heartbeat() {
  while :; do
    read -r up _ < /proc/uptime
    read -r _ u n s i w q sq _ < /proc/stat
    echo "hb $up $((u + n + s + q + sq)) $((i + w))"
    sleep 1
  done >&3
}
dump() {
  {
    echo "dump uptime $(cat /proc/uptime) loadavg $(cat /proc/loadavg)"
    echo "dump clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null)"
    # Every thread that is running or blocked uninterruptibly, and every
    # thread of a user process (not kthreadd's children): where each waits.
    for p in /proc/[0-9]*/task/[0-9]*; do
      read -r pid comm state ppid _ < "$p/stat" 2>/dev/null || continue
      [ "$ppid" != 2 ] && [ "$pid" != 2 ] || case "$state" in R|D) ;; *) continue ;; esac
      echo "dump task $pid $comm $state wchan=$(cat "$p/wchan" 2>/dev/null)"
    done
    grep -E '^ *(LOC|RES|CAL|TLB|[0-9]+):' /proc/interrupts | sed 's/^/dump irq /'
    echo "dump end"
  } >&3
  echo w > /proc/sysrq-trigger
  echo t > /proc/sysrq-trigger
}
heartbeat &
hbpid=$!
renice -n -20 -p $hbpid >/dev/null 2>&1
while read -r req <&3; do [ "$req" = dump ] && dump; done &

mkdir -p /host /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose host /host || die "9p mount of the host's / failed"
mount -t tmpfs -o size=75% rw /rw
mkdir -p /rw/upper /rw/work
# The overlay makes the whole host tree writable in L1 (writes stay in L1's
# RAM), so a checkout anywhere, /tmp included, works at the same path.
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot || die "overlay over the 9p root failed"
mkdir -p /dev/shm
for d in dev proc sys; do mount --rbind /$d /newroot/$d; done
for d in run dev/shm; do mount -t tmpfs tmpfs /newroot/$d; done
chmod 1777 /newroot/dev/shm
cp "/host$run/cmd.sh" /newroot/run/pinion-cmd.sh || die "cannot read $run/cmd.sh over 9p"
echo $hbpid > /newroot/run/pinion-heartbeat.pid # the rig's own watchdog test freezes it
if [ -n "$rw" ]; then
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 rw /newroot$rw || die "9p mount of $rw failed"
fi
ip link set lo up 2>/dev/null

echo booted > "$ctl"
chroot /newroot /bin/sh /run/pinion-cmd.sh > "$out" 2> "$err" < /dev/null 3>&-
echo "exit $?" > "$ctl"
sync
reboot -f
