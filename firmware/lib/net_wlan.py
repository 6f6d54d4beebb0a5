# Pico W back end: the board's own CYW43 radio through network.WLAN and sockets.
import network
import socket

from clock import sleep_ms, ticks_diff, ticks_ms
from netbase import MAX_REQUEST, NetError


class WlanNet:
    def __init__(self, feed=None):
        self.feed = feed or (lambda: None)
        self.sta = None
        self.ap = None
        self.server = None
        self.sock = None

    # --- configuration mode ---
    def start_ap(self, ssid, port=80):
        self.ap = network.WLAN(network.AP_IF)
        self.ap.config(essid=ssid, security=0)
        try:
            self.ap.config(max_clients=1)
        except (ValueError, OSError, TypeError):
            pass  # not every port can limit clients
        self.ap.active(True)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(socket.getaddrinfo("0.0.0.0", port)[0][-1])
        s.listen(1)
        self.server = s

    def stop_ap(self):
        if self.server:
            self.server.close()
            self.server = None
        if self.ap:
            self.ap.active(False)

    def poll_request(self, timeout_ms):
        self.server.settimeout(timeout_ms / 1000)
        try:
            client = self.server.accept()[0]
        except OSError:
            return None
        client.settimeout(2)
        data = b""
        try:
            while b"\r\n\r\n" not in data and len(data) < MAX_REQUEST:
                chunk = client.recv(512)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        if b"\r\n\r\n" not in data:
            client.close()
            return None
        return client, data

    def respond(self, link, data):
        try:
            _send_all(link, data)
        except OSError:
            pass
        finally:
            link.close()

    # --- work mode ---
    def join(self, ssid, password):
        self.sta = network.WLAN(network.STA_IF)
        self.sta.active(True)
        if self.sta.isconnected():
            return
        self.sta.connect(ssid, password)
        start = ticks_ms()
        while not self.sta.isconnected():
            if ticks_diff(ticks_ms(), start) > 20000:
                raise NetError("Wi-Fi join timed out")
            self.feed()
            sleep_ms(50)

    def joined(self):
        return bool(self.sta) and self.sta.isconnected()

    def connect(self, host, port):
        self.close()
        try:
            addr = socket.getaddrinfo(host, port)[0][-1]
            s = socket.socket()
            s.settimeout(5)
            s.connect(addr)
        except OSError as e:
            raise NetError("connect failed: %s" % e)
        self.sock = s

    def connected(self):
        return self.sock is not None

    def send(self, data):
        if self.sock is None:
            raise NetError("not connected")
        try:
            self.sock.settimeout(5)
            _send_all(self.sock, data)
        except OSError as e:
            self.close()
            raise NetError("send failed: %s" % e)

    def recv(self, timeout_ms=0):
        if self.sock is None:
            raise NetError("not connected")
        self.sock.settimeout(max(timeout_ms, 1) / 1000)
        try:
            data = self.sock.recv(1024)
        except OSError:
            return b""  # timeout: nothing yet
        if not data:
            self.close()
            raise NetError("gateway closed the connection")
        return data

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None


def _send_all(sock, data):
    view = memoryview(data)
    while len(view):
        n = sock.send(view)
        if n is None or n <= 0:
            raise OSError("send returned %s" % n)
        view = view[n:]
