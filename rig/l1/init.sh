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
ctl=$(port pinion.ctl); out=$(port pinion.out); err=$(port pinion.err)
die() { echo "l1: $*" > "${ctl:-/dev/console}"; reboot -f; }
[ -n "$ctl" ] && [ -n "$out" ] && [ -n "$err" ] || die "virtio-serial ports missing"

mkdir -p /host /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose host /host || die "9p mount of the host's / failed"
mount -t tmpfs -o size=75% rw /rw
mkdir -p /rw/upper /rw/work
# The overlay makes the whole host tree writable in L1 (writes stay in L1's
# RAM), so a checkout anywhere, /tmp included, works at the same path.
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot || die "overlay over the 9p root failed"
for d in dev proc sys; do mount --rbind /$d /newroot/$d; done
for d in run dev/shm; do mount -t tmpfs tmpfs /newroot/$d; done
chmod 1777 /newroot/dev/shm
cp "/host$run/cmd.sh" /newroot/run/pinion-cmd.sh || die "cannot read $run/cmd.sh over 9p"
if [ -n "$rw" ]; then
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 rw /newroot$rw || die "9p mount of $rw failed"
fi
ip link set lo up 2>/dev/null

echo booted > "$ctl"
chroot /newroot /bin/sh /run/pinion-cmd.sh > "$out" 2> "$err" < /dev/null
echo "exit $?" > "$ctl"
sync
reboot -f
