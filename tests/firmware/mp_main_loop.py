# Runs under real MicroPython (WebAssembly port): the firmware's own App main loop over a
# scripted ESP8266. Configuration mode receives the original page's submission, stores it,
# switches to work mode, joins Wi-Fi, connects and sends two v1 readings.
# ruff: noqa: E402, UP031
import sys

sys.path.insert(0, "/lib")
import binascii
import json
import os

import machine


class ScriptedEsp:
    """Answers AT commands like the module; records what the firmware sends on link 0."""

    def __init__(self, request, acks):
        self.acks = acks  # v2: what the gateway answers to each reading, in order
        self.out = b""
        self.inbuf = b""
        self.expect = 0
        self.request = request
        self.sent = []
        self.commands = []

    def any(self):
        return len(self.out)

    def read(self, n=None):
        data, self.out = self.out[:n], self.out[n:]
        return data

    def write(self, data):
        if self.expect:
            self.sent.append(bytes(data))
            self.expect = 0
            self.out += ("\r\nRecv %d bytes\r\n\r\nSEND OK\r\n" % len(data)).encode()
            if data[:1] == b"\xc2" and self.acks:
                ack = self.acks.pop(0)
                self.out += ("\r\n+IPD,0,%d:" % len(ack)).encode() + ack
            return len(data)
        self.inbuf += data
        while b"\r\n" in self.inbuf:
            i = self.inbuf.find(b"\r\n")
            line, self.inbuf = self.inbuf[:i].decode(), self.inbuf[i + 2 :]
            self.commands.append(line)
            if line.startswith("AT+CIPSEND="):
                self.expect = int(line.split(",")[1])
                self.out += b"\r\nOK\r\n> "
            elif line.startswith("AT+CWJAP="):
                self.out += b"WIFI CONNECTED\r\nWIFI GOT IP\r\n\r\nOK\r\n"
            elif line.startswith("AT+CIPSTART="):
                self.out += b"0,CONNECT\r\n\r\nOK\r\n"
            elif line.startswith("AT+CIPSERVER=1"):
                self.out += (
                    "\r\nOK\r\n0,CONNECT\r\n\r\n+IPD,0,%d:" % len(self.request)
                ).encode() + self.request
            else:
                self.out += b"\r\nOK\r\n"
        return len(data)


with open("/data/case.json") as f:
    case = json.load(f)
os.mkdir("/data/fw")
with open("/data/fw/settings.json", "w") as f:
    json.dump({"device_id": "mp-dev", "net": "esp8266", "interval_ms": 100, "protocol": case["protocol"]}, f)
with open("/data/fw/secrets.json", "w") as f:
    json.dump(case["secrets"], f)
machine.PINS[3] = 1  # slide switch on configuration
esp = ScriptedEsp(case["request"].encode(), [binascii.unhexlify(a) for a in case["acks"]])
machine.UART_OBJ[0] = esp

import app

device = app.App(root="/data/fw", max_readings=2)
device.run()
with open("/data/fw/settings.json") as f:
    site = json.load(f)
with open("/data/fw/secrets.json") as f:
    secrets = json.load(f)
readings = [binascii.hexlify(s).decode() for s in esp.sent if s[:1] != b"H"]
print(
    "RESULT "
    + json.dumps(
        {
            "impl": sys.implementation.name,
            "site": site,
            "wifi_password": secrets.get("wifi_password"),
            "commands": esp.commands,
            "pending": device.link.pending(),
            "sent": readings,
            "feeds": machine.FEEDS[0],
            "http": [s.decode() for s in esp.sent if s[:1] == b"H"],
        }
    )
)
