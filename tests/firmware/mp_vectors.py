# ruff: noqa: UP031  (MicroPython subset: %-formatting)
# Runs under real MicroPython (WebAssembly port): the device codecs against the shared vectors.
import sys

sys.path.insert(0, "/lib")
import binascii  # noqa: E402
import json  # noqa: E402

import cfgcodec  # noqa: E402
import v1codec  # noqa: E402
import v2codec  # noqa: E402

result = {"impl": sys.implementation.name, "v1": 0, "format": 0, "legacy_fields": 0, "v2_fields": 0,
          "macs": 0, "v2_frames": 0, "v2_acks": 0, "fail": []}

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

with open("/data/v2.json") as f:
    v2 = json.load(f)
for vec in v2["frames"]:
    kid = binascii.unhexlify(vec["kid"])
    s = v2codec.Session(binascii.unhexlify(vec["master_key"]), kid, v2codec.MemoryCounter(vec["seq"]))
    seq, frame = s.seal(vec["plaintext"].encode())
    if seq == vec["seq"] and binascii.hexlify(frame).decode() == vec["frame"]:
        result["v2_frames"] += 1
    else:
        result["fail"].append("v2 frame %d" % vec["seq"])
    if "ack" in vec:
        got, used = s.read_ack(binascii.unhexlify(vec["ack"]))
        if got == vec["seq"] and used == len(vec["ack"]) // 2:
            result["v2_acks"] += 1

print("RESULT " + json.dumps(result))
