"""Start bastion the way systemd socket activation does (for the listener tests).

    python proc_systemd.py N -- ARGS...

opens N listening TCP sockets on 127.0.0.1 (port 0), places them on descriptors 3, 4, ...,
sets LISTEN_FDS=N and LISTEN_PID to its own pid, and execs ``python -m bastion ARGS``
(exec keeps the pid, as systemd's own fork+exec does).
"""

import fcntl
import os
import socket
import sys

count = int(sys.argv[1])
args = sys.argv[sys.argv.index("--") + 1 :]
socks = []
for _ in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    socks.append(s)
# move them out of the way first so placing one cannot close another
high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, 100) for s in socks]
for s in socks:
    s.close()
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i, inheritable=True)
    os.close(fd)
os.environ["LISTEN_FDS"] = str(count)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, "-m", "bastion", *args])
