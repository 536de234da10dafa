"""Round trip between two processes: unix socket with busy-poll vs a u32 in shared memory (spin).
`python3 bench/sim/pingpong.py` (no GPU needed)."""
import mmap
import os
import socket
import time

N = 20000
m = mmap.mmap(-1, 4096); v = memoryview(m).cast("I")
pid = os.fork()
if pid == 0:
    last = 0
    while True:
        while v[0] == last:
            pass
        last = v[0]
        if last == 0xFFFFFFFF:
            os._exit(0)
        v[1] = last
t = time.perf_counter()
for i in range(1, N):
    v[0] = i
    while v[1] != i:
        pass
shm_us = (time.perf_counter() - t) / N * 1e6
v[0] = 0xFFFFFFFF; os.waitpid(pid, 0)
a, c = socket.socketpair(); a.setblocking(False); c.setblocking(False)
pid = os.fork()
if pid == 0:
    a.close(); buf = bytearray(64)
    while True:
        try:
            n = c.recv_into(buf)
        except BlockingIOError:
            continue
        if n == 0:
            os._exit(0)
        c.send(buf[:n])
c.close(); buf = bytearray(64)
t = time.perf_counter()
for _ in range(N):
    a.send(b"x" * 40)
    while True:
        try:
            if a.recv_into(buf): break
        except BlockingIOError:
            pass
sock_us = (time.perf_counter() - t) / N * 1e6
a.close(); os.waitpid(pid, 0)
print(f"round trip: shared-memory spin {shm_us:.2f} us, socket busy-poll {sock_us:.2f} us")
