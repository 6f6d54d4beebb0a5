# ruff: noqa: UP031  (MicroPython subset: %-formatting)
# Runs under real MicroPython (WebAssembly port): the device codecs against the shared vectors.
import sys

sys.path.insert(0, "/lib")
import binascii  # noqa: E402
import json  # noqa: E402

import cfgcodec  # noqa: E402
import v1codec  # noqa: E402
import v2device  # noqa: E402
import webconf  # noqa: E402
from settings import Settings  # noqa: E402

result = {
    "impl": sys.implementation.name,
    "v1": 0,
    "format": 0,
    "legacy_fields": 0,
    "v2_fields": 0,
    "macs": 0,
    "v2_frames": 0,
    "v2_acks": 0,
    "v2_refusals": 0,
    "counter_records": 0,
    "http": 0,
    "stored": 0,
    "fail": [],
}

with open("/data/v1.json") as f:
    v1 = json.load(f)
for vec in v1["readings"]:
    wire = v1codec.encode(vec["key"].encode(), vec["iv"].encode(), vec["plaintext"].encode(), vec["variant"])
    if wire == vec["wire"].encode():
        result["v1"] += 1
    else:
        result["fail"].append("v1 " + vec["plaintext"][:40])
    try:
        values = json.loads(vec["plaintext"])
    except ValueError:
        continue  # vectors of odd lengths (padding cases) are not readings
    if len(values) != 7:
        continue
    numbers = {k: float(values[k]) for k in values}
    # the firmware's own formatting rule: readings printed by it come back byte for byte
    if v1codec.format_reading(numbers) == vec["plaintext"].encode():
        result["format"] += 1
for vec in v1["config_page_fields"]:
    got = cfgcodec.decode_legacy_field(vec["key1"].encode(), "f", vec["field_hex"])
    if got == vec["value"]:
        result["legacy_fields"] += 1
    else:
        result["fail"].append("legacy field " + vec["value"])

with open("/data/page.json") as f:
    page = json.load(f)
for sub in page:
    key1 = sub["key1"].encode()
    if cfgcodec.compute_mac(key1, sub["params"]) == sub["params"]["mac"]:
        result["macs"] += 1
    plain = cfgcodec.decode_submission(key1, sub["params"])
    if plain == sub["values"]:
        result["v2_fields"] += 1
    else:
        result["fail"].append("v2 fields " + str(plain))

# the configuration-mode HTTP handler and the settings store, on real MicroPython too
import os  # noqa: E402

os.mkdir("/data/dev")
store = Settings("/data/dev")
for sub in page:
    query = "&".join([k + "=" + sub["params"][k] for k in sub["params"]])
    answer, values = webconf.handle(
        ("GET /save?" + query + " HTTP/1.1\r\nHost: 192.168.4.1\r\n\r\n").encode(),
        sub["key1"].encode(),
        "/data/page.gz",
    )
    if (
        answer.startswith(b"HTTP/1.1 200")
        and values
        and values["wifi_password"] == sub["values"]["wifi_pass"]
    ):
        result["http"] += 1
    store.store_page(values)
    again = Settings("/data/dev")
    if (
        again.get("wifi_password") == sub["values"]["wifi_pass"]
        and again.get("wifi_ssid") == sub["values"]["wifi_name"]
    ):
        result["stored"] += 1
page_answer, _ = webconf.handle(b"GET / HTTP/1.1\r\n\r\n", b"x" * 16, "/data/page.gz")
if b"Content-Encoding: gzip" not in page_answer:
    result["fail"].append("page not gzip")
bad, values = webconf.handle(b"GET /save?server_ip=%41%42 HTTP/1.1\r\n\r\n", b"x" * 16, "/data/page.gz")
if not bad.startswith(b"HTTP/1.1 400") or values is not None:
    result["fail"].append("bad request accepted")

with open("/data/v2.json") as f:
    v2 = json.load(f)
