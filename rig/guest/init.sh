#!/bin/busybox sh
# The Linux guest's init (PID 1 of the guest image): mounts the kernel's
# filesystems, brings up the first Ethernet interface with a static address,
# starts the UDP echo service, runs the command the kernel command line
# gives (or a shell on the console when there is none), and powers off.
# Options on the kernel command line:
#   pinion.ip=ADDR/LEN   the interface's address (default 192.0.2.2/24)
#   pinion.echo=PORT     UDP echo port (default 7; 0: none)
#   pinion.run=BASE64    a shell command, base64-encoded: one word, so the
#                        kernel neither splits it nor counts its words as
#                        init arguments (it panics past 32)
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
echo "pinion-guest: init at $(cut -d' ' -f1 /proc/uptime) s"

ip=192.0.2.2/24 echo_port=7 run=
for a in $(cat /proc/cmdline); do
  case $a in
    pinion.ip=*) ip=${a#pinion.ip=} ;;
    pinion.echo=*) echo_port=${a#pinion.echo=} ;;
    pinion.run=*) run=${a#pinion.run=} ;;
  esac
done

ip link set lo up
nic=$(for n in /sys/class/net/*; do [ -e "$n/device" ] && basename "$n"; done | head -n 1)
if [ -n "$nic" ]; then
  ip link set "$nic" up
  ip addr add "$ip" dev "$nic"
  drv=$(basename "$(readlink "/sys/class/net/$nic/device/driver")")
  # The igb VF's link follows the PF's mailbox; give it 10 s.
  n=0; until [ "$(cat "/sys/class/net/$nic/carrier" 2>/dev/null)" = 1 ] || [ $n -ge 100 ]; do sleep 0.1; n=$((n + 1)); done
  state=down; [ "$(cat "/sys/class/net/$nic/carrier" 2>/dev/null)" = 1 ] && state=up
  echo "pinion-guest: link $nic $state driver=$drv address=$ip at $(cut -d' ' -f1 /proc/uptime) s"
  [ "$echo_port" != 0 ] && udp-echo "$echo_port" &
else
  echo "pinion-guest: no network interface"
fi

if [ -n "$run" ]; then
  echo "$run" | base64 -d > /tmp/run.sh
  sh /tmp/run.sh
  echo "pinion-guest: command exit $?"
else
  setsid cttyhack sh
fi
sync
poweroff -f
