"""The ESP8266 AT driver against scripted module output: exact bytes in, events and writes out."""

from __future__ import annotations

import net_esp  # noqa: E402  (firmware/lib, on sys.path via conftest)
import pytest
from netbase import NetError, escape_at  # noqa: E402


class ScriptedUart:
    """Answers each written command with the next scripted reply, delivered in small pieces."""

    def __init__(self, replies: list[bytes], piece: int = 3) -> None:
        self.replies = list(replies)
        self.pending = b""
        self.written: list[bytes] = []
        self.piece = piece

    def write(self, data: bytes) -> int:
        self.written.append(bytes(data))
        if self.replies:
            self.pending += self.replies.pop(0)
        return len(data)

    def any(self) -> int:
        return min(len(self.pending), self.piece)

    def read(self, n: int) -> bytes:
        out, self.pending = self.pending[:n], self.pending[n:]
        return out


def test_ipd_split_across_reads_with_binary_payload_and_link_events():
    payload = b"\r\nOK\r\n+IPD,9:\x00\xff"  # looks like protocol text: must stay data
    uart = ScriptedUart(
        [b"0,CONNECT\r\n\r\n+IPD,0,%d:" % len(payload) + payload + b"\r\n0,CLOSED\r\n"], piece=2
    )
    at = net_esp.Esp8266(uart)
    uart.write(b"")
    for _ in range(200):
        at._pump(0)
    assert at.rx[0] == payload
    assert 0 not in at.open and 0 in at.closed


def test_cipsend_waits_for_the_prompt_then_sends_the_exact_bytes():
    uart = ScriptedUart([b"\r\nOK\r\n> ", b"\r\nRecv 5 bytes\r\n\r\nSEND OK\r\n"])
    at = net_esp.Esp8266(uart)
    at.send(0, b"hello")
    assert uart.written == [b"AT+CIPSEND=0,5\r\n", b"hello"]


def test_send_failure_and_error_answers_raise_net_error():
    at = net_esp.Esp8266(ScriptedUart([b"\r\nOK\r\n> ", b"\r\nSEND FAIL\r\n"]))
    with pytest.raises(NetError):
        at.send(0, b"x")
    at = net_esp.Esp8266(ScriptedUart([b"busy p...\r\n"]))
    with pytest.raises(NetError, match="busy"):
        at.cmd("AT+CIPSTART=0")


def test_join_escapes_quotes_commas_and_backslashes():
    uart = ScriptedUart(
        [
            b"\r\nOK\r\n",
            b"\r\nOK\r\n",
            b"\r\nOK\r\n",
            b"\r\nOK\r\n",
            b"WIFI CONNECTED\r\nWIFI GOT IP\r\n\r\nOK\r\n",
        ]
    )
    esp = net_esp.EspNet(uart)
    esp.join('ward "3", east', 'pa\\ss,"word"')
    assert uart.written[-1] == b'AT+CWJAP="ward \\"3\\"\\, east","pa\\\\ss\\,\\"word\\""\r\n'
    assert esp.joined()
    assert escape_at("a,b") == "a\\,b"


def test_wifi_disconnect_means_join_again():
    uart = ScriptedUart(
        [b"\r\nOK\r\n"] * 4 + [b"WIFI CONNECTED\r\nWIFI GOT IP\r\n\r\nOK\r\n", b"WIFI DISCONNECT\r\n"]
    )
    esp = net_esp.EspNet(uart)
    esp.join("ward-3", "password1")
    assert esp.joined()
    uart.write(b"")  # the module reports on its own
    for _ in range(20):
        esp.at._pump(0)
    assert not esp.joined()
