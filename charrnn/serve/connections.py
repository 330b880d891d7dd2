"""The server's open connections: how many it holds, which one makes room, how long a request may take to arrive.

    connections = Connections(connection_cap(256), refusal=b"HTTP/1.1 503 ...")   # refusal: a whole answer
    if not connections.admit(sock):     # at the cap, the connection longest in sending its request is answered
        ...                             # ``refusal`` and closed to make room; with none such, admit() is False
    connections.arrived(sock)           # its request is in: False if it was closed to make room meanwhile
    connections.drop(sock)              # it is closed
    rfile = io.BufferedReader(DeadlineReader(sock, time.monotonic() + 30))   # RequestTimeout past the deadline

A client that sends its request slowly (a byte of a header now and then) holds a thread and a file descriptor
for as long as it likes: the cap bounds both, the eviction keeps room for clients that send their request at
once, and the deadline ends any request that has not arrived whole in time.
"""

import contextlib
import io
import resource
import socket
import threading
import time

FD_RESERVE = 32  # file descriptors kept for all but connections: the listening socket, files, pipes, the runtime's


class RequestTimeout(Exception):
    """The request has not arrived whole by its deadline."""


def connection_cap(wanted):
    """``wanted`` connections, fewer where the open-file limit (ulimit -n) leaves room for fewer beside FD_RESERVE:
    the server then refuses connections rather than fails to accept them."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return wanted if soft == resource.RLIM_INFINITY else max(1, min(wanted, soft - FD_RESERVE))


class Connections:
    """The open connections, in the order they were accepted, each marked while its request is still arriving."""

    def __init__(self, cap, refusal):
        self.cap, self.refusal = cap, refusal
        self.arriving = {}  # socket -> True while its request arrives, False once it is answered
        self.lock = threading.Lock()

    def admit(self, sock):
        """Count ``sock`` in; at the cap, first close the connection longest in sending its request. False (and
        ``sock`` not counted) when every open connection is being answered."""
        with self.lock:
            if len(self.arriving) >= self.cap:
                oldest = next((s for s, arriving in self.arriving.items() if arriving), None)
                if oldest is None:
                    return False
                del self.arriving[oldest]
                self.refuse(oldest)
                with contextlib.suppress(OSError):
                    oldest.shutdown(socket.SHUT_RDWR)  # its thread, waiting for the request, sees it end
            self.arriving[sock] = True
            return True

    def refuse(self, sock):
        """Send the refusal without waiting (a connection that has been sent nothing has room for it)."""
        with contextlib.suppress(OSError):
            sock.send(self.refusal, socket.MSG_DONTWAIT)

    def arrived(self, sock):
        """Mark ``sock``'s request as in, so that its connection is no longer closed to make room; False if it
        already was."""
        with self.lock:
            if sock not in self.arriving:
                return False
            self.arriving[sock] = False
            return True

    def drop(self, sock):
        with self.lock:
            self.arriving.pop(sock, None)


class DeadlineReader(io.RawIOBase):
    """A socket's reading side that raises RequestTimeout once ``deadline`` (time.monotonic()) has passed: a wait for
    bytes lasts until the deadline at most, however the bytes trickle in. The socket's own timeout (for writing) is
    left as it was."""

    def __init__(self, sock, deadline):
        super().__init__()
        self.sock, self.deadline = sock, deadline

    def readable(self):
        return True

    def readinto(self, buffer):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise RequestTimeout()
        timeout = self.sock.gettimeout()
        self.sock.settimeout(left)
        try:
            return self.sock.recv_into(buffer)
        except TimeoutError:
            raise RequestTimeout() from None
        finally:
            self.sock.settimeout(timeout)
