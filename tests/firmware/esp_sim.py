"""An ESP8266 running the AT firmware, as the Pico sees it over UART0.

The firmware writes to `sim.uart` and reads the module's answers from it. The
simulator answers the AT commands the original device uses, with the module's
own framing: echo until ATE0, `\\r\\nOK\\r\\n`, `ERROR`, the `> ` prompt after
AT+CIPSEND, `Recv N bytes` / `SEND OK`, `<id>,CONNECT` / `<id>,CLOSED`, and
`+IPD,<id>,<len>:<data>` for everything a link receives. Links are real TCP
sockets on this machine: AT+CIPSTART connects to host:port, AT+CIPSERVER
listens on `http_port` (the test's stand-in for port 80).
"""

from __future__ import annotations

import re
import selectors
import socket
import threading
import time

MAX_LINKS = 5


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _args(text: str) -> list[str]:
    """Split AT arguments on commas outside quotes, honouring backslash escapes."""
    out, cur, quoted, esc = [], "", False, False
    for ch in text:
        if esc:
            cur += ch
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


class SimUart:
    """The Pico's end of UART0."""

    def __init__(self, sim: Esp8266Sim) -> None:
        self.sim = sim

    def write(self, data: bytes) -> int:
        self.sim._from_pico(bytes(data))
        return len(data)

    def any(self) -> int:
        with self.sim.lock:
            return len(self.sim.to_pico)

    def read(self, n: int | None = None) -> bytes | None:
        with self.sim.lock:
            if not self.sim.to_pico:
                return None
            n = len(self.sim.to_pico) if n is None else n
            data = bytes(self.sim.to_pico[:n])
            del self.sim.to_pico[:n]
            return data


