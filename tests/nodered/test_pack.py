"""Issue 6, done-when 4: `npm pack` holds only what the package needs, and the tarball installs
into a clean Node-RED user directory where Node-RED loads every node and runs the example flow."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from services.nodered.runtime import NODERED_DIR
from tests.support.proc import free_port, port_open, wait_until

from .support import http, needs_nodered

pytestmark = needs_nodered
PACKAGE = NODERED_DIR / "node-red-contrib-medsec"
MANIFEST = json.loads((PACKAGE / "package.json").read_text())
NPM_FLAGS = ["--no-audit", "--no-fund", "--loglevel=error"]


def pack(dest) -> tuple[str, list[str]]:
    out = subprocess.run(["npm", "pack", "--json", "--pack-destination", str(dest), *NPM_FLAGS], cwd=PACKAGE,
                         capture_output=True, text=True, check=True, timeout=60)
    info = json.loads(out.stdout)[0]
    return info["filename"], [f["path"] for f in info["files"]]


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    dest = tmp_path_factory.mktemp("pack")
    filename, files = pack(dest)
    return dest / filename, files


def test_tarball_holds_only_what_the_package_needs(packed):
    _, files = packed
    for path in files:
        assert path in ("package.json", "README.md") or path.startswith(("nodes/", "examples/")), path
    assert not [p for p in files if "test" in p.split("/") or p.endswith("_spec.js") or "node_modules" in p]
    for name, js in MANIFEST["node-red"]["nodes"].items():
        base = js[: -len(".js")]
        assert js in files, name
        assert base + ".html" in files, name
        short = os.path.basename(base)
        localised = ("gateway", "vitals", "status", "alert", "devices", "history")
        if name.startswith("medsec-") and short in localised:
            assert f"nodes/locales/en-US/{short}.json" in files
            assert f"nodes/locales/en-US/{short}.html" in files
    assert any(p.startswith("nodes/icons/") for p in files)
    assert any(p.startswith("examples/") and p.endswith(".json") for p in files)
    # Every file a node requires is shipped.
    for path in files:
        if path.endswith(".js"):
            text = (PACKAGE / path).read_text()
            local = [line for line in text.splitlines() if 'require("./' in line]
            for dep in [line.split('require("')[1].split('")')[0] for line in local]:
                target = os.path.normpath(os.path.join(os.path.dirname(path), dep))
                assert target + ".js" in files or target in files, f"{path} needs {dep}"


def _runtime_without_workspace(root):
    """node_modules with Node-RED and its dependencies but not our workspace link: with
    --preserve-symlinks Node-RED then sees only what the user directory holds."""
    modules = root / "node_modules"
    modules.mkdir(parents=True)
    for entry in (NODERED_DIR / "node_modules").iterdir():
        if entry.name != MANIFEST["name"]:
            os.symlink(entry, modules / entry.name)
    return modules / "node-red" / "red.js"


def test_tarball_installs_into_a_clean_user_dir(packed, tmp_path, procs):
    tarball, _ = packed
    user_dir = tmp_path / "userdir"
    user_dir.mkdir()
    subprocess.run(["npm", "install", "--prefer-offline", *NPM_FLAGS, str(tarball)], cwd=user_dir,
                   check=True, capture_output=True, timeout=120)
    installed = user_dir / "node_modules" / MANIFEST["name"]
    assert installed.is_dir() and not installed.is_symlink()
    assert not (installed / "test").exists()
    shutil.copy(PACKAGE / "examples" / "vitals-and-alerts.json", user_dir / "flows.json")
    port = free_port()
    settings = tmp_path / "settings.js"
    options = {"uiHost": "127.0.0.1", "uiPort": port, "flowFile": "flows.json", "credentialSecret": False,
               "editorTheme": {"tours": False}}
    settings.write_text(f"module.exports = {json.dumps(options)};\n")
    red = _runtime_without_workspace(tmp_path / "runtime")
    proc = procs.start("nodered-clean", ["node", "--preserve-symlinks", "--preserve-symlinks-main", str(red),
                                         "--settings", str(settings), "--userDir", str(user_dir)])
    log = procs.log_dir / "nodered-clean.log"
    wait_until(lambda: ("Started flows" in log.read_text() and port_open(port)) or proc.poll() is not None,
               30, what="flows to start and the port to listen")
    assert proc.poll() is None, log.read_text()
    sets = http("GET", f"http://127.0.0.1:{port}/nodes", {"Accept": "application/json"}).json()
    ours = {s["name"]: s for s in sets if s["module"] == MANIFEST["name"]}
    assert set(ours) >= {"medsec-gateway", "medsec-vitals", "medsec-status", "medsec-alert", "medsec-devices"}
    for node_set in ours.values():
        assert node_set["enabled"] and node_set["local"], node_set  # local: loaded from the user directory
        assert "err" not in node_set, node_set
    text = log.read_text()
    assert "Waiting for missing types" not in text
    assert "[medsec-gateway:local medsec]" in text  # the example flow's gateway runs (its broker is absent)
