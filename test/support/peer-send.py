# Sends "pinion-peer frame N" broadcast frames (ethertype 0x88b5, the IEEE
# local experimental type) from an L1 interface, so a guest driving the
# assigned igb can receive from the wire:
#   peer-send.py IFNAME [INTERVAL_MS [COUNT]]
# every INTERVAL_MS (default 100) until killed; with COUNT, frames 0 to
# COUNT-1, then "pinion-peer stop COUNT" (three times, 10 ms apart: a guest
# stops on the first it gets) and exit. SIGTERM ends the stream early the
# same way, the stop frames carrying the count sent; the count is printed
# last ("sent N"). Each payload is zero padded to 46 bytes, the minimum: the
# test guest's stream mode checks every byte.
import signal, socket, sys, time

ifname = sys.argv[1]
interval = float(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0.1
count = int(sys.argv[3]) if len(sys.argv) > 3 else None
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
src = s.getsockname()[4]


def send(text):
    s.send(b"\xff" * 6 + src + b"\x88\xb5" + text.encode().ljust(46, b"\0"))


n = 0
stopping = False


def stop(_sig, _frame):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)
# Deadlines, not sleeps, so a late wakeup does not slow the stream; after a
# stall it starts again from now rather than send a burst a guest's RX ring
# might not hold.
next_at = time.monotonic()
while (count is None or n < count) and not stopping:
    send(f"pinion-peer frame {n}")
    n += 1
    next_at = max(next_at + interval, time.monotonic())
    time.sleep(max(0.0, next_at - time.monotonic()))
for _ in range(3):
    send(f"pinion-peer stop {n}")
    time.sleep(0.01)
print(f"sent {n}", flush=True)
