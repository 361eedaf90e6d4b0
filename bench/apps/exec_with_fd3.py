"""``exec_with_fd3.py FD PROGRAM ARGS...``: move socket FD to fd 3, set LISTEN_PID to our own
PID (unchanged by exec, so the server sees LISTEN_PID == getpid() as sd_listen_fds(3) requires)
and exec PROGRAM: systemd's part of passing one socket, for sockets systemd-socket-activate
cannot make (SO_REUSEPORT). LISTEN_FDS and LISTEN_FDNAMES come from the environment."""

import os
import sys

fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
