# The configuration-mode HTTP handler: raw request bytes in, response bytes out.
#
#   GET /                    the configuration page (pre-built, gzipped)
#   GET /nonce               a one-time value the page's MAC must cover (no replay)
#   GET /save?...            our page's submission (fresh IV per field, MAC)
#   GET /action_page.php?... the original page's submission (static IV, '#' padding)
import cfgcodec
from clock import log

PAGE = "web/config.html.gz"


def _unquote(text):
    text = text.replace("+", " ")
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    raw = text.encode()
    while i < len(raw):
        c = raw[i]
        if c == 37 and i + 2 < len(raw):
            try:
                out.append(int(raw[i + 1:i + 3], 16))
                i += 3
                continue
            except ValueError:
                pass
        out.append(c)
        i += 1
    return out.decode()


def parse_request(raw):
    """(method, path, params) of an HTTP request head; ValueError if it is not one."""
    head = raw.split(b"\r\n", 1)[0].decode()
    parts = head.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError("not an HTTP request line")
    method, target = parts[0], parts[1]
    path, query = (target.split("?", 1) + [""])[:2]
    params = {}
    if query:
        for item in query.split("&"):
            name, value = (item.split("=", 1) + [""])[:2]
            params[_unquote(name)] = _unquote(value)
    return method, path, params


def response(status, body, ctype="text/plain; charset=utf-8", extra=""):
    if isinstance(body, str):
        body = body.encode()
    head = ("HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n") % (status, ctype, len(body), extra)
    return head.encode() + body


def _read_page(path):
    with open(path, "rb") as f:
        return f.read()


def handle(raw, key1, page_path=PAGE, nonce=None):
    """Answer one request. Returns (response bytes, validated settings or None).

    nonce: the device's current one-time value (GET /nonce); every v2
    submission must be authenticated over it. The caller replaces it after
    each submission, so a captured request cannot be replayed.
    """
    try:
        method, path, params = parse_request(raw)
    except (ValueError, UnicodeError):
        log("config_bad_request")
        return response("400 Bad Request", "bad request\n"), None
    if method != "GET":
        return response("405 Method Not Allowed", "GET only\n"), None
    if path in ("/", "/index.html"):
        try:
            page = _read_page(page_path)
        except OSError:
            log("config_page_missing", path=page_path)
            return response("500 Internal Server Error", "page missing: run make flash\n"), None
        return response("200 OK", page, "text/html; charset=utf-8", "Content-Encoding: gzip\r\n"), None
    if path == "/nonce":
        return response("200 OK", nonce or ""), None
    if path in ("/save", "/action_page.php"):
        legacy = "mac" not in params
        try:
            plain = cfgcodec.decode_submission(key1, params, nonce)
            values = cfgcodec.validate(plain)
        except cfgcodec.ConfigError as e:
            # never echo values: they may be secrets
            log("config_refused", reason=e.reason, legacy=legacy)
            return response("400 Bad Request", "refused: " + e.detail + "\n"), None
        log("config_saved", legacy=legacy, server=values["server_ip"], port=values["server_port"])
        return response("200 OK", "saved: switching to work mode\n"), values
    return response("404 Not Found", "not found\n"), None
