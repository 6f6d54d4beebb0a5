# ESP8266 back end: the original hardware, an ESP-01 driven with AT commands over UART0 at 115200.
#
# The module interleaves asynchronous output with command answers:
#   "+IPD,<link>,<len>:<bytes>"   data received on a link (binary, not line based)
#   "<link>,CONNECT" / "<link>,CLOSED"
#   "> "                          the CIPSEND prompt (no line end)
# so every byte goes through one parser that sorts it into answer lines, link
# events and per-link receive buffers.
from clock import sleep_ms, ticks_diff, ticks_ms
from netbase import MAX_REQUEST, NetError, escape_at

GATEWAY_LINK = 0
MAX_SEND = 2048


class Esp8266:
    def __init__(self, uart, feed=None):
        self.uart = uart
        self.feed = feed or (lambda: None)
        self.buf = b""
        self.lines = []
        self.rx = {}
        self.open = set()
        self.closed = set()  # links that closed since the last clear (ids are reused at once)
        self.prompt = False
        self.wifi_lost = False

    # --- input parsing ---
    def _pump(self, wait_ms=0):
        start = ticks_ms()
        while True:
            n = self.uart.any()
            if n:
                data = self.uart.read(n)
                if data:
                    self.buf += data
                    self._parse()
                    return True
            if ticks_diff(ticks_ms(), start) >= wait_ms:
                return False
            sleep_ms(2)

    def _parse(self):
        while self.buf:
            if self.buf[:5] == b"+IPD,":
                colon = self.buf.find(b":")
                if colon < 0:
                    if len(self.buf) > 24:
                        raise NetError("bad +IPD header")
                    return
                try:
                    link, n = [int(x) for x in self.buf[5:colon].split(b",")[:2]]
                except ValueError:
                    raise NetError("bad +IPD header")
                if len(self.buf) < colon + 1 + n:
                    return
                data = self.buf[colon + 1:colon + 1 + n]
                self.buf = self.buf[colon + 1 + n:]
                self.rx[link] = self.rx.get(link, b"") + data
                continue
            if self.buf[:1] == b">":
                self.prompt = True
                self.buf = self.buf[2:] if self.buf[1:2] == b" " else self.buf[1:]
                continue
            if len(self.buf) < 5 and b"+IPD,"[:len(self.buf)] == self.buf:
                return  # the start of a +IPD header: wait for the rest
            nl = self.buf.find(b"\r\n")
            if nl < 0:
                return
            line = self.buf[:nl]
            self.buf = self.buf[nl + 2:]
            if line:
                self._line(line)

    def _line(self, line):
        if line == b"WIFI DISCONNECT":
            self.wifi_lost = True
            return
        if len(line) > 2 and line[1:2] == b"," and 48 <= line[0] <= 57:
            link = line[0] - 48
            event = line[2:]
            if event == b"CONNECT":
                self.open.add(link)
                return
            if event in (b"CLOSED", b"CONNECT FAIL"):
                self.open.discard(link)
                self.closed.add(link)
                return
        self.lines.append(line)

    # --- commands ---
    def cmd(self, text, timeout_ms=3000, ok=(b"OK",)):
        self.lines = []
        self.uart.write(text.encode() + b"\r\n")
        start = ticks_ms()
        answer = []
        while True:
            self.feed()
            self._pump(20)
            while self.lines:
                line = self.lines.pop(0)
                if line in ok:
                    return answer
                if line in (b"ERROR", b"FAIL") or line[:4] == b"busy":
                    raise NetError(text.split("=")[0] + " failed: " + line.decode())
                answer.append(line)
            if ticks_diff(ticks_ms(), start) > timeout_ms:
                raise NetError(text.split("=")[0] + " timed out")

    def send(self, link, data):
        for i in range(0, len(data), MAX_SEND):
            chunk = data[i:i + MAX_SEND]
            self.prompt = False
            self.lines = []
            self.uart.write(("AT+CIPSEND=%d,%d\r\n" % (link, len(chunk))).encode())
            self._wait(lambda: self.prompt, "CIPSEND prompt")
            self.uart.write(chunk)
            self._wait(lambda: b"SEND OK" in self.lines, "SEND OK")

    def _wait(self, done, what, timeout_ms=5000):
        start = ticks_ms()
        while not done():
            for line in self.lines:
                if line in (b"ERROR", b"SEND FAIL", b"link is not valid"):
                    raise NetError(what + ": " + line.decode())
            if ticks_diff(ticks_ms(), start) > timeout_ms:
                raise NetError(what + " timed out")
            self.feed()
            self._pump(20)

    def take(self, link):
        data = self.rx.pop(link, b"")
        return data