class Esp8266Sim:
    def __init__(self, networks: dict[str, str] | None = None, http_port: int = 0) -> None:
        self.networks = networks or {}
        self.http_port = http_port
        self.lock = threading.RLock()
        self.to_pico = bytearray()
        self.inbuf = b""
        self.echo = True
        self.mode = 1
        self.mux = 0
        self.ap: dict | None = None
        self.joined: str | None = None
        self.links: dict[int, socket.socket] = {}
        self.server: socket.socket | None = None
        self.server_timeout = 180
        self.last_active: dict[int, float] = {}
        self.sending: tuple[int, int] | None = None
        self.commands: list[str] = []
        self.sel = selectors.DefaultSelector()
        self.uart = SimUart(self)
        self.running = True
        self.offline = False  # a test can take the module's Wi-Fi away
        self.thread = threading.Thread(target=self._io_loop, name="esp-sim", daemon=True)
        self.thread.start()

    # --- output to the Pico ---
    def _out(self, data: bytes | str) -> None:
        with self.lock:
            self.to_pico += data.encode() if isinstance(data, str) else data

    # --- input from the Pico ---
    def _from_pico(self, data: bytes) -> None:
        with self.lock:
            self.inbuf += data
            while True:
                if self.sending:
                    link, n = self.sending
                    if len(self.inbuf) < n:
                        return
                    payload, self.inbuf = self.inbuf[:n], self.inbuf[n:]
                    self.sending = None
                    self._send_payload(link, payload)
                    continue
                nl = self.inbuf.find(b"\r\n")
                if nl < 0:
                    return
                line, self.inbuf = self.inbuf[:nl].decode(errors="replace"), self.inbuf[nl + 2 :]
                if self.echo:
                    self._out(line + "\r\n")
                self.commands.append(line)
                self._command(line)

    def _ok(self, prefix: str = "") -> None:
        self._out(prefix + "\r\nOK\r\n")

    def _error(self) -> None:
        self._out("\r\nERROR\r\n")

    def _command(self, line: str) -> None:
        name, _, rest = line.partition("=")
        if name == "AT":
            return self._ok()
        if name == "ATE0":
            self.echo = False
            return self._ok()
        if name == "AT+CWMODE":
            self.mode = int(rest)
            return self._ok()
        if name == "AT+CIPMUX":
            self.mux = int(rest)
            return self._ok()
        if name == "AT+CWSAP":
            ssid, pwd, chan, ecn, *more = _args(rest)
            if self.mode not in (2, 3):
                return self._error()
            self.ap = {
                "ssid": ssid,
                "password": pwd,
                "channel": int(chan),
                "ecn": int(ecn),
                "max_conn": int(more[0]) if more else 4,
            }
            return self._ok()
        if name == "AT+CIPSERVER":
            parts = _args(rest)
            if parts[0] == "1":
                if self.mux != 1:
                    return self._error()
                srv = socket.socket()
                srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                srv.bind(("127.0.0.1", self.http_port))
                srv.listen(4)
                srv.setblocking(False)
                self.server = srv
                self.sel.register(srv, selectors.EVENT_READ, "server")
            elif self.server:
                self.sel.unregister(self.server)
                self.server.close()
                self.server = None
            return self._ok()
        if name == "AT+CIPSTO":
            if self.server is None or not 0 <= int(rest) <= 7200:
                return self._error()
            self.server_timeout = int(rest)
            return self._ok()
        if name == "AT+CWJAP":
            ssid, pwd = _args(rest)[:2]
            if self.mode not in (1, 3) or self.offline or self.networks.get(ssid) != pwd:
                return self._out("+CWJAP:1\r\n\r\nFAIL\r\n")
            self.joined = ssid
            return self._out("WIFI CONNECTED\r\nWIFI GOT IP\r\n\r\nOK\r\n")
        if name == "AT+CIPSTART":
            link, proto, host, port = _args(rest)
            return self._start(int(link), host, int(port))
        if name == "AT+CIPSEND":
            link, n = (int(x) for x in _args(rest))
            if link not in self.links or n > 2048:
                return self._out(
                    "link is not valid\r\n\r\nERROR\r\n" if link not in self.links else "\r\nERROR\r\n"
                )
            self.sending = (link, n)
            return self._out("\r\nOK\r\n> ")
        if name == "AT+CIPCLOSE":
            link = int(rest)
            if link not in self.links:
                return self._error()
            self._drop(link, announce=False)
            return self._out(f"{link},CLOSED\r\n\r\nOK\r\n")
        return self._error()

    def _start(self, link: int, host: str, port: int) -> None:
        if self.mode not in (1, 3) or self.joined is None or self.offline:
            return self._out("\r\nERROR\r\n")
        if link in self.links:
            return self._out("ALREADY CONNECTED\r\n\r\nERROR\r\n")
        try:
            s = socket.create_connection((host, port), timeout=2)
        except OSError:
            return self._out(f"\r\nERROR\r\n{link},CLOSED\r\n")
        s.setblocking(False)
        self.links[link] = s
        self.sel.register(s, selectors.EVENT_READ, link)
        self._out(f"{link},CONNECT\r\n\r\nOK\r\n")

    def _send_payload(self, link: int, payload: bytes) -> None:
        s = self.links.get(link)
        self._out(f"\r\nRecv {len(payload)} bytes\r\n")
        try:
            assert s is not None
            s.setblocking(True)
            s.sendall(payload)
            s.setblocking(False)
        except (OSError, AssertionError):
            self._out("\r\nSEND FAIL\r\n")
            if s is not None:
                self._drop(link)
            return
        self._out("\r\nSEND OK\r\n")

    def _drop(self, link: int, announce: bool = True) -> None:
        s = self.links.pop(link, None)
        self.last_active.pop(link, None)
        if s is None:
            return
        try:
            self.sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()
        if announce:
            self._out(f"{link},CLOSED\r\n")

    def drop_wifi(self) -> None:
        """The access point went away: every link closes and the module is no longer joined."""
        with self.lock:
            self.offline = True
            self.joined = None
            for link in list(self.links):
                self._drop(link)
            self._out("WIFI DISCONNECT\r\n")

    def drop_links(self) -> None:
        """The TCP links break (a NAT timeout, a router reboot) while the module stays joined."""
        with self.lock:
            for link in list(self.links):
                self._drop(link)

    def restore_wifi(self) -> None:
        with self.lock:
            self.offline = False

    # --- the radio side: sockets ---
    def _io_loop(self) -> None:
        while self.running:
            with self.lock:
                has = bool(self.sel.get_map())
            if not has:
                threading.Event().wait(0.01)
                continue
            try:
                events = self.sel.select(0.01)
            except (OSError, ValueError):
                continue
            with self.lock:
                self._drop_idle_server_links()
            for key, _ in events:
                with self.lock:
                    if key.data == "server":
                        self._accept()
                    else:
                        self._readable(key.data, key.fileobj)

    def _accept(self) -> None:
        if self.server is None:
            return
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        free = [i for i in range(MAX_LINKS) if i not in self.links]
        if not free:  # (CWSAP's max conn limits Wi-Fi stations, not TCP links)
            conn.close()
            return
        link = free[0]
        conn.setblocking(False)
        self.links[link] = conn
        self.last_active[link] = time.monotonic()
        self.sel.register(conn, selectors.EVENT_READ, link)
        self._out(f"{link},CONNECT\r\n")

    def _readable(self, link: int, sock) -> None:
        if self.links.get(link) is not sock:
            return
        try:
            data = sock.recv(1460)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(link)
            return
        if link in self.last_active:
            self.last_active[link] = time.monotonic()
        self._out(f"\r\n+IPD,{link},{len(data)}:".encode() + data)

    def _drop_idle_server_links(self) -> None:
        """AT+CIPSTO: the module closes a server link that has been silent that long."""
        now = time.monotonic()
        for link, last in list(self.last_active.items()):  # only links the server accepted
            if self.server_timeout and now - last > self.server_timeout:
                self._drop(link)

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        with self.lock:
            for link in list(self.links):
                self._drop(link, announce=False)
            if self.server:
                self.server.close()
