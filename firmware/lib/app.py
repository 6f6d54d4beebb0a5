# The device's main loop: configuration mode or work mode, chosen by the slide switch.
#
#   GPIO3 high: configuration mode, open AP "Med_IoT", page on port 80
#   GPIO4 high (or GPIO3 low): work mode, readings to the gateway
import binascii
import gc
import os

import machine

import webconf
from clock import log, sleep_ms, ticks_add, ticks_diff, ticks_ms
from led import Led
from netbase import NetError
from settings import Settings

AP_SSID = "Med_IoT"
PIN_CONFIG = 3
PIN_WORK = 4
WDT_MS = 8000  # RP2040 maximum is ~8.3 s


def new_nonce():
    # uniqueness is all a nonce needs; os.urandom is fine for that (never used for keys here)
    try:
        raw = os.urandom(8)
    except AttributeError:  # a port without os.urandom
        import random
        raw = bytes([random.getrandbits(8) for _ in range(8)])
    return binascii.hexlify(raw).decode()


def make_net(settings, feed):
    if settings.get("net") == "wlan":
        from net_wlan import WlanNet
        return WlanNet(feed)
    from net_esp import EspNet
    uart = machine.UART(0, baudrate=115200, tx=machine.Pin(0), rx=machine.Pin(1), rxbuf=4096)
    return EspNet(uart, feed)


def make_link(settings):
    if settings.get("protocol") == "v2":
        from proto_v2 import V2Link  # needs lib/v2device.py and lib/ccm.py
        return V2Link(settings)
    from proto_v1 import V1Link
    return V1Link(settings)


class Stopped(Exception):
    """Raised from feed() once stop() was called, so even long waits inside a back end end promptly."""


