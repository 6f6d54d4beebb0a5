"""The device's codecs (firmware/lib) against the shared vectors: under CPython and under real MicroPython."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.parse

# the firmware modules (sys.path set up by conftest)
import cfgcodec  # noqa: E402
import pytest
import v1codec  # noqa: E402

from tests.firmware import page_crypto
from tests.firmware.conftest import FIRMWARE, LIB
from tests.support.proc import ROOT

VECTORS = json.loads((ROOT / "tests" / "vectors" / "v1.json").read_text())
FULL = [v for v in VECTORS["readings"] if v["plaintext"].endswith('"}') and v["plaintext"].count(":") == 7]
HERE = ROOT / "tests" / "firmware"
MP = (
    FIRMWARE
    / "web"
    / "node_modules"
    / "@micropython"
    / "micropython-webassembly-pyscript"
    / "micropython.mjs"
)
GOOD = {
    "server_ip": "192.168.0.101",
    "server_port": "9998",
    "wifi_name": 'ward 3 "east", ü',
    "wifi_pass": "x" * 40,
}


@pytest.mark.parametrize("vec", VECTORS["readings"], ids=lambda v: f"{v['variant']}-{v['plaintext'][9:15]}")
def test_v1_wire_vectors(vec):
    assert (
        v1codec.encode(vec["key"].encode(), vec["iv"].encode(), vec["plaintext"].encode(), vec["variant"])
        == vec["wire"].encode()
    )


def test_reading_builder_prints_like_the_original_firmware():
    text = v1codec.format_reading(
        {
            "Temp": 38.25,
            "TempMcu": 41.0,
            "PulseSig": 0.001,
            "Acel_x": -0.12,
            "Acel_y": 0.5,
            "Acel_z": -1.0,
            "TempMpu": 40.125,
        }
    )
    assert text == (
        b'{"Temp":"38.250","TempMcu":"41.000","PulseSig":"0.001","Acel_x":"-0.12",'
        b'"Acel_y":"0.500","Acel_z":"-1.00","TempMpu":"40.125"}'
    )
    matching = [
        v
        for v in FULL
        if v1codec.format_reading({k: float(x) for k, x in json.loads(v["plaintext"]).items()})
        == v["plaintext"].encode()
    ]
    assert len(matching) >= len(FULL) // 2


@pytest.mark.parametrize("vec", VECTORS["config_page_fields"], ids=lambda v: v["value"])
def test_legacy_config_fields(vec):
    assert cfgcodec.decode_legacy_field(vec["key1"].encode(), "f", vec["field_hex"]) == vec["value"]
    assert cfgcodec.encode_legacy_field(vec["key1"].encode(), vec["value"]) == vec["field_hex"]


def test_new_page_format_round_trips_any_length_and_refuses_tampering():
    key1 = "Key1-0123456789a"
    params = page_crypto.seal(key1, GOOD)
    assert cfgcodec.decode_submission(key1.encode(), params) == GOOD
    # the same value twice gives different ciphertext (fresh IV per field)
    assert page_crypto.seal(key1, GOOD)["wifi_pass"] != params["wifi_pass"]
    for name in ("server_ip", "wifi_pass", "mac"):
        tampered = dict(params)
        flip = "0" if tampered[name][40] != "0" else "1"
        tampered[name] = tampered[name][:40] + flip + tampered[name][41:]
        with pytest.raises(cfgcodec.ConfigError) as err:
            cfgcodec.decode_submission(key1.encode(), tampered)
        assert err.value.reason == "bad_mac"
    with pytest.raises(cfgcodec.ConfigError) as err:
        cfgcodec.decode_submission(b"another-key-1234", params)
    assert err.value.reason == "bad_mac"


def test_submission_must_carry_the_devices_nonce():
    key1 = "Key1-0123456789a"
    params = page_crypto.seal(key1, GOOD, "00112233aabbccdd")
    assert cfgcodec.decode_submission(key1.encode(), params, "00112233aabbccdd") == GOOD
    with pytest.raises(cfgcodec.ConfigError) as err:
        cfgcodec.decode_submission(key1.encode(), params, "ffffffffffffffff")
    assert err.value.reason == "stale"
    with pytest.raises(cfgcodec.ConfigError) as err:  # the nonce is under the MAC
        cfgcodec.decode_submission(key1.encode(), {**params, "nonce": "ffffffffffffffff"}, "ffffffffffffffff")
    assert err.value.reason == "bad_mac"


def test_legacy_submission_decodes():
    values = {"server_ip": "10.0.0.7", "server_port": "9998", "wifi_name": "IoT", "wifi_pass": "pa$$w0rd"}
    assert (
        cfgcodec.decode_submission(b"secretsecret1234", page_crypto.legacy("secretsecret1234", values))
        == values
    )


@pytest.mark.parametrize(
    "field,value,reason",
    [
        ("server_ip", "192.168.0.256", "bad_ip"),
        ("server_ip", "192.168.0", "bad_ip"),
        ("server_ip", "01.2.3.4", "bad_ip"),
        ("server_ip", "a.b.c.d", "bad_ip"),
        ("server_port", "1023", "bad_port"),
        ("server_port", "65536", "bad_port"),
        ("server_port", "99x", "bad_port"),
        ("wifi_name", "", "bad_ssid"),
        ("wifi_name", "s" * 33, "bad_ssid"),
        ("wifi_pass", "short", "bad_password"),
        ("wifi_pass", "p" * 64, "bad_password"),
    ],
)
def test_device_validation(field, value, reason):
    with pytest.raises(cfgcodec.ConfigError) as err:
        cfgcodec.validate({**GOOD, field: value})
    assert err.value.reason == reason


def test_device_validation_accepts_limits():
    ok = cfgcodec.validate({**GOOD, "server_port": "1024", "wifi_pass": ""})
    assert ok["server_port"] == 1024 and ok["wifi_password"] == ""
    assert cfgcodec.validate({**GOOD, "server_port": "65535", "server_ip": "0.0.0.0"})["server_port"] == 65535


def run_micropython(script: str, files: list[str]) -> dict:
    """Run tests/firmware/<script> under MicroPython's WebAssembly port with files (target=source)
    in its file system; the JSON of the line it prints as `RESULT {...}`."""
    run = subprocess.run(
        ["node", str(HERE / "mp_run.mjs"), MP.as_uri(), str(HERE / script), *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
    assert run.returncode == 0 and line, run.stdout + run.stderr
    return json.loads(line[0][7:])


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_codecs_under_real_micropython(tmp_path, built_firmware):
    """The same modules under the MicroPython WebAssembly port (npm), cryptolib from a small shim."""
    assert MP.exists(), "run make -C firmware build (npm ci) first"
    key1 = "Key1-0123456789a"
    subs = [
        {"key1": key1, "values": v, "params": page_crypto.seal(key1, v)}
        for v in (GOOD, {**GOOD, "wifi_pass": "", "wifi_name": "a"})
    ]
    page = tmp_path / "page.json"
    page.write_text(json.dumps(subs))
    modules = (
        "v1codec.py",
        "cfgcodec.py",
        "webconf.py",
        "settings.py",
        "clock.py",
        "proto_v2.py",
        "netbase.py",
    )
    files = [f"/lib/{name}={LIB / name}" for name in modules]
    files.append(f"/data/page.gz={FIRMWARE / 'build' / 'web' / 'config.html.gz'}")
    files += [
        f"/lib/ccm.py={ROOT / 'services' / 'common' / 'ccm.py'}",
        f"/lib/v2device.py={ROOT / 'services' / 'common' / 'v2device.py'}",
        f"/lib/cryptolib.py={HERE / 'mp_shim' / 'cryptolib.py'}",
        f"/data/v1.json={ROOT / 'tests' / 'vectors' / 'v1.json'}",
        f"/data/v2.json={ROOT / 'tests' / 'vectors' / 'v2.json'}",
        f"/data/page.json={page}",
    ]
    result = run_micropython("mp_vectors.py", files)
    v2 = json.loads((ROOT / "tests" / "vectors" / "v2.json").read_text())["frames"]
    assert result["impl"] == "micropython"
    assert result["fail"] == []
    assert result["v1"] == len(VECTORS["readings"])
    assert result["format"] >= len(FULL) // 2
    assert result["legacy_fields"] == len(VECTORS["config_page_fields"])
    assert result["forged_ack_refused"] is True and result["forged_refusal_refused"] is True
    assert result["errors_raise"] == [True, True]
    assert result["macs"] == result["v2_fields"] == result["http"] == result["stored"] == len(subs)
    assert result["v2_frames"] == result["v2_acks"] == result["v2_refusals"] == len(v2)
    assert result["counter_records"] == 3 and result["counter_forward"] is True
    assert result["counter_lost"] == "counter_lost"


def test_firmware_build_compiles_every_module_and_prints_page_size(built_firmware):
    assert "config page:" in built_firmware
    size = int(built_firmware.split("config page:")[1].split()[0])
    gz = FIRMWARE / "build" / "web" / "config.html.gz"
    assert size == gz.stat().st_size <= 12 * 1024
    for module in LIB.glob("*.py"):
        assert (FIRMWARE / "build" / "lib" / (module.stem + ".mpy")).exists(), module.name
    assert (FIRMWARE / "build" / "lib" / "ccm.mpy").exists()
    assert (FIRMWARE / "build" / "lib" / "v2device.mpy").exists()


def test_mpy_cross_rejects_a_micropython_syntax_error(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n    pass\n")
    mpy_cross = ROOT / ".venv" / "bin" / "mpy-cross"
    if not mpy_cross.exists():
        mpy_cross = shutil.which("mpy-cross") or str(mpy_cross)
    run = subprocess.run([str(mpy_cross), "-o", str(tmp_path / "bad.mpy"), str(bad)], capture_output=True)
    assert run.returncode != 0


def test_sys_path_has_the_firmware_first():
    assert sys.path.index(str(LIB)) < len(sys.path)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_main_loop_under_real_micropython(tmp_path, built_firmware, protocol):
    """The firmware's own App under the MicroPython WebAssembly port, over a scripted ESP8266:
    configuration mode takes the original page's submission, then work mode sends v1 readings
    (or v2 frames, acknowledged by the scripted gateway) that the gateway's codec decodes to the values
    the sensors gave."""
    from Crypto.Cipher import AES

    from services.common import v1 as gateway_v1
    from services.common import v2 as gateway_v2
    from tests.firmware.conftest import expected_values

    key1, v1_key, v1_iv = "Key1-0123456789a", "0123456789abcdef", "fedcba9876543210"
    values = {"server_ip": "10.20.30.40", "server_port": "9998", "wifi_name": "IoT", "wifi_pass": "pa$$w0rd"}
    request = (
        f"GET /action_page.php?{urllib.parse.urlencode(page_crypto.legacy(key1, values))} HTTP/1.1\r\n\r\n"
    )
    case = tmp_path / "case.json"
    master, kid = "00112233445566778899aabbccddeeff", "0a0b0c0d"
    keys = gateway_v2.derive_keys(bytes.fromhex(master), bytes.fromhex(kid))
    secrets = {
        "config_key": key1,
        "v1_key": v1_key,
        "v1_iv": v1_iv,
        "v2_master_key": master,
        "v2_key_id": kid,
    }
    acks = [gateway_v2.seal_ack(keys, seq).hex() for seq in (1, 2)] if protocol == "v2" else []
    case.write_text(json.dumps({"protocol": protocol, "secrets": secrets, "request": request, "acks": acks}))
    files = [f"/lib/{p.name}={p}" for p in LIB.glob("*.py")]
    files += [f"/lib/{p.name}={p}" for p in (HERE / "mp_fakes").glob("*.py")]
    files += [f"/lib/cryptolib.py={HERE / 'mp_shim' / 'cryptolib.py'}", f"/data/case.json={case}"]
    files.append(f"/lib/ccm.py={ROOT / 'services' / 'common' / 'ccm.py'}")
    files.append(f"/lib/v2device.py={ROOT / 'services' / 'common' / 'v2device.py'}")
    result = run_micropython("mp_main_loop.py", files)
    assert result["impl"] == "micropython"
    assert (result["site"]["server_ip"], result["site"]["server_port"]) == ("10.20.30.40", 9998)
    assert result["site"]["wifi_ssid"] == "IoT" and result["wifi_password"] == "pa$$w0rd"
    cmds = result["commands"]
    assert 'AT+CWSAP="Med_IoT","",5,0,1' in cmds and 'AT+CWJAP="IoT","pa$$w0rd"' in cmds, cmds
    assert 'AT+CIPSTART=0,"TCP","10.20.30.40",9998' in cmds
    assert result["http"] and result["http"][0].startswith("HTTP/1.1 200") and result["feeds"] > 0
    ecb = AES.new(v1_key.encode(), AES.MODE_ECB)
    assert len(result["sent"]) == 2 and result["pending"] == 0
    for wire_hex in result["sent"]:
        if protocol == "v1":
            scan = gateway_v1.scan(bytes.fromhex(wire_hex))
            got = gateway_v1.decode_reading(ecb, v1_iv.encode(), scan.blocks, "chained")
        else:
            frame, _ = gateway_v2.read(bytes.fromhex(wire_hex))
            got = gateway_v2.parse_reading(gateway_v2.open_data(keys, frame))
        assert got == expected_values()
