"""Node-RED's own OS user: started by root, Node-RED runs as `medsec-nodered`, who cannot open
the state directory's secrets/ or key store (both stay the service user's, 0700 / 0600).

It reaches its userDir ($MEDSEC_HOME/nodered, its own) through the home directory, which gives
its group passage only (0710: no listing, no access to anything the mode bits keep private).
"""
from __future__ import annotations

import grp
import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

from services.common.state import StateError

USER = "medsec-nodered"


class UnreachableHome(StateError):
    """Node-RED's user could not reach its userDir: Node-RED is not started rather than run as root."""


@dataclass(frozen=True)
class OsUser:
    name: str
    uid: int
    gid: int


def needed() -> bool:
    """Only root can start a process as another user; anyone else runs Node-RED as themselves."""
    return os.geteuid() == 0


def ensure_user(name: str = USER) -> OsUser:
    """The system user, created once (no home, no shell, its own group)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        result = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
                                 "/nonexistent", "--shell", "/usr/sbin/nologin", name],
                                capture_output=True, text=True, check=False)
        try:  # a second stack may have created it meanwhile
            entry = pwd.getpwnam(name)
        except KeyError:
            raise StateError(f"cannot create the OS user {name} for Node-RED: "
                             f"{(result.stderr or result.stdout).strip()}") from None
    return OsUser(name, entry.pw_uid, entry.pw_gid)


def _searchable(path: Path, user: OsUser) -> bool:
    st = path.stat()
    if st.st_uid == user.uid:
        return bool(st.st_mode & 0o100)
    if st.st_gid == user.gid or st.st_gid in _groups(user):
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)


def _groups(user: OsUser) -> set[int]:
    return {g.gr_gid for g in grp.getgrall() if user.name in g.gr_mem}


def grant_userdir(home: Path, user_dir: Path, user: OsUser) -> None:
    """Let `user` reach and own user_dir, and nothing else in home; refuse an unreachable home."""
    blocked = [p for p in reversed(home.resolve().parents) if not _searchable(p, user)]
    if blocked:
        raise UnreachableHome(
            f"Node-RED runs as {user.name}, who cannot reach {home}: {blocked[0]} is closed to it "
            f"(chmod o+x {blocked[0]}, or choose a MEDSEC_HOME it can reach, e.g. under /srv or /var/lib)")
    os.chown(home, -1, user.gid)
    os.chmod(home, 0o710)  # passage for Node-RED's group; listing and the rest stay the owner's
    for path in [user_dir, *user_dir.rglob("*")]:
        os.chown(path, user.uid, user.gid, follow_symlinks=False)


def drop_to(user: OsUser) -> None:
    """Become `user` for good (before exec): groups, gid, then uid."""
    os.setgroups([])
    os.setgid(user.gid)
    os.setuid(user.uid)