for vec in v2["frames"]:
    kid = binascii.unhexlify(vec["kid"])
    s = v2device.Session(binascii.unhexlify(vec["master_key"]), kid, v2device.MemoryCounter(vec["seq"]))
    seq, frame = s.seal(vec["plaintext"].encode())
    if seq == vec["seq"] and binascii.hexlify(frame).decode() == vec["frame"]:
        result["v2_frames"] += 1
    else:
        result["fail"].append("v2 frame %d" % vec["seq"])
    got = s.read_answer(binascii.unhexlify(vec["ack"]))
    if got == (v2device.ACK, vec["seq"], 0, len(vec["ack"]) // 2):
        result["v2_acks"] += 1
    got = s.read_answer(binascii.unhexlify(vec["refusal"]))
    if got == (v2device.REFUSAL, vec["seq"], vec["refusal_code"], len(vec["refusal"]) // 2):
        result["v2_refusals"] += 1
    # a refusal with one bit changed anywhere is no refusal, on real MicroPython too
    raw = binascii.unhexlify(vec["refusal"])
    for i in range(len(raw)):
        bad = bytearray(raw)
        bad[i] ^= 0x10
        try:
            kind, _, _, _ = s.read_answer(bytes(bad))
            if kind is not None:
                result["fail"].append("refusal with byte %d changed accepted" % i)
        except ValueError:
            pass

# the counter file (two checked copies) on MicroPython's own filesystem
for rec in v2["counter"]:
    if v2device.record(rec["ceiling"], rec["step"]) == rec["record"] and v2device.parse_record(
        rec["record"].encode()
    ) == (rec["ceiling"], rec["step"]):
        result["counter_records"] += 1
os.mkdir("/data/ctr")
used = []
for _boot in range(3):
    c = v2device.FileCounter("/data/ctr/v2seq", 10)
    used += [c.take() for _ in range(13)]
with open("/data/ctr/v2seq.0", "wb") as f:
    f.write(b"\xff\xfe garbage")
c = v2device.FileCounter("/data/ctr/v2seq", 10)
after = c.take()
os.remove("/data/ctr/v2seq.1")
with open("/data/ctr/v2seq.0", "w") as f:
    f.write("")
lost = v2device.FileCounter("/data/ctr/v2seq", 10)
try:
    lost.take()
    result["fail"].append("counter with no intact copy still counts")
except ValueError as exc:
    result["counter_lost"] = exc.reason
result["counter_forward"] = after > max(used) and used == sorted(used) and len(set(used)) == len(used)

# a forged ack closes the link (NetError) instead of crashing the device, on real MicroPython
import proto_v2  # noqa: E402
from netbase import NetError  # noqa: E402


class _Site:
    root = "/data/dev"

    def get(self, name, default=None):
        vec = v2["frames"][0]
        return {"v2_master_key": vec["master_key"], "v2_key_id": vec["kid"], "ring_size": 4}.get(
            name, default
        )


link = proto_v2.V2Link(_Site())
frame = link.reading(
    {
        "Temp": 36.6,
        "TempMcu": 23.7,
        "PulseSig": 2.123,
        "Acel_x": 0.0,
        "Acel_y": 0.0,
        "Acel_z": 0.0,
        "TempMpu": 23.4,
    }
)[0]
forged = bytes([0xC3, 2, 0, 1]) + binascii.unhexlify(v2["frames"][0]["kid"]) + b"\x00" * 15
try:
    link.received(forged)
    result["fail"].append("forged ack accepted")
except NetError:
    result["forged_ack_refused"] = link.pending() == 1
kid0 = binascii.unhexlify(v2["frames"][0]["kid"])
forged = bytes([0xC4, 2, 0, 1]) + kid0 + b"\x00\x00\x00\x00\x01\x00\x09" + b"\x06" * 9
try:
    link.received(forged)
    result["fail"].append("forged refusal accepted")
except NetError:
    result["forged_refusal_refused"] = link.pending() == 1 and link.refused == 0

# The error classes themselves must construct on MicroPython (ValueError.__init__(self, ...) does not).
import ccm  # noqa: E402

for error_class in (v2device.V2Error, ccm.CcmError):
    try:
        raise error_class("bad_tag", "probe")
    except error_class as exc:
        result.setdefault("errors_raise", []).append(exc.reason == "bad_tag")
    except Exception as exc:  # noqa: BLE001 - any other exception is the bug this guards against
        result["fail"].append("%s does not construct: %r" % (error_class.__name__, exc))

print("RESULT " + json.dumps(result))
