"""Runs INSIDE the test guest (python3 /payload/guest_checks.py). Prints KEY=value lines.

(a) finds the virtio-serial port org.kvmgpu.0 both ways: the /dev/virtio-ports link and a scan of
    /sys/class/virtio-ports/*/name -> /dev/vportNpM;
(c) finds the ivshmem-plain device (1af4:1110) under /sys/bus/pci/devices, maps its resource2,
    reads what the host wrote at offset 0 and writes "guest-saw:<that>" at offset 4096;
(b) echoes one line from the host back on the port ("echo:<line>") and waits for "bye".
"""
import glob
import mmap
import os
import sys

NAME = "org.kvmgpu.0"


def out(key, value):
    print(f"{key}={value}", flush=True)


# (a)
port = None
for d in sorted(glob.glob("/sys/class/virtio-ports/*")):
    with open(d + "/name") as f:
        if f.read().strip() == NAME:
            port = "/dev/" + os.path.basename(d)
out("PORT_SYSFS", port)
link = "/dev/virtio-ports/" + NAME
out("PORT_LINK", os.path.realpath(link) if os.path.exists(link) else None)
out("PORT_DEV_EXISTS", bool(port and os.path.exists(port)))

# (c)
dev = None
for d in sorted(glob.glob("/sys/bus/pci/devices/*")):
    with open(d + "/vendor") as v, open(d + "/device") as p:
        if v.read().strip() == "0x1af4" and p.read().strip() == "0x1110":
            dev = d
out("IVSHMEM", dev and os.path.basename(dev))
if dev:
    try:
        with open(dev + "/enable", "w") as f:
            f.write("1")
    except OSError as e:
        out("ENABLE_ERR", e)
    res = dev + "/resource2"
    size = os.path.getsize(res)
    out("BAR2_SIZE", size)
    fd = os.open(res, os.O_RDWR | os.O_SYNC)
    m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    host = bytes(m[:64]).split(b"\0", 1)[0]
    out("SHM_HOST", host.decode(errors="replace"))
    msg = b"guest-saw:" + host + b"\0"
    m[4096:4096 + len(msg)] = msg
    m.flush()
    m.close()
    os.close(fd)

# (b)
if port:
    fd = os.open(port, os.O_RDWR)
    buf = b""
    while b"\n" not in buf:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    line, buf = buf.split(b"\n", 1) if b"\n" in buf else (buf, b"")
    out("CHANNEL_GOT", line.decode(errors="replace"))
    os.write(fd, b"echo:" + line + b"\n")
    while b"bye\n" not in buf:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    out("CHANNEL_BYE", b"bye\n" in buf)
    os.close(fd)
sys.exit(0 if (port and dev) else 1)