class EspNet:
    def __init__(self, uart, feed=None):
        self.at = Esp8266(uart, feed)
        self.feed = self.at.feed
        self._joined = False
        self._ready = False

    def _init(self):
        if self._ready:
            return
        for _ in range(3):
            try:
                self.at.cmd("AT", 1000)
                break
            except NetError:
                sleep_ms(100)
        self.at.cmd("ATE0")
        self.at.cmd("AT+CIPMUX=1")
        self._ready = True

    # --- configuration mode ---
    def start_ap(self, ssid, port=80):
        self._init()
        self.at.cmd("AT+CWMODE=2")
        # open network (ecn 0), channel 5, at most one client
        self.at.cmd('AT+CWSAP="%s","",5,0,1' % escape_at(ssid), 5000)
        self.at.cmd("AT+CIPSERVER=1,%d" % port)
        # browsers open spare connections and leave them idle; free the module's 5 links after 10 s
        self.at.cmd("AT+CIPSTO=10")

    def stop_ap(self):
        # AT+CIPSERVER=0 leaves open links open: close the page's links first, or work mode
        # would find link 0 still "open" and send readings down the configuration link.
        for link in list(self.at.open):
            self._close_link(link)
        try:
            self.at.cmd("AT+CIPSERVER=0")
        except NetError:
            pass

    def poll_request(self, timeout_ms):
        self.at._pump(timeout_ms)
        for link in list(self.at.rx):
            data = self.at.rx[link]
            if b"\r\n\r\n" in data:
                del self.at.rx[link]
                return link, data
            if len(data) > MAX_REQUEST:
                del self.at.rx[link]
                self._close_link(link)
        return None

    def respond(self, link, data):
        # No AT+CIPCLOSE here: the answer says "Connection: close", so the browser closes,
        # and the module drops idle links after AT+CIPSTO. A browser that closed and
        # reconnected at once has the same link id again, and closing it would cut that request.
        self.at.send(link, data)

    def _close_link(self, link):
        try:
            self.at.cmd("AT+CIPCLOSE=%d" % link)
        except NetError:
            pass
        self.at.open.discard(link)

    # --- work mode ---
    def join(self, ssid, password):
        self._init()
        self._joined = False
        self.at.cmd("AT+CWMODE=1")
        self.at.wifi_lost = False
        self.at.cmd('AT+CWJAP="%s","%s"' % (escape_at(ssid), escape_at(password)), 20000)
        self._joined = True

    def joined(self):
        return self._joined and not self.at.wifi_lost

    def connect(self, host, port):
        self.at.rx.pop(GATEWAY_LINK, None)
        try:
            self.at.cmd('AT+CIPSTART=%d,"TCP","%s",%d' % (GATEWAY_LINK, host, port), 10000)
        except NetError as e:
            if "timed out" in str(e):
                self._joined = False  # the module stopped answering sensibly: join again
            raise
        self.at.open.add(GATEWAY_LINK)

    def connected(self):
        return GATEWAY_LINK in self.at.open

    def send(self, data):
        if GATEWAY_LINK not in self.at.open:
            raise NetError("gateway link closed")
        self.at.send(GATEWAY_LINK, data)

    def recv(self, timeout_ms=0):
        self.at._pump(timeout_ms)
        data = self.at.take(GATEWAY_LINK)
        if not data and GATEWAY_LINK not in self.at.open:
            raise NetError("gateway link closed")
        return data

    def close(self):
        if GATEWAY_LINK in self.at.open:
            self._close_link(GATEWAY_LINK)
