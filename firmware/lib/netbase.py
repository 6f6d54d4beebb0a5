# What the application needs from a network back end (ESP8266 over AT, or the
# Pico W's own WLAN). Both classes in net_esp.py and net_wlan.py provide:
#
#   start_ap(ssid, port)        open access point, HTTP listener on port
#   stop_ap()
#   poll_request(timeout_ms)    -> (link, request bytes) or None: one HTTP request head
#   respond(link, data)         send an answer and close that client
#   join(ssid, password)        join a Wi-Fi network (raises NetError)
#   joined()                    -> bool
#   connect(host, port)         open the gateway connection (raises NetError)
#   connected()                 -> bool
#   send(data)                  raises NetError when the link is gone
#   recv(timeout_ms)            -> bytes received from the gateway (b"" if none yet)
#   close()


class NetError(Exception):
    pass


MAX_REQUEST = 4096


def escape_at(text):
    # AT command string arguments escape backslash, double quote and comma.
    out = ""
    for ch in text:
        if ch in '\\",':
            out += "\\"
        out += ch
    return out