class App:
    def __init__(self, root="", http_port=80, page_path=webconf.PAGE, max_readings=None):
        self.settings = Settings(root)
        self.http_port = http_port
        self.page_path = page_path
        self.running = True
        self.max_readings = max_readings
        self.sent = 0
        self.wdt = None
        self.led = Led(self.settings.get("led_pin"))
        self.net = None
        self.link = None

    def feed(self):
        if not self.running:
            raise Stopped()
        if self.wdt is not None:
            self.wdt.feed()
        self.led.tick()

    def stop(self):
        self.running = False

    def mode(self):
        config = machine.Pin(PIN_CONFIG, machine.Pin.IN, machine.Pin.PULL_DOWN).value()
        if config or not self.settings.configured():
            return "config"
        return "work"

    def run(self):
        self.wdt = machine.WDT(timeout=WDT_MS)
        self.net = make_net(self.settings, self.feed)
        mode = self.mode()
        log("boot", mode=mode, net=self.settings.get("net"), protocol=self.settings.get("protocol"),
            device=self.settings.get("device_id"))
        try:
            if mode == "config" and not self.config_mode():
                return
            self.work_mode()
        except Stopped:
            log("stopped", sent=self.sent)

    def _wait(self, ms):
        start = ticks_ms()
        while self.running and ticks_diff(ticks_ms(), start) < ms:
            self.feed()
            sleep_ms(min(20, ms))

    # --- configuration mode ---
    def config_mode(self):
        self.led.set("config")
        key1 = self.settings.secret_bytes("config_key")
        nonce = new_nonce()
        self.net.start_ap(AP_SSID, self.http_port)
        log("config_mode", ssid=AP_SSID, port=self.http_port)
        while self.running:
            self.feed()
            try:
                req = self.net.poll_request(100)
            except NetError as e:
                log("config_net_error", error=e)
                continue
            if req is None:
                continue
            link, raw = req
            if len(key1) != 16:
                answer, values = webconf.response("503 Service Unavailable", "device has no Key 1\n"), None
            else:
                answer, values = webconf.handle(raw, key1, self.page_path, nonce)
                if raw.startswith(b"GET /save"):
                    nonce = new_nonce()  # one submission per nonce: no replay, no guessing at leisure
            try:
                self.net.respond(link, answer)
            except NetError as e:
                log("config_net_error", error=e)
            if values:
                self.settings.store_page(values)
                self.net.stop_ap()
                return True
            gc.collect()
        return False

    # --- work mode ---
    # Back-off (docs/protocol-v2.md "Device rules"): a failed connect, or a v2 link that ends
    # without one verified answer, waits a random time in [b/2, b] and doubles b up to
    # backoff_max_ms; a verified answer (v2) or a connect (v1, which gets no answers) sets b
    # back to backoff_min_ms. A gateway that accepts and closes at once (throttled, full,
    # restarting) therefore sees a device slow down, never lose a reading.
    def work_mode(self):
        s = self.settings
        link = self.link = make_link(s)
        interval = s.get("interval_ms")
        self.backoff_min = s.get("backoff_min_ms")
        self.backoff_max = s.get("backoff_max_ms")
        self.backoff = self.backoff_min
        from sensors import SensorError, Sensors
        sensors = Sensors(self.feed)
        host, port = s.get("server_ip"), int(s.get("server_port"))
        log("work_mode", server=host, port=port, protocol=link.name)
        now = ticks_ms()
        next_reading = now
        self.next_attempt = now
        # Readings go on at their own pace while the network is away: v2 keeps them
        # in its ring until answered; v1 has no acknowledgement and drops them.
        while self.running:
            self.feed()
            now = ticks_ms()
            if not self.net.connected() and ticks_diff(now, self.next_attempt) >= 0:
                try:
                    self._connect(link, host, port)
                    if link.name == "v1":
                        self.backoff = self.backoff_min
                except NetError as e:
                    self.led.set("error")
                    log("net_error", error=e, retry_ms=self.backoff, pending=link.pending())
                    self.net.close()
                    link.lost()
                    self._back_off()
            done = self.max_readings and self.sent >= self.max_readings
            if done and not link.pending():
                break  # max_readings (host runs and tests): N readings taken and answered
            if ticks_diff(now, next_reading) >= 0 and not done:
                next_reading = ticks_add(now, interval)
                self._reading(link, sensors, SensorError)
                gc.collect()
            if self.net.connected():
                self._listen(link, 20)
                if self.net.connected() and link.stalled(ticks_ms(), s.get("ack_timeout_ms")):
                    self._lost(link, "ack_timeout", "no answer for %d ms" % s.get("ack_timeout_ms"))
            else:
                sleep_ms(20)

    def _back_off(self):
        wait = jitter(self.backoff)
        self.next_attempt = ticks_add(ticks_ms(), wait)
        self.backoff = min(self.backoff * 2, self.backoff_max)
        return wait

    def _lost(self, link, event, error):
        self.net.close()
        if link.lost():
            self.backoff = self.backoff_min  # the gateway answered on that link: come back soon
            self.next_attempt = ticks_ms()
            log(event, error=error, pending=link.pending())
        else:
            log(event, error=error, pending=link.pending(), retry_ms=self._back_off())

    def _connect(self, link, host, port):
        s = self.settings
        if not self.net.joined():
            self.led.set("joining")
            self.net.join(s.get("wifi_ssid"), s.get("wifi_password") or "")
            log("wifi_joined", ssid=s.get("wifi_ssid"))
        self.led.set("joining")
        self.net.connect(host, port)
        log("gateway_connected", server=host, port=port)
        for frame in link.connected():
            self.net.send(frame)
        self.led.set("online")

    def _reading(self, link, sensors, sensor_error):
        try:
            values = sensors.read()
        except sensor_error as e:
            self.led.set("error")
            log("sensor_error", error=e)
            return
        frames = link.reading(values)
        self.sent += 1
        if not self.net.connected():
            if link.name == "v1":
                log("reading_dropped", reason="offline")
            return
        try:
            for frame in frames:
                self.net.send(frame)
            self.led.set("online")
        except NetError as e:
            self.led.set("error")
            self._lost(link, "send_failed", e)

    def _listen(self, link, ms):
        # v2 answers arrive between readings; a closed link shows here too.
        try:
            data = self.net.recv(ms)
            if data:
                link.received(data)
                if getattr(link, "answered", False):
                    self.backoff = self.backoff_min
        except NetError as e:
            self._lost(link, "link_lost", e)


def jitter(ms):
    """A random wait in [ms/2, ms]: devices cut off together do not come back in lockstep.
    os.urandom is fine here (spreading retries, never keys or nonces)."""
    half = ms // 2
    try:
        r = int.from_bytes(os.urandom(2), "big")
    except AttributeError:  # a port without os.urandom
        import random
        r = random.getrandbits(16)
    return half + (ms - half) * r // 65536


def main(**kwargs):
    App(**kwargs).run()
