# Sends "pinion-peer frame N" broadcast frames (ethertype 0x88b5, the IEEE
# local experimental type) from an L1 interface every 100 ms until killed,
# so a guest driving the assigned igb can receive from the wire.
import socket, sys, time

ifname = sys.argv[1]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
src = s.getsockname()[4]
n = 0
while True:
    payload = f"pinion-peer frame {n}".encode().ljust(46, b"\0")
    s.send(b"\xff" * 6 + src + b"\x88\xb5" + payload)
    n += 1
    time.sleep(0.1)
